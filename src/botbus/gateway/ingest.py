"""Telegram updates in, durable bus messages out.

:class:`Ingest` turns a batch of raw updates into publications and waits
for JetStream to acknowledge every one of them; only then may the caller
confirm the batch to Telegram (the next ``getUpdates`` offset, or the
webhook's 200). Telegram redelivers an unconfirmed update for up to 24
hours, longer than JetStream's dedupe window, so :class:`Ingest` also
records every update id it published in a KV bucket whose entries live
that long, and skips an update found there before it runs any side effect.

:class:`Poller` is the long-polling loop. It does not use
python-telegram-bot's ``Updater``, which confirms offsets before handlers
run: here an update the gateway dies with is simply fetched again, and its
``Nats-Msg-Id`` makes the second publish a no-op.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from urllib.parse import urlencode

from nats.errors import Error as NatsError
from nats.js.client import JetStreamContext
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.request import BaseRequest

from botbus import subjects
from botbus.auth import dedupe_id
from botbus.errors import ConfigError
from botbus.gateway.lease import LeaseInvalid
from botbus.gateway.metrics import GatewayMetrics
from botbus.gateway.normalize import Ignored, MalformedUpdate, parse_update, update_id_of
from botbus.gateway.router import Publication, Router
from botbus.gateway.sentkeys import SentKeyLookupError, SentKeys

log = logging.getLogger(__name__)

_OUTBOUND_PREFIX = subjects.OUTBOUND_ALL.removesuffix(">")

DEFAULT_POLL_TIMEOUT = 25  # seconds Telegram holds a getUpdates open
DEFAULT_POLL_LIMIT = 100  # updates per getUpdates (Telegram's maximum)
DEFAULT_PUBLISH_TIMEOUT = 5.0  # seconds to wait for one JetStream ack
BACKOFF_START = 0.2  # seconds
BACKOFF_MAX = 10.0  # seconds
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")
REDELIVERY_WINDOW = 24 * 3600.0  # seconds Telegram keeps redelivering an unconfirmed update


class BusUnavailable(Exception):
    """JetStream did not acknowledge a publish: the updates stay unconfirmed."""


# What NATS raises while it is unreachable: the batch is retried, never confirmed.
BUS_ERRORS = (BusUnavailable, NatsError, TimeoutError)


class Ingest:
    """Parse, route and durably publish updates."""

    def __init__(
        self,
        js: JetStreamContext,
        router: Router,
        bot_username: str,
        metrics: GatewayMetrics,
        *,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        handled: SentKeys | None = None,
        bot_id: int = 0,
        dedupe_secret: bytes | None = None,
    ) -> None:
        self._js = js
        self._router = router
        self._bot_username = bot_username
        self._metrics = metrics
        self._publish_timeout = publish_timeout
        self._handled = handled
        self._bot_id = bot_id
        self._dedupe_secret = dedupe_secret

    async def prepare(self, updates: Sequence[object]) -> list[Publication]:
        """Route every update of a batch; bad ones are logged and skipped."""
        publications: list[Publication] = []
        for update in updates:
            self._metrics.updates_received.inc()
            try:
                parsed = parse_update(update, self._bot_username)
            except MalformedUpdate as exc:
                self._metrics.updates_malformed.inc()
                log.warning("skipping malformed update %s: %s", update_id_of(update), exc)
                continue
            if isinstance(parsed, Ignored):
                self._metrics.updates_ignored.inc()
                log.debug("ignoring update %s: %s", parsed.update_id, parsed.reason)
                continue
            try:
                route = await self._router.route(parsed)
            except (ValueError, TypeError) as exc:
                # A field the models refuse (e.g. an odd chat type): skip this update only.
                self._metrics.updates_malformed.inc()
                log.warning("skipping update %s: %s", parsed.update_id, exc)
                continue
            self._metrics.routed.labels(route.kind).inc()
            publications.extend(route.publications)
        return publications

    def _msg_id(self, p: Publication) -> str:
        """Inbound ids as they are; the gateway's own answers on the outbound stream,
        which services publish to too, keyed by its secret (:func:`botbus.auth.dedupe_id`)."""
        if p.subject.startswith(_OUTBOUND_PREFIX):
            return dedupe_id(self._dedupe_secret, p.msg_id)
        return p.msg_id

    async def publish(self, publications: Sequence[Publication]) -> None:
        """Publish all, pipelined; raise :class:`BusUnavailable` unless all were acked."""
        if not publications:
            return
        results = await asyncio.gather(
            *(
                self._js.publish(
                    p.subject,
                    p.payload,
                    timeout=self._publish_timeout,
                    headers={"Nats-Msg-Id": self._msg_id(p)},
                )
                for p in publications
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self._metrics.publish_failures.inc()
            raise BusUnavailable(
                f"JetStream did not acknowledge {len(failures)} of {len(publications)} "
                f"publishes ({failures[0]!r}); is NATS up and the BOTBUS_IN stream present?"
            ) from (failures[0] if isinstance(failures[0], Exception) else None)
        self._metrics.published.inc(len(publications))

    async def handle(self, updates: Sequence[object]) -> None:
        """Route and publish a batch (one attempt), skipping updates already ingested."""
        fresh, keys = await self._unhandled(updates)
        await self.publish(await self.prepare(fresh))
        if self._handled is not None:
            for key in keys:
                await self._handled.record(key)

    def handled_key(self, update_id: int) -> str:
        """The key of an ingested update in the handled-updates bucket."""
        return f"{self._bot_id}.{update_id}"

    async def _unhandled(self, updates: Sequence[object]) -> tuple[list[object], list[str]]:
        """The updates not ingested before, and the keys to record once they are."""
        if self._handled is None:
            return list(updates), []
        keyed = [(u, update_id_of(u)) for u in updates]
        keys = {self.handled_key(i) for _, i in keyed if i is not None}
        try:
            seen = await self._handled.find(keys) if keys else set()
        except SentKeyLookupError as exc:
            raise BusUnavailable(f"could not check for redelivered updates: {exc}") from exc
        fresh: list[object] = []
        for update, update_id in keyed:
            if update_id is not None and self.handled_key(update_id) in seen:
                self._metrics.updates_redelivered.inc()
                log.info("update %s was already ingested; skipped", update_id)
                continue
            fresh.append(update)
        return fresh, sorted(keys - seen)


# Runs one getUpdates call only while this gateway may poll (the lease's guard).
PollGate = Callable[[Coroutine[object, object, list[object]]], Awaitable[list[object]]]


class Poller:
    """Long polling that confirms an offset only after JetStream acked the batch.

    With a ``gate`` (a standby-capable gateway's lease), each ``getUpdates``
    runs through it: it waits while the lease is not valid and is cancelled
    the moment it stops being valid, so two gateways never poll at once.
    """

    def __init__(
        self,
        ingest: Ingest,
        request: BaseRequest,
        api_base_url: str,
        *,
        timeout: int = DEFAULT_POLL_TIMEOUT,
        limit: int = DEFAULT_POLL_LIMIT,
        gate: PollGate | None = None,
    ) -> None:
        self._ingest = ingest
        self._gate = gate
        self._request = request
        self._url = f"{api_base_url}/getUpdates"
        self._timeout = timeout
        self._limit = limit
        self.offset: int | None = None
        self.batches = 0

    async def _fetch(self) -> list[object]:
        params: dict[str, str | int] = {
            "timeout": self._timeout,
            "limit": self._limit,
            "allowed_updates": json.dumps(list(ALLOWED_UPDATES)),
        }
        if self.offset is not None:
            params["offset"] = self.offset
        # Raw JSON, not telegram.Update objects: one odd update must not sink its batch.
        result = await self._request.post(
            f"{self._url}?{urlencode(params)}", read_timeout=self._timeout + 10
        )
        return list(result) if isinstance(result, list) else []

    async def run(self) -> None:
        """Poll until cancelled."""
        delay = BACKOFF_START
        while True:
            try:
                updates = await (self._gate(self._fetch()) if self._gate else self._fetch())
            except LeaseInvalid:
                continue  # the gate waits for the lease to be valid again
            except InvalidToken as exc:
                # Revoked or replaced at @BotFather: no retry brings it back.
                raise ConfigError(
                    f"Telegram rejected the bot token while polling ({exc}): it was revoked "
                    "or replaced; set TELEGRAM_BOT_TOKEN to the bot's current token"
                ) from exc
            except Conflict as exc:
                log.error(
                    "getUpdates refused: %s. Another process polls this bot or a webhook is "
                    "set; stop it or unset BOTBUS_WEBHOOK_URL. Retrying in %.0fs",
                    exc,
                    BACKOFF_MAX,
                )
                await asyncio.sleep(BACKOFF_MAX)
                continue
            except TelegramError as exc:
                log.warning("getUpdates failed: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_START
            if not updates:
                continue
            await self._deliver(updates)
            ids = [i for i in map(update_id_of, updates) if i is not None]
            if ids:
                self.offset = max(ids) + 1
            self.batches += 1

    async def _deliver(self, updates: list[object]) -> None:
        delay = BACKOFF_START
        while True:
            try:
                await self._ingest.handle(updates)
                return
            except BUS_ERRORS as exc:
                # Not confirming the offset keeps the updates at Telegram until NATS is back.
                log.error("%s; retrying in %.1fs, offset stays at %s", exc, delay, self.offset)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
