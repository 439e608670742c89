"""The sentiment service on a real nats-server: inbound published as the gateway does."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from botbus import subjects
from botbus.models import (
    MAX_INBOUND_TEXT,
    Alert,
    ForgetUser,
    InboundCommand,
    InboundMessage,
    SendPhoto,
    SendText,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings
from botbus.topology import ensure_topology
from services.alerts.bus import ALERTS_ANY, STREAM_ALERTS, alert_channel
from services.sentiment import service as service_module
from services.sentiment.aggregate import MoodDoc
from services.sentiment.service import (
    ALERT_CHANNEL,
    ALERT_POLICY,
    OptOutCache,
)
from services.sentiment.service import service as sentiment_service
from services.sentiment.store import Entity, Kind, MoodStore, SlotLease
from tests.support.outbox import Outbox as SharedOutbox

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GROUP = -100500
BOT_ADMINS = [4242, 4343]
GLOOMY = "I hate this, everything here is awful and terrible"
_ids = itertools.count(1)


def _base(
    chat_id: int, user_id: int, *, admin: bool, group: bool, group_admin: bool = False
) -> dict[str, Any]:
    uid = next(_ids)
    return {
        "correlation_id": f"1:{uid}",
        "bot_id": 1,
        "update_id": uid,
        "message_id": uid,
        "chat": {"id": chat_id, "type": "supergroup" if group else "private", "title": "Team"},
        "user": {"id": user_id, "first_name": "Ana", "language_code": "en"},
        "is_admin": admin,
        # The gateway's rule: a private chat's user administers it; in groups, Telegram says.
        "chat_admin": group_admin or not group,
    }


def command(
    name: str,
    args: str = "",
    *,
    user: int = 7,
    admin: bool = False,
    group_admin: bool = False,
    chat: int = GROUP,
) -> InboundCommand:
    """A command as the gateway publishes it (``admin``: bot admin; ``group_admin``: of chat)."""
    fields = _base(chat, user, admin=admin, group=chat < 0, group_admin=group_admin)
    return InboundCommand.model_validate(
        {**fields, "service": "sentiment", "command": name, "args": args}
    )


def message(text: str, *, user: int = 7, chat: int = GROUP) -> InboundMessage:
    """A plain message as the gateway publishes it."""
    return InboundMessage.model_validate(
        {**_base(chat, user, admin=False, group=chat < 0), "text": text}
    )


@pytest.fixture
async def bus(admin_nc: Client) -> Client:
    await ensure_topology(admin_nc.jetstream())
    return admin_nc


@pytest.fixture
async def app(
    nats_server: NatsServer, settings: Settings, bus: Client
) -> AsyncIterator[ServiceApp]:
    async with ServiceApp(sentiment_service, settings, url=nats_server.url) as running:
        yield running


class Outbox(SharedOutbox):
    """The sentiment service's stored outbound actions, read in order."""

    def __init__(self, nc: Client) -> None:
        super().__init__(nc.jetstream(), "sentiment")

    async def next(self, count: int = 1, timeout: float = 10.0) -> list[Any]:
        """The next ``count`` actions (fewer if ``timeout`` runs out)."""
        return list(await self.take(count, timeout))


@pytest.fixture
async def outbox(bus: Client) -> AsyncIterator[Outbox]:
    box = Outbox(bus)
    try:
        yield box
    finally:
        await box.close()


async def publish(nc: Client, payload: InboundCommand | InboundMessage) -> None:
    if isinstance(payload, InboundCommand):
        subject = subjects.inbound_command(payload.service, payload.command)
    else:
        subject = subjects.INBOUND_MESSAGES
    await nc.jetstream().publish(
        subject, encode(payload), headers={"Nats-Msg-Id": payload.correlation_id}
    )


async def load(app: ServiceApp, kind: Kind, entity: Entity) -> MoodDoc:
    """Every instance's counts of ``kind`` ``entity``, merged as /mood reads them."""
    doc: MoodDoc = await app.state.store.load(kind, entity)
    return doc


async def wait_count(
    app: ServiceApp, kind: Kind, entity: Entity, expected: int, timeout: float = 10.0
) -> MoodDoc:
    """Wait until the merged mood documents of ``kind`` ``entity`` count ``expected`` messages."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    doc = MoodDoc()
    while loop.time() < deadline:
        doc = await load(app, kind, entity)
        if _counted(doc) >= expected:
            return doc
        await asyncio.sleep(0.05)  # polling KV; bounded by the deadline
    raise AssertionError(f"{kind}.{entity} counted {_counted(doc)}, not {expected}")


async def wait_idle(nc: Client, timeout: float = 15.0) -> None:
    """Wait until the service has handled and acked every plain message published so far.

    Actions are stored before a message is acked, so after this returns the
    outbox and the KV bucket hold everything those messages will ever cause.
    """
    js = nc.jetstream()
    durable = subjects.consumer_messages(sentiment_service.name)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        info = await js.consumer_info(subjects.STREAM_INBOUND, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.05)  # polling consumer state; bounded by the deadline
    raise AssertionError(
        f"{durable} still has {info.num_pending} pending, {info.num_ack_pending} unacked"
    )


async def test_sentiment_command_replies_with_score_and_drivers(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    await publish(bus, command("sentiment", "I love this, it is wonderful"))
    [reply] = await outbox.next()
    assert isinstance(reply, SendText)
    assert reply.text.startswith("Sentiment: positive")
    assert "love" in reply.text and "wonderful" in reply.text

    await publish(bus, command("sentiment", ""))
    [usage] = await outbox.next()
    assert isinstance(usage, SendText) and "Usage: /sentiment" in usage.text


async def test_messages_are_scored_and_mood_arrives_as_png_photo(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    for text in ("great work team!", "this is awful", "Me encanta este grupo"):
        await publish(bus, message(text))
    doc = await wait_count(app, "chat", GROUP, 3)
    assert b"great" not in doc.to_json()  # no text is stored
    await publish(bus, command("mood", "week"))
    actions = await outbox.next(2)
    [photo] = [a for a in actions if isinstance(a, SendPhoto)]
    assert photo.photo.startswith(PNG_MAGIC)
    assert photo.caption is not None and "3 messages" in photo.caption

    await publish(bus, command("mood", "fortnight"))
    [error] = await outbox.next()
    assert isinstance(error, SendText) and "Usage: /mood" in error.text


ODD_TEXTS = (
    "word " * (MAX_INBOUND_TEXT // 5),  # as long as the gateway lets through
    "😂😂😂🔥",  # emoji only
    "🇪🇸🇬🇧",  # flags only
    "\u200b\u200b",  # zero-width spaces
    "I am so happy hoy, pero el servicio fue horrible 😡",  # two languages
    "bad\x00good",
    "ＡＢＣ ｇｒｅａｔ",  # full-width letters
)


async def test_odd_texts_are_scored_and_the_service_keeps_serving(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    for text in ("   ", *ODD_TEXTS):  # blank: not scored
        await publish(bus, message(text))
        await publish(bus, command("sentiment", text))
    replies = await outbox.next(len(ODD_TEXTS) + 1)
    assert len(replies) == len(ODD_TEXTS) + 1
    texts = sorted(r.text for r in replies if isinstance(r, SendText))
    assert len(texts) == len(replies)
    assert sum("Usage: /sentiment" in t for t in texts) == 1  # the blank one
    assert sum(t.startswith("Sentiment: ") for t in texts) == len(ODD_TEXTS)
    await wait_count(app, "chat", GROUP, len(ODD_TEXTS))
    await publish(bus, message("great work team!"))  # still serving
    await wait_count(app, "chat", GROUP, len(ODD_TEXTS) + 1)


async def test_opt_out_needs_a_group_admin_in_groups_and_stops_scoring(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    await publish(bus, command("sentiment", "off", admin=False))
    [refused] = await outbox.next()
    assert isinstance(refused, SendText) and "Only a group admin" in refused.text

    await publish(bus, command("sentiment", "off", group_admin=True))
    [done] = await outbox.next()
    assert isinstance(done, SendText) and "OFF" in done.text
    for text in ("I hate this so much", "what a lovely day", "ok"):
        await publish(bus, message(text, user=8))
    await wait_idle(bus)  # every message above was handled: nothing can still be counted
    store = app.state.store
    assert await store.parts("chat", GROUP) == {}
    assert await store.parts("member", f"{GROUP}.8") == {}

    # A bot admin who does not administer the group may switch it back on.
    await publish(bus, command("sentiment", "on", admin=True))
    [back_on] = await outbox.next()
    assert isinstance(back_on, SendText) and "ON" in back_on.text
    await publish(bus, message("I hate this so much", user=8))
    await wait_count(app, "chat", GROUP, 1)


async def test_forget_deletes_every_document_of_the_user(app: ServiceApp, bus: Client) -> None:
    """/forgetme removes the user's counts of every instance, and of the old single document."""
    kv = await app.kv()
    older = MoodDoc()
    older.add(0.5, "positive", datetime.now(UTC))
    await kv.put("user.11", older.to_json())  # the layout before per-instance documents
    await kv.put("user.11.97", older.to_json())  # an instance that ran before
    await kv.put("user.12.97", older.to_json())  # someone else: kept
    await publish(bus, message("what a wonderful day", user=11, chat=11))  # in private
    await publish(bus, message("what a day, team", user=11))  # in the group
    await wait_count(app, "user", 11, 3)
    await wait_count(app, "member", f"{GROUP}.11", 1)
    event = ForgetUser(user_id=11, correlation_id="1:forget-11")
    await bus.jetstream().publish(
        subjects.EVENT_FORGET, encode(event), headers={"Nats-Msg-Id": event.correlation_id}
    )
    store = app.state.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await store.parts("user", 11) or await store.parts("member", "*.11"):
        assert loop.time() < deadline, f"still stored: {sorted(await store.parts('user', 11))}"
        await asyncio.sleep(0.05)  # polling KV; bounded by the deadline
    assert _counted(await load(app, "user", 12)) == 1
    # Counting goes on afresh for a user who writes again.
    await publish(bus, message("back again", user=11, chat=11))
    await wait_count(app, "user", 11, 1)
    assert _counted(await load(app, "user", 11)) == 1


async def _mood_drops(bus: Client, chat: int) -> None:
    """Enough gloomy messages to drop ``chat``'s rolling mood below the threshold, and more."""
    for user in range(ALERT_POLICY.min_messages + 3):
        await publish(bus, message(GLOOMY, user=20 + user, chat=chat))
    await wait_idle(bus)


async def test_low_mood_alerts_each_bot_admin_once_per_cooldown(
    nats_server: NatsServer, settings: Settings, bus: Client, outbox: Outbox
) -> None:
    with_admins = settings.model_copy(update={"admin_ids": BOT_ADMINS})
    async with ServiceApp(sentiment_service, with_admins, url=nats_server.url):
        await _mood_drops(bus, GROUP)
        # Later gloomy messages fall within the cool-down: still one alert per admin.
        await _mood_drops(bus, GROUP)
        # Everything was handled, so every alert is already stored: fetch more than expected.
        alerts = await outbox.next(len(BOT_ADMINS) + 1, timeout=1.0)
    assert sorted(a.chat_id for a in alerts) == BOT_ADMINS
    for alert in alerts:
        assert isinstance(alert, SendText)
        assert alert.text.startswith("Mood alert: the mood of 'Team' dropped to -0.")


async def test_low_mood_without_admins_nor_alerts_service_is_counted_not_retried(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    # No admin to message and no stream for the alerts channel: the alert cannot go
    # anywhere, and that must not make the gloomy messages fail and come back.
    assert not app.settings.admin_ids
    js, durable = bus.jetstream(), subjects.consumer_messages(sentiment_service.name)
    before = (await js.consumer_info(subjects.STREAM_INBOUND, durable)).delivered.consumer_seq
    await _mood_drops(bus, GROUP)
    after = (await js.consumer_info(subjects.STREAM_INBOUND, durable)).delivered.consumer_seq
    sent = ALERT_POLICY.min_messages + 3
    assert after - before == sent  # each delivered once: none failed and came back
    assert _counted(await load(app, "chat", GROUP)) == sent
    assert await outbox.next(timeout=0.5) == []


@pytest.mark.slow  # 3 s: waits out "nothing more arrives" checks
async def test_low_mood_without_bot_admins_goes_to_the_alerts_channel_once(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    assert not app.settings.admin_ids
    # The alerts service's feed stream (it creates it at start-up; here the test does).
    await bus.jetstream().add_stream(name=STREAM_ALERTS, subjects=[ALERTS_ANY])
    channel = await bus.jetstream().pull_subscribe(
        alert_channel(ALERT_CHANNEL), stream=STREAM_ALERTS
    )
    try:
        await _mood_drops(bus, GROUP)
        await _mood_drops(bus, GROUP)
        [stored] = await channel.fetch(batch=1, timeout=5.0)
        alert = Alert.model_validate_json(stored.data)
        assert alert.title == "Mood alert: Team" and alert.severity == "warning"
        # Everything was handled, so a second alert would already be stored.
        with pytest.raises(TimeoutError):
            await channel.fetch(batch=1, timeout=1.0)
        assert await outbox.next(timeout=1.0) == []  # nobody was messaged directly
        # A private chat has no admins to warn: its low mood alerts nobody.
        await _mood_drops(bus, 555)
        with pytest.raises(TimeoutError):
            await channel.fetch(batch=1, timeout=1.0)
    finally:
        await channel.unsubscribe()


async def test_two_instances_count_every_message_of_one_busy_chat(
    nats_server: NatsServer, settings: Settings, bus: Client
) -> None:
    sent = 80
    users = (31, 32, 33)
    async with (
        ServiceApp(sentiment_service, settings, url=nats_server.url) as first,
        ServiceApp(sentiment_service, settings, url=nats_server.url),
    ):
        # Published at once: both instances handle many messages of the same chat together.
        await asyncio.gather(
            *(
                publish(bus, message(f"nice message {i}", user=users[i % 3], chat=-100777))
                for i in range(sent)
            )
        )
        await wait_idle(bus, timeout=30)
        chat = await load(first, "chat", -100777)
        per_user = [await load(first, "member", f"-100777.{u}") for u in users]
        keys = sorted(await first.state.store.parts("chat", -100777))
    assert _counted(chat) == sent  # none lost, none counted twice
    assert [_counted(d) for d in per_user] == [27, 27, 26]
    # Each instance wrote only its own document (no key was written by both).
    assert set(keys) <= {"chat.-100777.0", "chat.-100777.1"}


def _counted(doc: MoodDoc) -> int:
    return sum(b.n for b in doc.days.values())


async def test_opt_out_reaches_the_other_instance_through_the_watch(
    nats_server: NatsServer,
    settings: Settings,
    bus: Client,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Cached flags never expire here: only the KV watch can tell an instance.
    monkeypatch.setattr(service_module, "OPTOUT_TTL", 3600.0)
    chat = -100888
    async with (
        ServiceApp(sentiment_service, settings, url=nats_server.url) as first,
        ServiceApp(sentiment_service, settings, url=nats_server.url) as second,
    ):
        # Both instances now hold "scoring on" for the chat in their caches.
        for app in (first, second):
            assert not await app.state.optouts.is_opted_out(chat)
        await publish(bus, message("a lovely start", chat=chat))
        await wait_count(first, "chat", chat, 1)

        await publish(bus, command("sentiment", "off", group_admin=True, chat=chat))
        [done] = await outbox.next()
        assert isinstance(done, SendText) and "OFF" in done.text
        # Sent after the reply, handled by either instance: none may be counted.
        await asyncio.gather(
            *(publish(bus, message(f"later {i}", chat=chat, user=40 + i)) for i in range(20))
        )
        await wait_idle(bus)
        assert _counted(await load(first, "chat", chat)) == 1
        for user in range(40, 60):
            assert await first.state.store.parts("member", f"{chat}.{user}") == {}


async def test_a_cached_opt_out_flag_is_re_read_after_its_ttl(app: ServiceApp) -> None:
    """Without the watch (here: never started), a flag is at most ``ttl`` stale."""
    kv = await app.kv()
    now = [0.0]
    cache = OptOutCache(kv, ttl=1.0, clock=lambda: now[0])
    assert not await cache.is_opted_out(-1001)
    await kv.put("optout.-1001", b"2025-01-01T00:00:00+00:00")
    now[0] = 0.9
    assert not await cache.is_opted_out(-1001)  # still within the bound
    now[0] = 1.0
    assert await cache.is_opted_out(-1001)  # the bound has passed: re-read


async def test_writers_sharing_a_slot_still_count_every_change_once(app: ServiceApp) -> None:
    """Two stores writing as the same slot (a lease taken from a paused instance) lose nothing."""
    kv = await app.kv()
    lease = SlotLease(kv, "paused-and-resumed")
    await lease.claim()
    bucket = subjects.service_bucket("sentiment")
    first, second = MoodStore(app.js, kv, bucket, lease), MoodStore(app.js, kv, bucket, lease)
    at = datetime.now(UTC)

    def count(doc: MoodDoc) -> None:
        doc.add(0.5, "positive", at)

    await first.count("chat", -100999, count)  # both now hold the document in memory...
    await second.count("chat", -100999, count)  # ...at different revisions
    writers = 20
    await asyncio.gather(
        *(store.count("chat", -100999, count) for store in (first, second) * (writers // 2))
    )
    assert _counted(await first.load("chat", -100999)) == writers + 2


def _doc(*compounds: float) -> MoodDoc:
    """A stored document counting one message per compound value, now."""
    doc = MoodDoc()
    for compound in compounds:
        doc.add(compound, "negative" if compound < 0 else "positive", datetime.now(UTC))
    return doc


async def test_mood_merges_every_instances_document_and_the_old_one(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    kv = await app.kv()
    await kv.put(f"chat.{GROUP}", _doc(0.5, 0.5).to_json())  # before per-instance documents
    await kv.put(f"chat.{GROUP}.98", _doc(-0.5).to_json())  # another instance's share
    await publish(bus, message("great work team!"))
    await wait_count(app, "chat", GROUP, 4)
    await publish(bus, command("mood", "day"))
    actions = await outbox.next(2)
    [photo] = [a for a in actions if isinstance(a, SendPhoto)]
    assert photo.caption is not None and "4 messages" in photo.caption
    assert photo.photo.startswith(PNG_MAGIC)


async def test_unreadable_stored_documents_do_not_stop_the_service(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    kv = await app.kv()
    own = app.state.store.own_key("chat", GROUP)
    for key in (f"chat.{GROUP}", f"chat.{GROUP}.98", own, f"member.{GROUP}.7.98"):
        await kv.put(key, b"{not a mood document")
    await kv.put(f"chat.{GROUP}.99", b'{"v": 1, "h": {"2025-01-01T00": [null, 1, 2, 3, 4]}}')
    for text in ("great work team!", "this is awful"):
        await publish(bus, message(text))
    await wait_idle(bus)
    # The instance's own unreadable document is counted afresh; the others are left out.
    assert _counted(await load(app, "chat", GROUP)) == 2
    assert _counted(await load(app, "member", f"{GROUP}.7")) == 2
    await publish(bus, command("mood", "week"))
    actions = await outbox.next(2)
    [photo] = [a for a in actions if isinstance(a, SendPhoto)]
    assert photo.caption is not None and "2 messages" in photo.caption


async def test_a_redelivered_message_is_counted_once_in_each_document(
    app: ServiceApp, bus: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt counts the chat, then fails on the user: the retry counts only the user."""
    store = app.state.store
    real_count = store.count
    failed: list[str] = []

    async def count_failing_once(kind: Kind, entity: Entity, change: Any) -> MoodDoc:
        if kind == "member" and not failed:
            failed.append(f"{kind}.{entity}")
            raise RuntimeError("simulated KV outage while counting the user")
        doc: MoodDoc = await real_count(kind, entity, change)
        return doc

    monkeypatch.setattr(store, "count", count_failing_once)
    await publish(bus, message("what a lovely day", user=13))
    await wait_count(app, "member", f"{GROUP}.13", 1, timeout=15)  # after the retry delay
    await wait_idle(bus)
    assert failed == [f"member.{GROUP}.13"]
    assert _counted(await load(app, "chat", GROUP)) == 1  # not twice
    assert _counted(await load(app, "member", f"{GROUP}.13")) == 1


async def test_instances_take_distinct_slots_and_reuse_freed_or_expired_ones(
    app: ServiceApp,
) -> None:
    kv = await app.kv()
    taken = app.state.lease.slot
    now = [1000.0]
    second = SlotLease(kv, "second", clock=lambda: now[0])
    third = SlotLease(kv, "third", clock=lambda: now[0])
    assert await second.claim() != taken
    assert await third.claim() not in (taken, second.slot)
    freed = second.slot
    await second.stop()
    fourth = SlotLease(kv, "fourth", clock=lambda: now[0])
    assert await fourth.claim() == freed  # the documents of a stopped instance are continued
    # third stops renewing (crashed): after the lease time its slot is free again.
    crashed = third.slot
    now[0] += 31
    fifth = SlotLease(kv, "fifth", clock=lambda: now[0])
    assert await fifth.claim() in (crashed, fourth.slot)
    # The instance whose lease was taken notices on its next renewal and moves on.
    victim = third if fifth.slot == crashed else fourth
    await victim.renew()
    assert victim.slot not in (taken, fifth.slot)


async def test_opt_out_is_still_seen_within_the_ttl_when_the_watch_dies(app: ServiceApp) -> None:
    """While its probe comes back the watch is trusted; once it stops, flags are read again."""
    kv = await app.kv()
    cache = OptOutCache(kv, ttl=0.5, probe_key="optout.probe.test")
    await cache.start()
    try:
        assert not await cache.is_opted_out(-1003)
        watcher = cache._watcher
        assert watcher is not None
        await watcher.stop()  # type: ignore[no-untyped-call]  # the watch dies silently
        await kv.put("optout.-1003", b"2025-01-01T00:00:00+00:00")
        loop = asyncio.get_running_loop()
        stored = loop.time()
        while not await cache.is_opted_out(-1003):
            assert loop.time() - stored < 3.0, "the opt-out was not seen after the ttl"
            await asyncio.sleep(0.05)  # polling the cache; bounded above
    finally:
        await cache.stop()


async def _fresh_kv(app: ServiceApp) -> KeyValue:
    """A handle on the service's bucket of its own (its methods may be patched)."""
    return await app.js.key_value(subjects.service_bucket("sentiment"))


def _lose_a_cancel(kv: KeyValue, method: str) -> asyncio.Event:
    """Make the next ``method`` call of ``kv`` lose the cancellation that ends it.

    nats-py waits for every KV reply with ``asyncio.wait_for``, which on Python 3.11
    returns the reply instead of raising when a cancellation lands just after the
    reply arrived: the caller goes on as if it had never been cancelled. Here the
    first write is stored for real, then waits (standing for the reply) until a
    cancellation comes, and drops it. The event is set once that write is stored.
    """
    real = getattr(kv, method)
    written = asyncio.Event()

    async def write_then_lose_a_cancel(*args: Any, **kwargs: Any) -> int:
        revision: int = await real(*args, **kwargs)
        if not written.is_set():
            written.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # only a cancellation ends this wait
        return revision

    setattr(kv, method, write_then_lose_a_cancel)
    return written


async def _stops_within(stop: Coroutine[Any, Any, None], seconds: float) -> bool:
    """True if ``stop`` finished within ``seconds`` (else it is cancelled)."""
    task = asyncio.create_task(stop)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        return False
    task.result()  # its errors fail the test
    return True


async def test_the_opt_out_cache_stops_even_when_a_probe_write_loses_the_cancel(
    app: ServiceApp,
) -> None:
    kv = await _fresh_kv(app)
    written = _lose_a_cancel(kv, "put")
    cache = OptOutCache(kv, ttl=0.5, probe_key="optout.probe.lost-cancel")
    await cache.start()
    async with asyncio.timeout(5.0):
        await written.wait()  # the probe is inside its write now
    # A probe that went on writing would hang the service's shutdown.
    assert await _stops_within(cache.stop(), 5.0), "stop() waits for a probe that never ends"
    with pytest.raises(KeyNotFoundError):
        await kv.get("optout.probe.lost-cancel")  # removed, and not written again


async def test_a_slot_lease_stops_and_frees_its_slot_even_when_a_renewal_loses_the_cancel(
    app: ServiceApp,
) -> None:
    kv = await _fresh_kv(app)
    lease = SlotLease(kv, "renewing-when-stopped", renew_every=0.01)
    slot = await lease.claim()
    written = _lose_a_cancel(kv, "update")  # renewals are updates
    lease.start()
    async with asyncio.timeout(5.0):
        await written.wait()  # the renewer is inside its write now
    assert await _stops_within(lease.stop(), 5.0), "stop() waits for a renewer that never ends"
    with pytest.raises(KeyNotFoundError):
        await kv.get(f"slot.{slot}")  # freed for the next instance


@pytest.mark.slow  # 3 s: two instances, alerts to every bot admin
async def test_two_instances_alert_each_bot_admin_once_for_their_merged_mood(
    nats_server: NatsServer, settings: Settings, bus: Client, outbox: Outbox
) -> None:
    with_admins = settings.model_copy(update={"admin_ids": BOT_ADMINS})
    async with (
        ServiceApp(sentiment_service, with_admins, url=nats_server.url),
        ServiceApp(sentiment_service, with_admins, url=nats_server.url),
    ):
        await _mood_drops(bus, GROUP)
        await _mood_drops(bus, GROUP)
        alerts = await outbox.next(len(BOT_ADMINS) + 1, timeout=3.0)
    assert sorted(a.chat_id for a in alerts) == BOT_ADMINS
