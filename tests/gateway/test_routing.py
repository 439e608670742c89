"""Routing decisions a user notices: unknown commands, down services, built-ins."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects
from botbus.gateway import Gateway
from botbus.models import ForgetUser, InboundMessage, decode_as, decode_inbound
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient
from botbus.settings import Settings

from .conftest import MiniService, connect_admin, wait_until_live
from .factories import message_texts


async def say(client: SandboxClient, bot: SandboxBot, text: str, **kw: object) -> list[str]:
    """A user writes ``text``; returns the texts of the bot's next reply."""
    sent = await client.send_text(bot.id, text, **kw)  # type: ignore[arg-type]
    events = await client.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10)
    return message_texts(events)


async def test_unknown_command_gets_helpful_reply(
    gateway: Gateway, user: SandboxClient, bot: SandboxBot
) -> None:
    [reply] = await say(user, bot, "/frobnicate now")
    assert reply == "Unknown command /frobnicate. Send /help to see what I can do."
    [reply] = await say(user, bot, "/frobnicate", user={"id": 5, "first_name": "E"}, lang="es")
    assert reply.startswith("Comando desconocido /frobnicate")


@pytest.mark.slow  # 3 s: a service stops and comes back
async def test_command_waits_for_a_stopped_service(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    await wait_until_live(gateway, "echo")
    await echo.stop()
    await wait_until_live(gateway, "echo", live=False)
    sent = await user.send_text(bot.id, "/echo still there?")
    [notice] = message_texts(await user.wait_for(bot.id, sent["chat_id"], kind="message"))
    assert notice == "echo is unavailable right now; I will answer when it is back."
    await echo.start()
    events = await user.wait_for(bot.id, sent["chat_id"], count=2, kind="message", timeout=10)
    assert message_texts(events)[1] == "still there?"


async def test_language_choice_overrides_telegram_language(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    await wait_until_live(gateway, "echo")
    person = {"id": 3003, "first_name": "Lee"}
    assert await say(user, bot, "/language es", user=person) == [
        "A partir de ahora hablaré en español."
    ]
    sent = await user.send_text(bot.id, "/help", user=person, lang="en")
    events = await user.wait_for(bot.id, sent["chat_id"], kind="message", after=0, count=2)
    assert "Repite TEXTO" in message_texts(events)[1]
    [usage] = await say(user, bot, "/language klingon", user={"id": 3004, "first_name": "K"})
    assert usage.startswith("Usage: /language en")


async def test_forgetme_publishes_event_and_confirms(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    nc = await connect_admin(nats_server, gw_settings)
    try:
        psub = await nc.jetstream().pull_subscribe(subjects.EVENT_FORGET, stream="BOTBUS_EVENTS")
        [reply] = await say(user, bot, "/forgetme", user={"id": 4004, "first_name": "F"})
        assert reply.startswith("Done: every service has been asked")
        [msg] = await psub.fetch(1, timeout=5)
        event = decode_as(ForgetUser, msg.data)
        assert event.user_id == 4004
    finally:
        await nc.close()


async def test_admin_only_command_is_refused_to_others_and_routed_for_admins(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    await wait_until_live(gateway, "echo")
    [refusal] = await say(user, bot, "/secret x", user={"id": 7, "first_name": "N"})
    assert refusal.startswith("/secret is for the bot's admins only. To become one,")
    assert "user id 7 to BOTBUS_ADMIN_IDS" in refusal
    [answer] = await say(user, bot, "/secret x", user={"id": 42, "first_name": "Admin"})
    assert answer == "x"  # the stand-in service echoes the arguments


async def _fanout(nc: Client) -> nats.js.JetStreamContext.PullSubscription:
    return await nc.jetstream().pull_subscribe(
        subjects.INBOUND_MESSAGES,
        durable="test_listener",
        stream=subjects.STREAM_INBOUND,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )


async def test_plain_text_fans_out_and_other_updates_are_ignored(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    nc = await connect_admin(nats_server, gw_settings)
    try:
        psub = await _fanout(nc)
        await user.create_group(bot.id, -100, "Friends", admins=[1001])
        await user.join(bot.id, -100, {"id": 1002, "first_name": "New"})  # ignored
        await user.send_text(bot.id, "/echo@some_other_bot hi", chat_id=-100)  # not ours
        await user.send_text(bot.id, "hello group", chat_id=-100)
        [msg] = await psub.fetch(1, timeout=5)
        inbound = decode_as(InboundMessage, msg.data)
        assert inbound.text == "hello group"
        assert inbound.chat.id == -100 and inbound.chat.is_group
        with __import__("pytest").raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=0.5)
    finally:
        await nc.close()


async def test_command_addressed_to_this_bot_in_a_group(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    await wait_until_live(gateway, "echo")
    await user.create_group(bot.id, -200, "Team", admins=[1001])
    sent = await user.send_text(bot.id, f"/echo@{bot.username} team", chat_id=-200)
    events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10)
    assert message_texts(events) == ["team"]


async def test_flood_gets_one_warning_then_is_dropped(
    gateway: Gateway, user: SandboxClient, bot: SandboxBot
) -> None:
    burst = gateway.settings.flood_burst
    flooder = {"id": 6006, "first_name": "Fast"}
    for i in range(burst + 10):
        last = await user.send_text(bot.id, f"msg {i}", user=flooder)
    events = await user.wait_for(bot.id, last["chat_id"], kind="message", timeout=10)
    assert message_texts(events) == [
        "You are sending messages too fast; please slow down. I will skip some."
    ]
    assert gateway.metrics.routed.labels("flood_dropped")._value.get() >= 1
    await asyncio.sleep(0)  # let the warning's accounting settle before teardown


async def test_inbound_commands_carry_language_and_admin_flag(
    gateway: Gateway,
    echo: MiniService,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    await wait_until_live(gateway, "echo")
    nc = await connect_admin(nats_server, gw_settings)
    try:
        # A second durable consumer sees the same commands as the service does.
        psub = await nc.jetstream().pull_subscribe(
            subjects.inbound_commands_of("echo"), durable="test_cmd_reader"
        )
        await user.send_text(bot.id, "/echo uno dos", user={"id": 42, "first_name": "A"}, lang="es")
        [msg] = await psub.fetch(1, timeout=5)
        cmd = decode_inbound(msg.data)
        assert cmd.kind == "command" and cmd.args == "uno dos" and cmd.argv == ["uno", "dos"]
        assert cmd.language == "es" and cmd.is_admin
        assert cmd.correlation_id == f"{bot.id}:{cmd.update_id}"
    finally:
        await nc.close()
