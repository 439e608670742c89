"""The sentiment service on a real nats-server: inbound published as the gateway does."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from botbus import subjects
from botbus.models import (
    ForgetUser,
    InboundCommand,
    InboundMessage,
    SendPhoto,
    SendText,
    decode_action,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings
from botbus.topology import ensure_topology
from services.sentiment.aggregate import MoodDoc
from services.sentiment.service import service as sentiment_service

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GROUP = -100500
_ids = itertools.count(1)


def _base(chat_id: int, user_id: int, *, admin: bool, group: bool) -> dict[str, Any]:
    uid = next(_ids)
    return {
        "correlation_id": f"1:{uid}",
        "bot_id": 1,
        "update_id": uid,
        "message_id": uid,
        "chat": {"id": chat_id, "type": "supergroup" if group else "private", "title": "Team"},
        "user": {"id": user_id, "first_name": "Ana", "language_code": "en"},
        "is_admin": admin,
    }


def command(
    name: str, args: str = "", *, user: int = 7, admin: bool = False, chat: int = GROUP
) -> InboundCommand:
    """A command as the gateway publishes it."""
    fields = _base(chat, user, admin=admin, group=chat < 0)
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


class Outbox:
    """Reads the service's stored outbound actions in order."""

    def __init__(self, nc: Client) -> None:
        self.js = nc.jetstream()
        self.sub: Any = None

    async def next(self, count: int = 1, timeout: float = 10.0) -> list[Any]:
        if self.sub is None:
            self.sub = await self.js.pull_subscribe(
                subjects.outbound("sentiment"), stream=subjects.STREAM_OUTBOUND
            )
        got: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count and (left := deadline - loop.time()) > 0:
            try:
                msgs = await self.sub.fetch(batch=count - len(got), timeout=left)
            except TimeoutError:
                break
            for msg in msgs:
                await msg.ack()
                got.append(decode_action(msg.data))
        return got


@pytest.fixture
def outbox(bus: Client) -> Outbox:
    return Outbox(bus)


async def publish(nc: Client, payload: InboundCommand | InboundMessage) -> None:
    if isinstance(payload, InboundCommand):
        subject = subjects.inbound_command(payload.service, payload.command)
    else:
        subject = subjects.INBOUND_MESSAGES
    await nc.jetstream().publish(
        subject, encode(payload), headers={"Nats-Msg-Id": payload.correlation_id}
    )


async def wait_count(app: ServiceApp, key: str, expected: int, timeout: float = 10.0) -> MoodDoc:
    """Wait until the mood document at ``key`` counts ``expected`` messages."""
    kv = await app.kv()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    doc = MoodDoc()
    while loop.time() < deadline:
        try:
            doc = MoodDoc.from_json((await kv.get(key)).value)
        except KeyNotFoundError:
            doc = MoodDoc()
        if sum(b.n for b in doc.days.values()) >= expected:
            return doc
        await asyncio.sleep(0.05)  # polling a KV key; bounded by the deadline
    raise AssertionError(f"{key} counted {sum(b.n for b in doc.days.values())}, not {expected}")


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
    doc = await wait_count(app, f"chat.{GROUP}", 3)
    assert b"great" not in doc.to_json()  # no text is stored
    await publish(bus, command("mood", "week"))
    actions = await outbox.next(2)
    [photo] = [a for a in actions if isinstance(a, SendPhoto)]
    assert photo.photo.startswith(PNG_MAGIC)
    assert photo.caption is not None and "3 messages" in photo.caption

    await publish(bus, command("mood", "fortnight"))
    [error] = await outbox.next()
    assert isinstance(error, SendText) and "Usage: /mood" in error.text


async def test_opt_out_needs_a_bot_admin_in_groups_and_stops_scoring(
    app: ServiceApp, bus: Client, outbox: Outbox
) -> None:
    await publish(bus, command("sentiment", "off", admin=False))
    [refused] = await outbox.next()
    assert isinstance(refused, SendText) and "Only a bot admin" in refused.text

    await publish(bus, command("sentiment", "off", admin=True))
    [done] = await outbox.next()
    assert isinstance(done, SendText) and "OFF" in done.text
    await publish(bus, message("I hate this so much", user=8))
    # A message to another chat is scored; once it is, the opted-out one was seen too.
    await publish(bus, message("lovely", user=9, chat=-100999))
    await wait_count(app, "chat.-100999", 1)
    kv = await app.kv()
    with pytest.raises(KeyNotFoundError):
        await kv.get(f"chat.{GROUP}")

    await publish(bus, command("sentiment", "on", admin=True))
    await outbox.next()
    await publish(bus, message("I hate this so much", user=8))
    await wait_count(app, f"chat.{GROUP}", 1)


async def test_forget_deletes_the_users_aggregates(app: ServiceApp, bus: Client) -> None:
    await publish(bus, message("what a wonderful day", user=11))
    await wait_count(app, "user.11", 1)
    event = ForgetUser(user_id=11, correlation_id="1:forget-11")
    await bus.jetstream().publish(
        subjects.EVENT_FORGET, encode(event), headers={"Nats-Msg-Id": event.correlation_id}
    )
    kv = await app.kv()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        try:
            await kv.get("user.11")
        except KeyNotFoundError:
            return
        await asyncio.sleep(0.05)  # polling a KV key; bounded by the deadline
    raise AssertionError("user.11 still stored after /forgetme")
