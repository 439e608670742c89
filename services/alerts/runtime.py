"""The per-instance machinery of the alerts service: its lifespan state.

:class:`AlertsRuntime` is what the service's lifespan yields (``ctx.state``):
the store, the broadcaster, the reminder scheduler and the HTTP endpoint.
The two streams it reads (the alert feed ``svc_alerts`` and the fired
reminders in ``svc_alerts_reminders``) are declared by the service and
consumed through the SDK (``@service.consume`` in ``service.py``), with the
SDK's acks, retries, dead letters and statistics; this module only says
what one alert or one fired reminder means.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from nats.js import JetStreamContext

from botbus.errors import ConfigError
from botbus.models import Alert, encode
from botbus.service import Ack, Reject
from botbus.settings import Settings
from services.alerts.bus import STREAM_ALERTS, alert_channel
from services.alerts.fanout import Broadcaster
from services.alerts.httpapi import AlertsHttp, Published
from services.alerts.schedules import ReminderScheduler
from services.alerts.settings import AlertsSettings
from services.alerts.store import DEFAULT_DEDUPE_WINDOW, AlertsStore, BucketOpener, StoreConflict

log = logging.getLogger(__name__)

FEED_ACK_WAIT = 60.0  # seconds; the SDK keeps a long broadcast alive meanwhile


def alert_id_for(epoch: str, seq: int) -> str:
    """An alert's id: the stream's epoch and the alert's sequence in it.

    The epoch (the stream's creation time) keeps ids, and so idempotency
    keys, unique even if the alerts stream is ever recreated from sequence 1.
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
    """One instance's store, broadcaster, scheduler and HTTP endpoint."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: Settings,
        store: AlertsStore,
        dedupe_id: Callable[[str], str] = str,
    ) -> None:
        self.js = js
        self.settings = settings
        self.store = store
        self.broadcaster = Broadcaster(js, store, dedupe_id=dedupe_id)
        self.scheduler = ReminderScheduler(js)
        self.http = AlertsHttp(store, self.publish_alert)
        self.dedupe_window = DEFAULT_DEDUPE_WINDOW
        self.epoch = "0"

    @classmethod
    async def start(
        cls,
        js: JetStreamContext,
        settings: Settings,
        buckets: BucketOpener | None = None,
        dedupe_id: Callable[[str], str] = str,
    ) -> AlertsRuntime:
        """Open the state and start the HTTP endpoint (the streams exist: the SDK had them
        made); ``buckets`` opens the buckets (:meth:`AlertsStore.open`), ``dedupe_id`` is
        the SDK's (:meth:`botbus.service.App.dedupe_id`)."""
        store = await AlertsStore.open(js, buckets)
        runtime = cls(js, settings, store, dedupe_id)
        info = await js.stream_info(STREAM_ALERTS)
        runtime.epoch = _epoch(info.created)
        listen = AlertsSettings.load(settings).http
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
        return runtime

    async def stop(self) -> None:
        """Close the HTTP endpoint."""
        await self.http.stop()

    # -- publishing ----------------------------------------------------------------

    async def publish_alert(self, channel: str, alert: Alert) -> Published:
        """Store ``alert`` in the alerts stream (deduped by its key); return its id."""
        headers = {"Nats-Msg-Id": f"{channel}:{alert.dedupe_key}"} if alert.dedupe_key else None
        ack = await self.js.publish(
            alert_channel(channel), encode(alert), stream=STREAM_ALERTS, headers=headers
        )
        return Published(alert_id_for(self.epoch, ack.seq), bool(ack.duplicate))

    # -- one alert -----------------------------------------------------------------

    async def handle_alert(self, channel: str, seq: int, alert: Alert) -> Ack | Reject:
        """Deduplicate and fan out the alert stored at ``seq`` for ``channel``.

        For NATS and MQTT publishers a rejection's dead letter (and its log
        line) is the error report: a stream message has nobody waiting.
        """
        if await self.store.get_channel(channel) is None:
            return Reject(f"unknown channel {channel!r}: create it with /newchannel")
        alert_id = alert_id_for(self.epoch, seq)
        if alert.dedupe_key:
            owner = await self.store.claim_dedupe(
                channel, alert.dedupe_key, alert_id, self.dedupe_window
            )
            if owner != alert_id:
                log.info("alert %s on %s duplicates alert %s; dropped", alert_id, channel, owner)
                return Ack()
        try:
            await self.broadcaster.run(alert_id, channel, alert)
        except StoreConflict:
            # Another instance is broadcasting it (our earlier delivery timed out).
            log.info("alert %s is being broadcast by another instance", alert_id)
        return Ack()
