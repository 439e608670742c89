"""The alerts service's JetStream facts, against a real nats-server.

Message schedules (one-off, cancelled, daily cron in a time zone), the
subscription store (compare-and-set, server-side counts), dedupe, and a
broadcast that resumes after a crash without re-enqueueing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from botbus import subjects
from botbus.models import Alert, decode_action
from botbus.topology import ensure_topology
from services.alerts.bus import REMINDER_FIRED, REMINDERS_ALL, STREAM_REMINDERS, reminder_schedule
from services.alerts.channels import new_channel
from services.alerts.fanout import Broadcaster, plan_actions
from services.alerts.reminders import ReminderSpec, parse_reminder
from services.alerts.schedules import STREAM_OPTIONS, ReminderRef, ReminderScheduler
from services.alerts.store import AlertProgress, AlertsStore, StoreConflict


async def ensure_stream(js: JetStreamContext) -> None:
    """The reminders stream, as the alerts service declares it (the SDK makes it there)."""
    await js.add_stream(
        StreamConfig(name=STREAM_REMINDERS, subjects=[REMINDERS_ALL], **STREAM_OPTIONS)
    )


WAIT = 10.0  # seconds: upper bound for anything the server does "now"


Fired = list[tuple[float, ReminderRef, dict[str, str]]]


async def _fired(js: JetStreamContext, timeout: float) -> Fired:
    """Collect reminders fired within ``timeout`` seconds, with their arrival times."""
    sub = await js.pull_subscribe(
        REMINDER_FIRED,
        "test_fired",
        stream=STREAM_REMINDERS,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    got: Fired = []
    while (left := end - loop.time()) > 0:
        try:
            msgs = await sub.fetch(10, timeout=min(left, 0.5))
        except TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
            ref = ReminderRef.model_validate_json(msg.data)
            got.append((datetime.now(UTC).timestamp(), ref, dict(msg.headers or {})))
    await sub.unsubscribe()
    return got


@pytest.mark.slow  # waits for a reminder to come due
async def test_one_off_reminder_fires_at_its_time_and_cancel_stops_another(
    admin_nc: Client,
) -> None:
    js = admin_nc.jetstream()
    await ensure_stream(js)
    scheduler = ReminderScheduler(js)
    now = datetime.now(UTC)
    due = now.replace(microsecond=0) + timedelta(seconds=2)
    spec = ReminderSpec("once", "tea", due, "UTC")
    await scheduler.arm(1, "rkeep", spec)
    await scheduler.arm(1, "rdrop", spec)
    await scheduler.cancel(1, "rdrop")

    fired = await _fired(js, timeout=4.0)

    assert [ref.id for _, ref, _ in fired] == ["rkeep"]
    at, _, headers = fired[0]
    assert due.timestamp() - 0.5 <= at <= due.timestamp() + 1.5
    assert headers["Nats-Scheduler"] == reminder_schedule(1, "rkeep")


@pytest.mark.slow  # waits for a server cron to fire
async def test_daily_reminder_is_a_server_cron_in_the_users_zone(admin_nc: Client) -> None:
    js = admin_nc.jetstream()
    await ensure_stream(js)
    spec = parse_reminder("every day 08:00 stretch", timezone="Asia/Tokyo", now=datetime.now(UTC))
    await ReminderScheduler(js).arm(2, "rdaily", spec)
    # The schedule is held by the server; the next firing it reports is 08:00 Tokyo time.
    msg = await js.get_last_msg(STREAM_REMINDERS, reminder_schedule(2, "rdaily"))
    assert msg.headers is not None
    assert msg.headers["Nats-Schedule"] == "0 0 8 * * *"
    assert msg.headers["Nats-Schedule-Time-Zone"] == "Asia/Tokyo"
    # A seconds-resolution cron proves the server fires repeatedly in that zone.
    every_second = {"Nats-Schedule": "* * * * * *", "Nats-Schedule-Time-Zone": "Asia/Tokyo"}
    await js.publish(
        reminder_schedule(2, "rtick"),
        ReminderRef(user_id=2, id="rtick").model_dump_json().encode(),
        headers={**every_second, "Nats-Schedule-Target": REMINDER_FIRED},
    )
    fired = await _fired(js, timeout=2.6)
    ticks = [h for _, ref, h in fired if ref.id == "rtick"]
    assert len(ticks) >= 2
    assert ticks[0]["Nats-Schedule-Next"].endswith("+09:00")


@pytest.fixture
async def store(admin_nc: Client) -> AlertsStore:
    js = admin_nc.jetstream()
    await ensure_topology(js)
    return await AlertsStore.open(js)


async def test_subscriptions_are_compare_and_set_and_counted_by_the_server(
    store: AlertsStore,
) -> None:
    record, _ = new_channel("weather", "Storms", created_by=1)
    assert await store.create_channel(record)
    assert not await store.create_channel(record)  # the name is taken
    assert await store.subscribe("weather", 10, "en")
    assert not await store.subscribe("weather", 10, "en")  # already subscribed
    assert await store.subscribe("weather", -1001, "es")
    assert await store.subscribe("news", 10, "en")
    assert await store.subscriber_count("weather") == 2
    assert await store.chat_channels(10) == ["news", "weather"]

    assert await store.unsubscribe("weather", 10)
    assert not await store.unsubscribe("weather", 10)
    assert await store.subscriber_count("weather") == 1  # no tombstone counted
    assert [s.chat_id for s in await store.subscribers("weather")] == [-1001]
    assert await store.subscribe("weather", 10, "fr")  # re-subscribing works after purge
    # Any language code is kept (a locales file adds a language), and read back as stored.
    subscribers = await store.subscribers("weather")
    assert [(s.chat_id, s.language) for s in subscribers] == [(-1001, "es"), (10, "fr")]

    assert await store.unsubscribe_chat(10) == ["news", "weather"]
    assert await store.chat_channels(10) == []
    assert await store.delete_channel("weather")
    assert await store.subscriber_count("weather") == 0
    assert await store.get_channel("weather") is None


async def test_dedupe_key_owned_by_first_alert_within_window(store: AlertsStore) -> None:
    assert await store.claim_dedupe("ops", "disk-full", "7", window=60) == "7"
    assert await store.claim_dedupe("ops", "disk-full", "7", window=60) == "7"  # redelivery
    assert await store.claim_dedupe("ops", "disk-full", "9", window=60) == "7"  # duplicate
    assert await store.claim_dedupe("other", "disk-full", "9", window=60) == "9"


async def _outbound(js: JetStreamContext) -> list[str]:
    info = await js.stream_info(subjects.STREAM_OUTBOUND)
    keys = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(subjects.STREAM_OUTBOUND, seq)
        assert msg.data is not None, f"outbound message {seq} has no payload"
        keys.append(decode_action(msg.data).idempotency_key)
    return keys


async def test_broadcast_resumes_after_a_crash_without_re_enqueueing(
    store: AlertsStore, admin_nc: Client
) -> None:
    js = admin_nc.jetstream()
    for chat in range(1, 26):
        await store.subscribe("ops", chat, "en")
    alert = Alert(title="Deploy done")
    broadcaster = Broadcaster(js, store, batch_size=10)
    # Simulate a crash after the first batch: progress says chats 1-10 are enqueued.
    first = (await store.subscribers("ops"))[:10]
    await broadcaster._publish(list(plan_actions("5", "ops", alert, first)))
    await store.save_progress(
        AlertProgress(alert_id="5", channel="ops", cursor=10, enqueued=10), None
    )

    result = await broadcaster.run("5", "ops", alert)

    assert result.resumed and result.enqueued_now == 15 and result.enqueued_total == 25
    keys = await _outbound(js)
    assert sorted(keys) == sorted(f"alert:5:{chat}" for chat in range(1, 26))
    again = await broadcaster.run("5", "ops", alert)  # a finished broadcast is a no-op
    assert again.enqueued_now == 0
    assert len(await _outbound(js)) == 25
    found = await store.get_progress("5")
    assert found is not None and found[0].done
    with pytest.raises(StoreConflict):
        await store.save_progress(found[0], found[1] - 1)
