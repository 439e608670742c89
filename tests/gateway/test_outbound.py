"""Outbound actions reach the user once, whole, and in a form Telegram accepts."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects
from botbus.gateway import Gateway
from botbus.models import (
    DeleteMessage,
    DeliveryEvent,
    EditText,
    InlineButton,
    InlineKeyboard,
    SendText,
    decode_as,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient
from botbus.settings import Settings

from .conftest import connect_admin
from .factories import message_texts, publish_reply


async def open_chat(user: SandboxClient, bot: SandboxBot, user_id: int) -> int:
    """The user writes once so a private chat exists; returns its id and last seq."""
    sent = await user.send_text(bot.id, "hello", user={"id": user_id, "first_name": "U"})
    return int(sent["chat_id"])


async def delivery_events(
    nc: Client, service: str
) -> Callable[[int], Awaitable[list[DeliveryEvent]]]:
    """A reader of the delivery events the gateway sends ``service``."""
    psub = await nc.jetstream().pull_subscribe(
        subjects.delivery_event(service),
        durable=f"test_events_{service}",
        stream=subjects.STREAM_EVENTS,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )

    async def fetch(n: int) -> list[DeliveryEvent]:
        return [decode_as(DeliveryEvent, m.data) for m in await psub.fetch(n, timeout=10)]

    return fetch


async def admin(nats_server: NatsServer, settings: Settings) -> Client:
    return await connect_admin(nats_server, settings)


async def test_long_reply_arrives_as_two_messages(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    chat = await open_chat(user, bot, 8001)
    nc = await admin(nats_server, gw_settings)
    try:
        paragraph = "word " * 199 + "end\n"  # 1000 characters a line
        await publish_reply(nc, chat, paragraph * 5)
        events = await user.wait_for(bot.id, chat, count=2, kind="message", timeout=10)
    finally:
        await nc.close()
    first, second = message_texts(events)
    assert len(first) <= 4096 and len(second) <= 4096
    assert first.count("end") + second.count("end") == 5  # cut at a line break, nothing lost
    assert first.endswith("end")


async def test_broken_markdown_arrives_as_plain_text(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    chat = await open_chat(user, bot, 8002)
    nc = await admin(nats_server, gw_settings)
    try:
        await publish_reply(nc, chat, "price: 5.00 (today!) *bold", parse_mode="MarkdownV2")
        events = await user.wait_for(bot.id, chat, kind="message", timeout=10)
    finally:
        await nc.close()
    assert message_texts(events) == ["price: 5.00 (today!) *bold"]


async def test_429_delays_but_does_not_lose_a_reply(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    chat = await open_chat(user, bot, 8003)
    await user.fail_next(bot.id, method="sendMessage", error_code=429, retry_after=1, chat_id=chat)
    nc = await admin(nats_server, gw_settings)
    try:
        started = time.monotonic()
        await publish_reply(nc, chat, "after the pause")
        events = await user.wait_for(bot.id, chat, kind="message", timeout=10)
        waited = time.monotonic() - started
    finally:
        await nc.close()
    assert message_texts(events) == ["after the pause"]
    assert waited >= 0.9  # Telegram's retry_after was honoured


async def test_same_idempotency_key_is_sent_once(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    chat = await open_chat(user, bot, 8004)
    nc = await admin(nats_server, gw_settings)
    try:
        await publish_reply(nc, chat, "once", idempotency_key="k-1")
        await user.wait_for(bot.id, chat, kind="message", timeout=10)
        # A service redelivery past the stream's dedupe window: same key, new message id.
        again = SendText(service="echo", chat_id=chat, idempotency_key="k-1", text="once")
        await nc.jetstream().publish(
            subjects.outbound("echo", "interactive"),
            encode(again),
            headers={"Nats-Msg-Id": "other-id"},
        )
        await publish_reply(nc, chat, "marker")
        events = await user.wait_for(bot.id, chat, count=2, kind="message", timeout=10)
    finally:
        await nc.close()
    assert message_texts(events) == ["once", "marker"]
    assert gateway.metrics.duplicates_skipped._value.get() == 1


async def test_blocked_user_becomes_a_delivery_event(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    chat = await open_chat(user, bot, 8005)
    await user.block(bot.id, 8005)
    nc = await admin(nats_server, gw_settings)
    try:
        psub = await nc.jetstream().pull_subscribe(
            subjects.delivery_event("echo"),
            durable="test_delivery",
            stream=subjects.STREAM_EVENTS,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
        )
        action = await publish_reply(nc, chat, "you blocked me")
        [msg] = await psub.fetch(1, timeout=10)
    finally:
        await nc.close()
    event = decode_as(DeliveryEvent, msg.data)
    assert event.idempotency_key == action.idempotency_key
    assert event.error_code == 403


async def test_invalid_action_is_dropped_and_later_ones_flow(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    chat = await open_chat(user, bot, 8006)
    nc = await admin(nats_server, gw_settings)
    try:
        js = nc.jetstream()
        await js.publish(subjects.outbound("echo", "interactive"), b"{not json")
        await js.publish(
            subjects.outbound("echo", "interactive"), b'{"kind": "send_text", "chat_id": "x"}'
        )
        # An action claiming another service than its subject says is refused too.
        spoof = SendText(service="games", chat_id=chat, idempotency_key="spoof", text="spoof")
        await js.publish(subjects.outbound("echo", "interactive"), encode(spoof))
        # So is an action in a lane its priority does not name (it would jump the queue).
        sneaky = SendText(service="echo", chat_id=chat, idempotency_key="sneaky", text="sneaky")
        await js.publish(subjects.outbound("echo", "interactive"), b"")
        await js.publish(subjects.outbound("echo", "bulk"), encode(sneaky))
        await publish_reply(nc, chat, "still working")
        events = await user.wait_for(bot.id, chat, kind="message", timeout=10)
    finally:
        await nc.close()
    assert message_texts(events) == ["still working"]
    assert gateway.metrics.actions.labels("invalid")._value.get() == 5


async def test_buttons_of_another_service_are_refused(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    """A press goes to the service its callback data names: echo may not send games' buttons."""
    chat = await open_chat(user, bot, 8007)
    nc = await admin(nats_server, gw_settings)
    try:
        events_of = await delivery_events(nc, "echo")
        await publish_reply(nc, chat, "mine")
        [mine] = await user.wait_for(bot.id, chat, kind="message", timeout=10)
        stolen = InlineKeyboard(rows=[[InlineButton(text="press", callback_data="games:t:1")]])
        js = nc.jetstream()
        for action in (
            SendText(service="echo", chat_id=chat, idempotency_key="f1", text="x", keyboard=stolen),
            EditText(
                service="echo",
                chat_id=chat,
                idempotency_key="f2",
                message_id=mine["message"]["message_id"],
                text="edited",
                keyboard=stolen,
            ),
            # no prefix at all: a press would go to no service or, named "echo", to echo
            SendText(
                service="echo",
                chat_id=chat,
                idempotency_key="f3",
                text="x",
                keyboard=InlineKeyboard(rows=[[InlineButton(text="p", callback_data="echo")]]),
            ),
        ):
            await js.publish(subjects.outbound("echo", "interactive"), encode(action))
        refusals: list[DeliveryEvent] = []
        while len(refusals) < 3:
            refusals += await events_of(3)
        await publish_reply(
            nc,
            chat,
            "still mine",
            keyboard={"rows": [[{"text": "ok", "callback_data": "echo:ok"}]]},
        )
        await user.wait_for(bot.id, chat, kind="message", after=mine["seq"], timeout=10)
        events = await user.messages(bot.id, chat, after=mine["seq"])
    finally:
        await nc.close()
    # Nothing reached the chat but the later reply: no foreign button, no edit.
    assert [e["kind"] for e in events] == ["message"]
    assert message_texts(events) == ["still mine"]
    assert sorted(r.idempotency_key for r in refusals) == ["f1", "f2", "f3"]
    assert all(r.error_code == 400 and "'echo:'" in r.description for r in refusals)
    assert "games:t:1" in refusals[0].description
    assert gateway.metrics.actions.labels("invalid")._value.get() == 3


@pytest.mark.slow  # twelve messages to one chat at its 1 msg/s budget
async def test_replies_to_one_chat_keep_their_order(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    chat = await open_chat(user, bot, 8007)
    nc = await admin(nats_server, gw_settings)
    try:
        texts = [f"{n} " + "z" * (5000 if n % 3 == 0 else 10) for n in range(9)]
        for text in texts:
            await publish_reply(nc, chat, text)
        events = await user.wait_for(bot.id, chat, count=12, kind="message", timeout=15)
    finally:
        await nc.close()
    received = "".join(message_texts(events)).replace(" ", "")
    assert received == "".join(texts).replace(" ", "")  # split parts adjacent, order kept


async def test_a_service_edits_and_deletes_only_its_own_messages(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    """The red-team review had evil rewrite games' board: the gateway now remembers
    which service sent each message, and refuses another's edit or delete."""
    chat = await open_chat(user, bot, 8008)
    nc = await admin(nats_server, gw_settings)
    try:
        events_of = await delivery_events(nc, "games")
        await publish_reply(nc, chat, "echo's board")
        [board] = await user.wait_for(bot.id, chat, kind="message", timeout=10)
        message_id = board["message"]["message_id"]
        js = nc.jetstream()
        for action in (
            EditText(
                service="games", chat_id=chat, idempotency_key="e1", message_id=message_id,
                text="rewritten by games",
            ),
            DeleteMessage(
                service="games", chat_id=chat, idempotency_key="e2", message_id=message_id
            ),
        ):  # fmt: skip
            await js.publish(subjects.outbound("games", "interactive"), encode(action))
        refusals: list[DeliveryEvent] = []
        while len(refusals) < 2:
            refusals += await events_of(2)
        # Its own sender still may.
        own = EditText(
            service="echo", chat_id=chat, idempotency_key="e3", message_id=message_id,
            text="edited by echo",
        )  # fmt: skip
        await js.publish(subjects.outbound("echo", "interactive"), encode(own))
        [edit] = await user.wait_for(bot.id, chat, kind="edit", after=board["seq"], timeout=10)
        events = await user.messages(bot.id, chat, after=board["seq"])
    finally:
        await nc.close()
    assert [e["kind"] for e in events] == ["edit"]
    assert edit["message"]["text"] == "edited by echo"
    assert sorted(r.idempotency_key for r in refusals) == ["e1", "e2"]
    assert all(r.error_code == 403 and "only its own messages" in r.description for r in refusals)
