"""The per-instance machinery of the alerts service, beside the SDK's own consumers.

:class:`AlertsRuntime` is created in the service's startup hook. It opens the
buckets, the reminders stream and the HTTP endpoint, and runs two durable
pull consumers of its own:

- ``alerts_feed`` on ``BOTBUS_ALERTS``: every alert accepted from NATS, HTTP
  or MQTT is validated, deduplicated and fanned out once (a crash mid-way
  means redelivery and a resumed broadcast, never a lost or doubled one);
- ``alerts_remind`` on ``BOTBUS_REMINDERS``: reminders nats-server fired.

Several instances share both consumers, so any instance may serve any alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from botbus import subjects
from botbus.errors import ConfigError, PayloadError
from botbus.models import Alert, DeadLetter, SendText, decode_as, encode
from botbus.settings import Settings
from services.alerts import schedules
from services.alerts.fanout import SERVICE, Broadcaster
from services.alerts.httpapi import AlertsHttp, Published
from services.alerts.schedules import ReminderRef, ReminderScheduler
from services.alerts.store import DEFAULT_DEDUPE_WINDOW, AlertsStore, StoreConflict

log = logging.getLogger(__name__)

FETCH_WAIT = 1.0  # seconds a fetch long-polls (also how fast a stop is noticed)
RETRY_DELAY = 5.0  # seconds before a failed alert or reminder is retried
MAX_DELIVERIES = 5  # attempts before a message is dead-lettered
FEED_ACK_WAIT = 60.0  # seconds; long broadcasts extend it after every batch
REMINDER_BATCH = 20  # fired reminders fetched at once

Handler = Callable[[Msg], Awaitable[None]]


class PermanentError(Exception):
    """A message that no retry can fix: dead-letter it at once."""


def alert_id_for(epoch: str, seq: int) -> str:
    """An alert's id: the stream's epoch and the alert's sequence in it.

    The epoch (the stream's creation time) keeps ids, and so idempotency
    keys, unique even if ``BOTBUS_ALERTS`` is ever recreated from sequence 1.
    """
    return f"{epoch}-{seq}"


def _epoch(created: datetime | None) -> str:
    stamp = int(created.timestamp()) if created else 0
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        stamp, rest = divmod(stamp, 36)
        out = digits[rest] + out
        if stamp == 0:
            return out


class AlertsRuntime:
    """One instance's store, broadcaster, scheduler, HTTP endpoint and consumers."""

    def __init__(self, js: JetStreamContext, settings: Settings, store: AlertsStore) -> None:
        self.js = js
        self.settings = settings
        self.store = store
        self.broadcaster = Broadcaster(js, store)
        self.scheduler = ReminderScheduler(js)
        self.http = AlertsHttp(store, self.publish_alert)
        self.dedupe_window = DEFAULT_DEDUPE_WINDOW
        self.epoch = "0"
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, js: JetStreamContext, settings: Settings) -> AlertsRuntime:
        """Open state, start the HTTP endpoint and the consumers."""
        store = await AlertsStore.open(js)
        await schedules.ensure_stream(js)
        runtime = cls(js, settings, store)
        info = await js.stream_info(subjects.STREAM_ALERTS)
        runtime.epoch = _epoch(info.created)
        listen = settings.alerts_http_listen
        if listen.lower() != "off":
            host, _, port = listen.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ConfigError(
                    f"setting BOTBUS_ALERTS_HTTP is invalid: {listen!r} is not HOST:PORT "
                    "(e.g. 127.0.0.1:8470, port 0 for a free one, or off)"
                )
            try:
                await runtime.http.start(host, int(port))
            except OSError as exc:
                raise ConfigError(
                    f"the alerts HTTP endpoint cannot listen on {listen} ({exc.strerror}): "
                    "set BOTBUS_ALERTS_HTTP to a free HOST:PORT, or off"
                ) from exc
        runtime._loops = [
            asyncio.create_task(
                runtime._consume(
                    subjects.STREAM_ALERTS,
                    subjects.consumer_alert_feed(SERVICE),
                    subjects.ALERTS_ALL,
                    runtime.handle_alert,
                    batch=1,
                    ack_wait=FEED_ACK_WAIT,
                ),
                name="alerts:feed",
            ),
            asyncio.create_task(
                runtime._consume(
                    subjects.STREAM_REMINDERS,
                    subjects.consumer_reminders(SERVICE),
                    subjects.REMINDER_FIRED,
                    runtime.handle_reminder,
                    batch=REMINDER_BATCH,
                    ack_wait=30.0,
                ),
                name="alerts:reminders",
            ),
        ]
        return runtime

    async def stop(self) -> None:
        """Finish the message in hand, stop consuming, close the HTTP endpoint."""
        self._stopping.set()
        await self.http.stop()
        await asyncio.gather(*self._loops, return_exceptions=True)

    # -- publishing ----------------------------------------------------------------

    async def publish_alert(self, channel: str, alert: Alert) -> Published:
        """Store ``alert`` in ``BOTBUS_ALERTS`` (deduped by its key); return its id."""
        headers = {"Nats-Msg-Id": f"{channel}:{alert.dedupe_key}"} if alert.dedupe_key else None
        ack = await self.js.publish(
            subjects.alert_channel(channel),
            encode(alert),
            stream=subjects.STREAM_ALERTS,
            headers=headers,
        )
        return Published(alert_id_for(self.epoch, ack.seq), bool(ack.duplicate))

    # -- consuming -------------------------------------------------------------------

    async def _consume(
        self,
        stream: str,
        durable: str,
        filter_subject: str,
        handler: Handler,
        *,
        batch: int,
        ack_wait: float,
    ) -> None:
        try:
            await self.js.consumer_info(stream, durable)
        except NotFoundError:
            await self.js.add_consumer(
                stream,
                ConsumerConfig(
                    name=durable,
                    durable_name=durable,
                    description=f"{SERVICE}: {filter_subject}",
                    filter_subject=filter_subject,
                    # Everything still in the stream counts: alerts accepted
                    # before the service first started are delivered too.
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    max_deliver=MAX_DELIVERIES + 1,
                ),
            )
            log.info("created consumer %s on %s", durable, stream)
        sub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await sub.fetch(batch=batch, timeout=FETCH_WAIT)
                except TimeoutError:
                    continue
                except (NatsError, OSError) as exc:
                    log.warning("fetch from %s failed (%s); retrying", durable, exc)
                    await asyncio.sleep(FETCH_WAIT)
                    continue
                for msg in msgs:
                    await self._handle(msg, handler)
        finally:
            # A late status reply to the last fetch would sit in the queue and make
            # the connection's drain wait for it forever; unacked work is redelivered.
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()

    async def _handle(self, msg: Msg, handler: Handler) -> None:
        deliveries = msg.metadata.num_delivered
        try:
            if deliveries > MAX_DELIVERIES:
                raise PermanentError(f"gave up after {deliveries - 1} deliveries")
            await handler(msg)
            await msg.ack()
        except PermanentError as exc:
            await self._dead_letter(msg, deliveries, str(exc))
        except Exception as exc:
            if deliveries >= MAX_DELIVERIES:
                log.exception("giving up on %s after %d deliveries", msg.subject, deliveries)
                await self._dead_letter(msg, deliveries, f"{type(exc).__name__}: {exc}")
                return
            log.warning(
                "handling %s failed (delivery %d/%d), retrying in %ss: %s",
                msg.subject,
                deliveries,
                MAX_DELIVERIES,
                RETRY_DELAY,
                exc,
                exc_info=exc,
            )
            with contextlib.suppress(NatsError, OSError):
                await msg.nak(delay=RETRY_DELAY)

    async def _dead_letter(self, msg: Msg, deliveries: int, error: str) -> None:
        # For NATS and MQTT publishers this record (and the log line) is the
        # error report: a stream message has nobody waiting for an answer.
        log.warning("rejected message on %s: %s (recorded on the DLQ)", msg.subject, error)
        record = DeadLetter(
            service=SERVICE,
            subject=msg.subject,
            deliveries=deliveries,
            error=error,
            payload=msg.data.decode(errors="replace")[:10_000],
        )
        await self.js.publish(subjects.dead_letter(SERVICE), encode(record))
        await msg.term()

    # -- alerts ----------------------------------------------------------------------

    async def handle_alert(self, msg: Msg) -> None:
        """Validate, deduplicate and fan out one alert."""
        channel = msg.subject.split(".", 1)[1]
        if not subjects.is_valid_name(channel) or await self.store.get_channel(channel) is None:
            raise PermanentError(f"unknown channel {channel!r}: create it with /newchannel")
        try:
            alert = decode_as(Alert, msg.data, msg.subject)
        except PayloadError as exc:
            raise PermanentError(str(exc)) from exc
        alert_id = alert_id_for(self.epoch, msg.metadata.sequence.stream)
        if alert.dedupe_key:
            owner = await self.store.claim_dedupe(
                channel, alert.dedupe_key, alert_id, self.dedupe_window
            )
            if owner != alert_id:
                log.info("alert %s on %s duplicates alert %s; dropped", alert_id, channel, owner)
                return
        try:
            await self.broadcaster.run(alert_id, channel, alert, heartbeat=msg.in_progress)
        except StoreConflict:
            # Another instance is broadcasting it (our earlier delivery timed out).
            log.info("alert %s is being broadcast by another instance", alert_id)

    # -- reminders -------------------------------------------------------------------

    async def handle_reminder(self, msg: Msg) -> None:
        """Send one fired reminder to its chat."""
        try:
            ref = ReminderRef.model_validate_json(msg.data)
        except ValueError as exc:
            raise PermanentError(f"unreadable reminder reference: {exc}") from exc
        reminder = await self.store.get_reminder(ref.user_id, ref.id)
        if reminder is None:
            log.info("reminder %s of user %s was cancelled; skipped", ref.id, ref.user_id)
            return
        text = (
            f"⏰ Recordatorio: {reminder.text}"
            if reminder.language == "es"
            else f"⏰ Reminder: {reminder.text}"
        )
        seq = msg.metadata.sequence.stream
        action = SendText(
            service=SERVICE,
            chat_id=reminder.chat_id,
            # One key per firing: a daily reminder fires under a new sequence each day.
            idempotency_key=f"{SERVICE}:remind:{reminder.user_id}:{reminder.id}:{seq}",
            text=text,
        )
        await self.js.publish(
            subjects.outbound(SERVICE, action.priority),
            encode(action),
            headers={"Nats-Msg-Id": action.idempotency_key},
        )
        if reminder.kind == "once":
            await self.store.delete_reminder(reminder.user_id, reminder.id)
