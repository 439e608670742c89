"""Alert channels and reminders as Telegram users see them, through the real gateway."""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
import pytest

from botbus.connect import connect
from botbus.models import Alert, encode
from services.alerts.bus import STREAM_ALERTS, alert_channel
from services.alerts.service import service as alerts_service
from tests.conftest import publisher_creds

from .conftest import ADMIN, Chat, Stack, StartStack

# the whole stack (sandbox, gateway, services) per test: in `make test`, not the fast loop
pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]

ANA: dict[str, Any] = {"id": 5201, "first_name": "Ana"}
BEN: dict[str, Any] = {"id": 5202, "first_name": "Ben"}
TEAM = -100520  # a group the bot admin manages, Ben is a plain member
NEWCHANNEL_RE = re.compile(r"POST (http://\S+) with header 'Authorization: Bearer (\S+)'")
QUIET_WINDOW = 1.5  # seconds a chat is watched to show that nothing (more) arrives


def texts(events: list[dict[str, Any]]) -> list[str]:
    """The texts of the bot's messages among ``events``."""
    return [str(e["message"].get("text", "")) for e in events if e["kind"] == "message"]


async def publish_over_nats(stack: Stack, channel: str, alert: Alert) -> None:
    """Publish ``alert`` as a publisher of alerts, with a JetStream acknowledgement."""
    settings = stack.settings.model_copy(update={"nats_creds": publisher_creds(stack.settings)})
    nc = await connect(settings, "publisher", wait_for_server=False)
    try:
        ack = await nc.jetstream().publish(alert_channel(channel), encode(alert))
        assert ack.stream == STREAM_ALERTS
    finally:
        await nc.drain()


async def post_over_http(url: str, token: str, body: object) -> tuple[int, dict[str, Any]]:
    """``POST`` an alert; (status, JSON answer)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, await resp.json()


async def until_text(chat: Chat, needle: str) -> str:
    """The text of the next bot message in ``chat`` that contains ``needle``."""
    while True:
        event = await chat.next("message")
        text = str(event["message"].get("text", ""))
        if needle in text:
            return text


@pytest.fixture
async def stack(start_stack: StartStack) -> Stack:
    """Gateway + alerts service; ADMIN is a bot admin."""
    return await start_stack(alerts_service)


async def test_subscribers_get_nats_and_http_alerts_exactly_once(stack: Stack) -> None:
    admin_dm, ana, team = Chat(stack, ADMIN["id"]), Chat(stack, ANA["id"]), Chat(stack, TEAM)
    created = await admin_dm.reply_text("/newchannel weather Storms and frost", ADMIN)
    match = NEWCHANNEL_RE.search(created)
    assert match is not None, created
    url, token = match.groups()

    assert await ana.reply_text("/subscribe weather", ANA) == (
        "Subscribed to weather. Stop with /unsubscribe weather"
    )
    await stack.client.create_group(stack.bot.id, TEAM, "Team", admins=[ADMIN], members=[BEN])
    refused = await team.reply_text("/subscribe weather", BEN)
    assert "admins can subscribe or unsubscribe the group" in refused  # Ben is neither admin
    assert (await team.reply_text("/subscribe weather", ADMIN)).startswith("Subscribed to weather")
    channels = await ana.reply_text("/channels", ANA)
    assert "weather — Storms and frost (2 subscribers)" in channels

    await publish_over_nats(stack, "weather", Alert(title="Storm over NATS", severity="warning"))
    for chat in (ana, team):
        assert "Storm over NATS" in await until_text(chat, "Storm over NATS")

    status, answer = await post_over_http(url, token, {"title": "Frost over HTTP", "text": "-3°C"})
    assert status == 202 and answer["channel"] == "weather" and not answer["duplicate"]
    for chat in (ana, team):
        got = await until_text(chat, "Frost over HTTP")
        assert "-3°C" in got and "/unsubscribe weather" in got

    # A wrong token or a bad body is refused and reaches nobody.
    status, answer = await post_over_http(url, "not-the-token", {"title": "Forged"})
    assert status == 403 and "not valid for channel 'weather'" in answer["error"]
    status, answer = await post_over_http(url, token, {"title": ""})
    assert status == 422 and answer["field"] == "title"

    # Exactly once: everything each chat ever got holds each alert one time.
    for chat in (ana, team):
        everything = texts(await stack.client.messages(stack.bot.id, chat.chat_id, after=0))
        everything += texts(await chat.rest(QUIET_WINDOW))
        assert sum("Storm over NATS" in t for t in everything) == 1, everything
        assert sum("Frost over HTTP" in t for t in everything) == 1, everything
        assert not [t for t in everything if "Forged" in t]


async def test_unsubscribe_stops_alerts(stack: Stack) -> None:
    admin_dm, ana, ben = Chat(stack, ADMIN["id"]), Chat(stack, ANA["id"]), Chat(stack, BEN["id"])
    await admin_dm.reply_text("/newchannel ops Operations", ADMIN)
    for chat, user in ((ana, ANA), (ben, BEN)):
        assert (await chat.reply_text("/subscribe ops", user)).startswith("Subscribed to ops")
    assert await ana.reply_text("/unsubscribe ops", ANA) == "Unsubscribed from ops."
    assert await ana.reply_text("/mysubs", ANA) == "No subscriptions. See /channels."

    await publish_over_nats(stack, "ops", Alert(title="Deploy finished"))
    assert "Deploy finished" in await until_text(ben, "Deploy finished")
    # Ben's copy and Ana's would have been queued together: Ana's chat stays quiet.
    assert not [t for t in texts(await ana.rest(QUIET_WINDOW)) if "Deploy finished" in t]


async def test_reminder_fires_on_time_across_service_and_gateway_restarts(stack: Stack) -> None:
    ana = Chat(stack, ANA["id"])
    delay = 8  # seconds: room for both restarts below (about 2.5 s together when idle)
    asked = time.time()
    confirmation = await ana.reply_text(f"/remind in {delay}s water the plants", ANA)
    assert re.match(r"Reminder r[a-z0-9]{4} set for ", confirmation), confirmation
    due = asked + delay

    await stack.stop_service("alerts")
    await stack.stop_gateway()
    await stack.start_gateway()
    await stack.start_service(alerts_service)
    restarted = time.time()
    assert restarted < due, "the restarts took longer than the reminder's delay"

    event = await ana.next("message", timeout=due - time.time() + 10)
    arrived = time.time()
    assert event["message"]["text"] == "⏰ Reminder: water the plants"
    # nats-server schedules to the whole second, so "on time" allows a second early.
    assert due - 1.5 <= arrived <= due + 5, arrived - due
    # Once, not once per restarted component.
    assert not texts(await ana.rest(QUIET_WINDOW))
    assert await ana.reply_text("/reminders", ANA) == "You have no reminders."


async def test_shortest_reminder_delay_is_one_second(stack: Stack) -> None:
    ana = Chat(stack, ANA["id"])
    assert (await ana.reply_text("/remind in 1s stretch", ANA)).startswith("Reminder r")
    assert (await ana.next("message", timeout=5))["message"]["text"] == "⏰ Reminder: stretch"
    refused = await ana.reply_text("/remind in 0s never", ANA)
    assert refused == "The delay must be more than 0 and at most 366 days."
