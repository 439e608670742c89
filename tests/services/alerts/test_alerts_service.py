"""The alerts service on a real bus: commands, NATS/HTTP publishing, fan-out, events."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import aiohttp
import nats
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from botbus import subjects
from botbus.errors import ConfigError
from botbus.models import DeadLetter, DeliveryEvent, ForgetUser, SendText, decode_as, encode
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from services.alerts.bus import STREAM_REMINDERS, alert_channel, reminder_schedule
from services.alerts.service import service
from services.alerts.store import AlertsStore, Reminder
from tests.conftest import publisher_creds
from tests.services.alerts.conftest import ADMIN_ID, Bot, Outbox, StartApp
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


async def make_channel(bot: Bot, name: str = "weather") -> str:
    """Create ``name`` as the bot admin; return its HTTP token."""
    reply = await bot.ask(f"/newchannel {name} Storm warnings", chat_id=ADMIN_ID, admin=True)
    match = re.search(r"Bearer ([\w-]+)'", reply)
    assert match, reply
    return match.group(1)


def http_url(app: ServiceApp, channel: str) -> str:
    """The alert endpoint of ``channel`` on ``app``'s instance."""
    return f"{app.state.http.url}/alerts/{channel}"


def alerts_by_chat(actions: Sequence[object]) -> dict[int, list[SendText]]:
    """Alert actions (idempotency key alert:...) grouped by chat."""
    by_chat: dict[int, list[SendText]] = {}
    for action in actions:
        assert isinstance(action, SendText)
        assert action.idempotency_key.startswith("alert:"), action
        by_chat.setdefault(action.chat_id, []).append(action)
    return by_chat


async def publish_alert(nats_server: NatsServer, settings: Settings, payload: bytes) -> None:
    """Publish one alert to channel weather as an alert publisher would."""
    publisher = await nats.connect(
        nats_server.url,
        user_credentials=str(publisher_creds(settings)),
        inbox_prefix="_INBOX.publisher",
    )
    try:
        await publisher.publish(alert_channel("weather"), payload)
    finally:
        await publisher.drain()


@pytest.mark.slow  # 4 s: gateway, sandbox and fan-out to several chats
async def test_nats_alert_reaches_each_subscriber_exactly_once(
    bot: tuple[Bot, ServiceApp], nats_server: NatsServer, settings: Settings
) -> None:
    b, _app = bot
    await make_channel(b)
    assert "Subscribed to weather" in await b.ask("/subscribe weather", chat_id=1)
    assert "Suscrito a weather" in await b.ask("/subscribe weather", chat_id=2, language="es")
    assert "Already subscribed" in await b.ask("/subscribe weather", chat_id=1)
    listing = await b.ask("/channels", chat_id=1)
    assert "weather — Storm warnings (2 subscribers)" in listing

    publisher = await nats.connect(
        nats_server.url,
        user_credentials=str(publisher_creds(settings)),
        inbox_prefix="_INBOX.publisher",
    )
    try:
        await publisher.publish(
            alert_channel("weather"),
            json.dumps({"title": "Hail", "text": "Stay in", "severity": "warning"}).encode(),
        )
        first = alerts_by_chat(await b.outbox.take(2))
        # A second alert is the barrier: the feed is sequential, so once its
        # actions are stored, any duplicate of the first would be stored too.
        await publisher.publish(alert_channel("weather"), b'{"title": "Clear"}')
        second = alerts_by_chat(await b.outbox.take(2))
    finally:
        await publisher.drain()

    assert sorted(first) == [1, 2] and all(len(v) == 1 for v in first.values())
    assert "Hail" in first[1][0].text and "Stay in" in first[1][0].text
    assert first[1][0].priority == "bulk"
    assert "dejar de recibirlo" in first[2][0].text
    assert sorted(second) == [1, 2] and all("Clear" in v[0].text for v in second.values())
    assert await b.outbox.take(1, timeout=0.5) == []

    # Unsubscribing stops the alerts for that chat only.
    assert "Unsubscribed from weather" in await b.ask("/unsubscribe weather", chat_id=1)
    assert "weather" not in await b.ask("/mysubs", chat_id=1)
    await publish_alert(nats_server, settings, b'{"title": "Fog"}')
    third = alerts_by_chat(await b.outbox.take(2, timeout=3.0))
    assert sorted(third) == [2]


async def test_a_subscription_made_in_a_forum_topic_gets_its_alerts_in_that_topic(
    bot: tuple[Bot, ServiceApp], nats_server: NatsServer, settings: Settings
) -> None:
    b, _app = bot
    await make_channel(b)
    forum = {"chat_type": "supergroup", "group_admin": True}
    assert "Subscribed" in await b.ask("/subscribe weather", chat_id=-1001, thread_id=42, **forum)
    assert "Subscribed" in await b.ask("/subscribe weather", chat_id=-1002, **forum)
    await publish_alert(nats_server, settings, b'{"title": "Hail"}')
    sent = alerts_by_chat(await b.outbox.take(2))
    assert [a.message_thread_id for a in sent[-1001]] == [42]
    assert [a.message_thread_id for a in sent[-1002]] == [None]  # General, as before


async def test_http_alerts_need_the_channel_token_and_a_valid_body(
    bot: tuple[Bot, ServiceApp],
) -> None:
    b, app = bot
    token = await make_channel(b, "ops")
    await b.ask("/subscribe ops", chat_id=5)
    url = http_url(app, "ops")
    good = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"title": "x"}) as resp:
            assert resp.status == 401
            assert "Authorization: Bearer" in (await resp.json())["error"]
        async with http.post(url, json={"title": "x"}, headers={"Authorization": "Bearer no"}) as r:
            assert r.status == 403
            wrong_token = (await r.json())["error"]
        # An unknown channel gets the same answer: no way to list channel names.
        async with http.post(http_url(app, "nope"), json={"title": "x"}, headers=good) as r:
            assert r.status == 403
            unknown = (await r.json())["error"]
        assert unknown == wrong_token.replace("'ops'", "'nope'")
        async with http.post(url, json={"text": "no title"}, headers=good) as r:
            assert r.status == 422
            assert (await r.json())["field"] == "title"
        async with http.post(url, json={"title": "x", "severity": "meh"}, headers=good) as r:
            assert r.status == 422
            assert (await r.json())["field"] == "severity"
        async with http.post(url, data=b"not json", headers=good) as r:
            assert r.status == 422
            assert "not valid JSON" in (await r.json())["error"]

        alert = {"title": "DB down", "severity": "critical", "dedupe_key": "db-1"}
        async with http.post(url, json=alert, headers=good) as r:
            assert r.status == 202
            accepted = await r.json()
        async with http.post(url, json=alert, headers=good) as r:
            assert r.status == 202
            repeat = await r.json()
    assert repeat == {**accepted, "duplicate": True}
    delivered = await b.outbox.take(1)
    assert isinstance(delivered[0], SendText)
    assert delivered[0].idempotency_key == f"alert:{accepted['alert_id']}:5"
    assert "DB down" in delivered[0].text
    assert await b.outbox.take(1, timeout=1.0) == []  # the duplicate was not sent


async def test_bad_nats_payloads_are_dead_lettered_and_the_service_keeps_going(
    bot: tuple[Bot, ServiceApp], admin_nc: Client
) -> None:
    b, _app = bot
    await make_channel(b, "ops")
    await b.ask("/subscribe ops", chat_id=5)
    js = admin_nc.jetstream()
    dlq = await js.pull_subscribe(subjects.dead_letter("alerts"), stream=subjects.STREAM_DLQ)
    await admin_nc.publish(alert_channel("ops"), b'{"title": ""}')
    await admin_nc.publish(alert_channel("ghost"), b'{"title": "x"}')
    await admin_nc.publish(alert_channel("ops"), b'{"title": "fine"}')
    delivered = await b.outbox.take(1)
    assert isinstance(delivered[0], SendText) and "fine" in delivered[0].text
    records = [decode_as(DeadLetter, m.data) for m in await dlq.fetch(2, timeout=5)]
    assert "field 'title'" in records[0].error
    assert "unknown channel 'ghost'" in records[1].error


async def test_group_rule_and_admin_commands(bot: tuple[Bot, ServiceApp]) -> None:
    b, _app = bot
    await make_channel(b, "news")
    group = {"chat_id": -500, "chat_type": "group"}
    refused = await b.ask("/subscribe news", user_id=9, **group)
    assert refused == "In a group, only the group's admins can subscribe or unsubscribe the group."
    refused = await b.ask("/unsubscribe news", user_id=9, language="es", **group)
    assert refused.startswith("En un grupo, solo los administradores del grupo")
    assert "Subscribed" in await b.ask("/subscribe news", user_id=8, group_admin=True, **group)
    assert "Unsubscribed" in await b.ask("/unsubscribe news", user_id=8, group_admin=True, **group)
    # A bot admin who does not administer the group may still manage it.
    assert "Subscribed" in await b.ask("/subscribe news", user_id=ADMIN_ID, admin=True, **group)
    assert "bot's admins only" in await b.ask("/newchannel x y", chat_id=9)
    assert "not a valid channel name" in await b.ask("/subscribe Bad-Name!", chat_id=9)
    assert "no channel 'nosuch'" in await b.ask("/subscribe nosuch", chat_id=9)
    posted = await b.ask("/alert news Election results\nDetails soon", chat_id=ADMIN_ID, admin=True)
    assert "queued for 1 subscribers" in posted
    alert = await b.outbox.take(1)
    assert isinstance(alert[0], SendText) and alert[0].chat_id == -500
    assert "Election results" in alert[0].text
    assert "deleted" in await b.ask("/delchannel news", chat_id=ADMIN_ID, admin=True)
    assert "no channels" in await b.ask("/channels", chat_id=9)


async def test_blocked_chat_and_forgotten_user_lose_their_subscriptions(
    bot: tuple[Bot, ServiceApp], admin_nc: Client
) -> None:
    b, app = bot
    await make_channel(b, "news")
    await b.ask("/subscribe news", chat_id=11)
    await b.ask("/subscribe news", chat_id=12)
    await b.ask("/remind in 1d water plants", chat_id=12)
    js = admin_nc.jetstream()
    store = app.state.store
    await js.publish(
        subjects.delivery_event("alerts"),
        encode(
            DeliveryEvent(
                service="alerts",
                chat_id=11,
                idempotency_key="alert:x:11",
                error_code=403,
                description="Forbidden: bot was blocked by the user",
            )
        ),
    )
    await js.publish(
        subjects.EVENT_FORGET, encode(ForgetUser(user_id=12, chat_id=12, correlation_id="1:9"))
    )

    async def both_gone() -> bool:
        return await store.subscriber_count("news") == 0 and not await store.user_reminders(12)

    await eventually(both_gone)
    assert "No subscriptions" in await b.ask("/mysubs", chat_id=11)
    assert "no reminders" in await b.ask("/reminders", chat_id=12)


@pytest.mark.slow  # restarts the service
async def test_reminder_fires_on_time_and_survives_a_service_restart(
    start_alerts: StartApp, admin_nc: Client
) -> None:
    js = admin_nc.jetstream()
    b = Bot(js, Outbox(js))
    try:
        app = await start_alerts()
        loop = asyncio.get_running_loop()
        asked = loop.time()
        assert "Reminder r" in await b.ask("/remind in 2s tea time", chat_id=31)
        fired = await b.outbox.take(1, timeout=8)
        took = loop.time() - asked
        assert isinstance(fired[0], SendText) and fired[0].chat_id == 31
        assert fired[0].text == "⏰ Reminder: tea time"
        assert took >= 1.0, took  # not before it was due

        reply = await b.ask("/remind in 2s stretch", chat_id=31, language="es")
        rid = re.search(r"Recordatorio (r\w+)", reply)
        assert rid, reply
        await app.stop(timeout=5.0)
        # While no instance runs, nats-server fires the schedule (and removes it).
        schedule = reminder_schedule(31, rid.group(1))
        for _ in range(100):
            try:
                await js.get_last_msg(STREAM_REMINDERS, schedule)
            except NotFoundError:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the reminder schedule never fired")
        await start_alerts()
        late = await b.outbox.take(1, timeout=8)
        assert isinstance(late[0], SendText) and late[0].text == "⏰ Recordatorio: stretch"
        assert await b.outbox.take(1, timeout=0.5) == []  # fired once, not again
    finally:
        await b.outbox.close()


async def test_timezone_daily_reminders_listing_and_cancel(bot: tuple[Bot, ServiceApp]) -> None:
    b, _app = bot
    assert "Unknown time zone 'Mars/Base'" in await b.ask("/timezone Mars/Base", chat_id=40)
    assert "Your time zone is UTC" in await b.ask("/timezone", chat_id=40)
    assert "set to Europe/Madrid" in await b.ask("/timezone europe/madrid", chat_id=40)
    reply = await b.ask("/remind every day 08:00 stretch", chat_id=40)
    assert "every day at 08:00 (Europe/Madrid)" in reply
    rid = re.search(r"Reminder (r\w+)", reply)
    assert rid
    assert "Usage:" in await b.ask("/remind tomorrow buy milk", chat_id=40)
    assert "not a delay" in await b.ask("/remind in 5 minutes tea", chat_id=40)
    listing = await b.ask("/reminders", chat_id=40)
    assert f"{rid.group(1)}: every day 08:00 (Europe/Madrid) — stretch" in listing
    assert "You have no reminder 'rzzzz'" in await b.ask("/cancel rzzzz", chat_id=40)
    assert "Usage: /cancel ID" in await b.ask("/cancel", chat_id=40)
    assert "cancelled" in await b.ask(f"/cancel {rid.group(1)}", chat_id=40)
    assert "no reminders" in await b.ask("/reminders", chat_id=40)


async def test_a_busy_http_port_stops_start_up_with_a_clear_error(
    bot: tuple[Bot, ServiceApp], nats_server: NatsServer, alerts_settings: Settings
) -> None:
    _b, app = bot
    busy = app.state.http.url.removeprefix("http://")
    clashing = load_settings(
        _env_file=None, BOTBUS_DATA_DIR=str(alerts_settings.data_dir), BOTBUS_ALERTS_HTTP=busy
    )
    second = ServiceApp(service, clashing, url=nats_server.url)
    with pytest.raises(ConfigError, match="set BOTBUS_ALERTS_HTTP to a free HOST:PORT"):
        await second.start()
    await second.stop(timeout=1.0)


@pytest.mark.slow  # restarts the service
async def test_reminders_whose_schedules_are_missing_are_armed_again_at_start(
    start_alerts: StartApp, admin_nc: Client
) -> None:
    """As after upgrading from a version that kept the schedules in another stream:
    the reminders are stored, their schedules are not. None may be lost or doubled."""
    js = admin_nc.jetstream()
    b = Bot(js, Outbox(js))
    try:
        app = await start_alerts()
        await app.stop(timeout=5.0)
        store = await AlertsStore.open(js)
        now = datetime.now(UTC)
        stored = [
            Reminder(id="rlate", user_id=51, chat_id=51, kind="once", text="call mum",
                     timezone="UTC", due=now - timedelta(hours=1)),
            Reminder(id="rsoon", user_id=52, chat_id=52, kind="once", text="water plants",
                     timezone="UTC", due=now + timedelta(hours=1)),
            Reminder(id="rdaily", user_id=53, chat_id=53, kind="daily", text="stretch",
                     timezone="Europe/Madrid", due=now + timedelta(hours=5), hour=7, minute=30),
        ]  # fmt: skip
        for reminder in stored:
            assert await store.create_reminder(reminder)

        await start_alerts()
        [late] = await b.outbox.take(1, timeout=8)
        assert isinstance(late, SendText) and (late.chat_id, late.text) == (
            51,
            "⏰ Reminder: call mum",
        )
        armed = {
            r.id: await js.get_last_msg(STREAM_REMINDERS, reminder_schedule(r.user_id, r.id))
            for r in stored[1:]
        }
        assert armed["rdaily"].headers is not None
        assert armed["rdaily"].headers["Nats-Schedule"] == "0 30 7 * * *"
        assert armed["rdaily"].headers["Nats-Schedule-Time-Zone"] == "Europe/Madrid"

        await start_alerts()  # a second instance finds every schedule in place
        for r in stored[1:]:
            again = await js.get_last_msg(STREAM_REMINDERS, reminder_schedule(r.user_id, r.id))
            assert again.seq == armed[r.id].seq  # not armed twice
        assert await b.outbox.take(1, timeout=0.5) == []  # the overdue one fired once
    finally:
        await b.outbox.close()


async def test_extra_arguments_are_refused_with_the_usage(bot: tuple[Bot, ServiceApp]) -> None:
    b, _app = bot
    await make_channel(b, "a")
    refused = await b.ask("/subscribe a b c", chat_id=50)
    assert "Too many words: b c" in refused and "Usage: /subscribe NAME" in refused
    assert "No subscriptions" in await b.ask("/mysubs", chat_id=50)  # nothing was done
    spanish = await b.ask("/timezone Europe/Madrid x", chat_id=50, language="es")
    assert "Sobran palabras: x" in spanish and "Uso: /timezone" in spanish
    assert "Your time zone is UTC" in await b.ask("/timezone", chat_id=50)
    assert "Usage: /unsubscribe NAME" in await b.ask("/unsubscribe a b", chat_id=50)
    assert "Usage: /cancel ID" in await b.ask("/cancel r1 r2", chat_id=50)
