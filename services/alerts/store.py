"""The alerts service's durable state, in JetStream key-value buckets.

Two buckets, so the large one can be scanned by subject without touching
the other:

``svc_alerts`` (state)
    ``channel.<name>``           :class:`ChannelRecord`
    ``tz.<user_id>``             the user's IANA time zone
    ``reminder.<user_id>.<id>``  :class:`Reminder`
    ``progress.<alert_id>``      :class:`AlertProgress` of a broadcast
    ``dedupe.<channel>.<hash>``  first alert id seen for a dedupe key (expires)

``svc_alerts_subs`` (subscriptions)
    ``<channel>.<chat_id>``      :class:`Subscription`

One key per (channel, chat) makes subscribing a compare-and-set ``create``
that any instance may do, and lets nats-server answer "who is subscribed to
X" and "what is chat Y subscribed to" by subject filter. Unsubscribing purges
the key's subject instead of writing a KV delete marker, so the number of
subjects under ``<channel>.*`` *is* the subscriber count and the server can
report it without us reading 100,000 entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from botbus import topology
from botbus.subjects import service_bucket
from services.alerts.channels import ChannelRecord
from services.alerts.reminders import DEFAULT_TIMEZONE

log = logging.getLogger(__name__)
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"  # any language code: a locales file adds one
_LANGUAGE_IN_JSON = re.compile(rb'"language":"([a-z]{2,3})"')
_THREAD_IN_JSON = re.compile(rb'"thread_id":(\d+)')

SERVICE = "alerts"
DEFAULT_DEDUPE_WINDOW = 600.0  # seconds during which a dedupe key is remembered
SCAN_IDLE_TIMEOUT = 10.0  # seconds without progress before a subject scan gives up

PROGRESS_TTL = 7 * 24 * 3600.0  # seconds; svc_alerts keeps an alert 1 day

_KV_OPERATION = "KV-Operation"
_WRONG_LAST_SEQUENCE = 10071  # JetStream error code of a failed compare-and-set


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Subscription(_Record):
    """One chat subscribed to one channel."""

    language: str = Field(default="en", pattern=LANGUAGE_PATTERN)
    thread_id: int | None = None  # the forum topic it was made in: alerts go there
    since: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Reminder(_Record):
    """A reminder as stored; its schedule lives in the reminders stream."""

    id: str
    user_id: int
    chat_id: int
    kind: Literal["once", "daily"]
    text: str
    timezone: str
    due: datetime  # first firing (UTC) for "once"; informative for "daily"
    hour: int = 0
    minute: int = 0
    language: str = Field(default="en", pattern=LANGUAGE_PATTERN)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    thread_id: int | None = None  # the forum topic it was set in: it fires there


class AlertProgress(_Record):
    """How far the broadcast of one alert got.

    ``cursor`` is the last chat id (subscribers are served in ascending chat id
    order) whose action is durably enqueued; a restarted broadcast resumes
    after it. ``enqueued`` counts actions enqueued so far.
    """

    alert_id: str
    channel: str
    cursor: int | None = None
    enqueued: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A chat to send an alert to, with the language to frame it in."""

    chat_id: int
    language: str
    thread_id: int | None = None  # a forum topic of the chat, or None


BucketOpener = Callable[[str], Awaitable[KeyValue]]
"""Opens the alerts service's bucket of a suffix ("" for ``svc_alerts``)."""


class StoreConflict(RuntimeError):
    """A compare-and-set write lost a race; re-read and decide again."""


def _chat_token(chat_id: int) -> str:
    return str(chat_id)


class AlertsStore:
    """Typed access to the alerts service's buckets. Create with :meth:`open`."""

    def __init__(self, js: JetStreamContext, state: KeyValue, subs: KeyValue) -> None:
        self.js = js
        self.state = state
        self.subs = subs
        self.state_bucket = service_bucket(SERVICE)
        self.subs_bucket = service_bucket(SERVICE, "subs")
        self._subs_stream = f"KV_{self.subs_bucket}"
        self._subs_prefix = f"$KV.{self.subs_bucket}."

    @classmethod
    async def open(cls, js: JetStreamContext, buckets: BucketOpener | None = None) -> AlertsStore:
        """Open (creating when missing) both buckets.

        ``buckets(suffix)`` opens one: the service passes ``app.kv``, which has
        the core's provisioner make it; without it they are made directly,
        which only an admin connection may (tests, benchmarks).
        """
        opener = buckets or functools.partial(topology.service_bucket, js, SERVICE)
        state = await opener("")
        subs = await opener("subs")
        return cls(js, state, subs)

    # -- channels --------------------------------------------------------

    async def get_channel(self, name: str) -> ChannelRecord | None:
        """The channel called ``name``, or None."""
        raw = await _get(self.state, f"channel.{name}")
        return None if raw is None else ChannelRecord.model_validate_json(raw)

    async def create_channel(self, record: ChannelRecord) -> bool:
        """Store a new channel; False if one with that name exists."""
        try:
            await self.state.create(f"channel.{record.name}", record.model_dump_json().encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def delete_channel(self, name: str) -> bool:
        """Remove a channel and every subscription to it; False if it did not exist."""
        if await self.get_channel(name) is None:
            return False
        await self.state.purge(f"channel.{name}")
        await self.js.purge_stream(self._subs_stream, subject=f"{self._subs_prefix}{name}.*")
        return True

    async def list_channels(self) -> list[ChannelRecord]:
        """Every channel, sorted by name."""
        entries = await _scan(
            self.js, f"KV_{self.state._name}", f"$KV.{self.state._name}.channel.*"
        )
        records = [ChannelRecord.model_validate_json(data) for _, data in entries]
        return sorted(records, key=lambda r: r.name)

    # -- subscriptions ---------------------------------------------------

    async def subscribe(
        self, channel: str, chat_id: int, language: str, thread_id: int | None = None
    ) -> bool:
        """Subscribe ``chat_id`` (in forum topic ``thread_id``); False if it already was
        (a compare-and-set create)."""
        value = Subscription(language=language, thread_id=thread_id).model_dump_json().encode()
        try:
            await self.subs.create(f"{channel}.{_chat_token(chat_id)}", value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def unsubscribe(self, channel: str, chat_id: int) -> bool:
        """Unsubscribe ``chat_id``; False if it was not subscribed."""
        key = f"{channel}.{_chat_token(chat_id)}"
        if await _get(self.subs, key) is None:
            return False
        await self.js.purge_stream(self._subs_stream, subject=f"{self._subs_prefix}{key}")
        return True

    async def chat_channels(self, chat_id: int) -> list[str]:
        """The channels ``chat_id`` is subscribed to, sorted."""
        token = _chat_token(chat_id)
        entries = await _scan(self.js, self._subs_stream, f"{self._subs_prefix}*.{token}")
        return sorted(subject[len(self._subs_prefix) :].split(".")[0] for subject, _ in entries)

    async def unsubscribe_chat(self, chat_id: int) -> list[str]:
        """Remove every subscription of ``chat_id``; return the channels it had."""
        channels = await self.chat_channels(chat_id)
        if channels:
            token = _chat_token(chat_id)
            await self.js.purge_stream(self._subs_stream, subject=f"{self._subs_prefix}*.{token}")
        return channels

    async def subscriber_count(self, channel: str) -> int:
        """How many chats are subscribed to ``channel``, counted by the server."""
        info = await self.js.add_consumer(
            self._subs_stream,
            ConsumerConfig(
                filter_subject=f"{self._subs_prefix}{channel}.*",
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=5.0,
                mem_storage=True,
            ),
        )
        try:
            return int(info.num_pending or 0)
        finally:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(self._subs_stream, info.name)

    async def subscribers(self, channel: str) -> list[Subscriber]:
        """Every chat subscribed to ``channel``, in ascending chat id order."""
        prefix_len = len(self._subs_prefix) + len(channel) + 1
        result: list[Subscriber] = []

        def collect(subject: str, data: bytes) -> None:
            chat_id = int(subject[prefix_len:])
            # The language sits in a tiny JSON object; a full model parse per
            # subscriber would dominate a 100,000-chat fan-out.
            found = _LANGUAGE_IN_JSON.search(data)
            language = found.group(1).decode() if found else "en"
            thread = _THREAD_IN_JSON.search(data)
            result.append(Subscriber(chat_id, language, int(thread.group(1)) if thread else None))

        await _scan(self.js, self._subs_stream, f"{self._subs_prefix}{channel}.*", collect)
        result.sort(key=lambda s: s.chat_id)
        return result

    # -- time zones ------------------------------------------------------

    async def get_timezone(self, user_id: int) -> str:
        """The user's time zone (UTC until they set one)."""
        raw = await _get(self.state, f"tz.{user_id}")
        return raw.decode() if raw else DEFAULT_TIMEZONE

    async def set_timezone(self, user_id: int, zone: str) -> None:
        """Remember the user's (already validated) time zone."""
        await self.state.put(f"tz.{user_id}", zone.encode())

    # -- reminders -------------------------------------------------------

    async def create_reminder(self, reminder: Reminder) -> bool:
        """Store a new reminder; False if the id is taken."""
        key = f"reminder.{reminder.user_id}.{reminder.id}"
        try:
            await self.state.create(key, reminder.model_dump_json().encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def get_reminder(self, user_id: int, reminder_id: str) -> Reminder | None:
        """The user's reminder ``reminder_id``, or None."""
        raw = await _get(self.state, f"reminder.{user_id}.{reminder_id}")
        return None if raw is None else Reminder.model_validate_json(raw)

    async def delete_reminder(self, user_id: int, reminder_id: str) -> None:
        """Forget a reminder's record (its schedule is cancelled separately)."""
        await self.state.purge(f"reminder.{user_id}.{reminder_id}")

    async def user_reminders(self, user_id: int) -> list[Reminder]:
        """The user's reminders, soonest first."""
        return await self._reminders(f"reminder.{user_id}.*")

    async def all_reminders(self) -> list[Reminder]:
        """Every reminder of every user (for rare maintenance such as a blocked chat)."""
        return await self._reminders("reminder.*.*")

    async def _reminders(self, pattern: str) -> list[Reminder]:
        name = self.state_bucket
        entries = await _scan(self.js, f"KV_{name}", f"$KV.{name}.{pattern}")
        reminders = [Reminder.model_validate_json(data) for _, data in entries]
        return sorted(reminders, key=lambda r: (r.due, r.id))

    async def forget_user(self, user_id: int) -> None:
        """Delete the user's time zone setting (reminders are cancelled by the caller)."""
        await self.state.purge(f"tz.{user_id}")

    # -- broadcasts ------------------------------------------------------

    async def get_progress(self, alert_id: str) -> tuple[AlertProgress, int] | None:
        """The progress of broadcast ``alert_id`` and its KV revision, or None."""
        try:
            entry = await self.state.get(f"progress.{alert_id}")
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return AlertProgress.model_validate_json(entry.value), entry.revision

    async def save_progress(self, progress: AlertProgress, revision: int | None) -> int:
        """Write progress with compare-and-set; :class:`StoreConflict` if someone else did.

        Written as a raw KV publish so the entry carries a TTL: progress must
        outlive the alert in svc_alerts (a redelivery finds it), then go.
        """
        subject = f"$KV.{self.state_bucket}.progress.{progress.alert_id}"
        headers = {
            "Nats-Expected-Last-Subject-Sequence": str(revision or 0),
            "Nats-TTL": str(int(PROGRESS_TTL)),
        }
        try:
            ack = await self.js.publish(
                subject, progress.model_dump_json().encode(), headers=headers
            )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                raise StoreConflict(
                    f"progress of alert {progress.alert_id} changed under us"
                ) from exc
            raise
        return ack.seq

    async def claim_dedupe(
        self, channel: str, dedupe_key: str, alert_id: str, window: float
    ) -> str | None:
        """Record ``dedupe_key`` for ``alert_id``; return the alert id that owns it.

        The owner is ``alert_id`` for the first alert with this key within
        ``window`` seconds (and for that same alert redelivered), another id
        for a duplicate.
        """
        digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
        key = f"dedupe.{channel}.{digest}"
        try:
            await self.state.create(key, alert_id.encode(), msg_ttl=window)
        except nats.js.errors.KeyWrongLastSequenceError:
            owner = await _get(self.state, key)
            return owner.decode() if owner is not None else alert_id
        return alert_id


async def _get(kv: KeyValue, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return None
    return entry.value


async def _scan(
    js: JetStreamContext,
    stream: str,
    filter_subject: str,
    collect: Callable[[str, bytes], None] | None = None,
) -> list[tuple[str, bytes]]:
    """The latest message of every subject matching ``filter_subject``.

    An ordered push consumer delivering the last message per subject; KV
    delete markers are skipped. With ``collect`` each (subject, data) is
    handed over as it arrives and nothing is accumulated (for large scans).
    """
    found: list[tuple[str, bytes]] = []
    done = asyncio.Event()
    progress = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal progress
        progress += 1
        headers = msg.headers
        if not (headers and headers.get(_KV_OPERATION) in ("DEL", "PURGE")):
            if collect is None:
                found.append((msg.subject, msg.data))
            else:
                collect(msg.subject, msg.data)
        if msg.metadata.num_pending == 0:
            done.set()

    sub = await js.subscribe(
        filter_subject,
        stream=stream,
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        inactive_threshold=30.0,
        pending_msgs_limit=1_000_000,
    )
    try:
        info = await sub.consumer_info()
        # Nothing matched and nothing is on its way: the callback will never run.
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if info.num_pending == 0 and not delivered:
            done.set()
        # Give up only when the scan stalls, not when it is merely long.
        last = -1
        while not done.is_set():
            if progress == last:
                raise TimeoutError(f"scanning {filter_subject} stalled after {progress} messages")
            last = progress
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), SCAN_IDLE_TIMEOUT)
    finally:
        await sub.unsubscribe()
    return found


__all__ = [
    "DEFAULT_DEDUPE_WINDOW",
    "AlertProgress",
    "AlertsStore",
    "Reminder",
    "StoreConflict",
    "Subscriber",
    "Subscription",
]
