"""A user talks to the bot through the sandbox; answers come back via the bus."""

from __future__ import annotations

import asyncio

import pytest

from botbus.gateway import Gateway
from botbus.sandbox import SandboxBot, SandboxClient

from .conftest import MiniService, wait_until_live


def texts(events: list[dict[str, object]]) -> list[str]:
    return [str(e["message"]["text"]) for e in events if e["kind"] == "message"]  # type: ignore[index]


async def test_echo_round_trip(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    await wait_until_live(gateway, "echo")
    sent = await user.send_text(bot.id, "/echo hi")
    events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10)
    assert texts(events) == ["hi"]


async def test_help_lists_live_commands_in_english_and_spanish(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    await wait_until_live(gateway, "echo")
    sent = await user.send_text(bot.id, "/help", user={"id": 2001, "first_name": "Ann"}, lang="en")
    [english] = texts(await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10))
    assert "/echo - Repeat TEXT" in english
    assert "/secret" not in english  # admin-only commands are hidden from others
    sent = await user.send_text(bot.id, "/help", user={"id": 2002, "first_name": "Ana"}, lang="es")
    [spanish] = texts(await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10))
    assert "/echo - Repite TEXTO" in spanish
    assert "Comandos" in spanish


async def test_command_menu_follows_live_services(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    await wait_until_live(gateway, "echo")
    assert gateway.registry is not None
    async with asyncio.timeout(10):
        while True:
            menu = {c["command"]: c["description"] for c in await user.commands(bot.id)}
            if "echo" in menu:
                break
            await gateway.registry.next_round()
    assert menu["echo"] == "Repeat TEXT"
    assert "secret" not in menu
    spanish = {c["command"]: c["description"] for c in await user.commands(bot.id, lang="es")}
    assert spanish["echo"] == "Repite TEXTO"


@pytest.mark.slow  # 4 s: a service stops and must drop from the menu
async def test_command_menu_drops_a_service_that_stopped(
    gateway: Gateway, echo: MiniService, user: SandboxClient, bot: SandboxBot
) -> None:
    assert gateway.registry is not None
    await wait_until_live(gateway, "echo")
    await echo.stop()
    await wait_until_live(gateway, "echo", live=False)
    await gateway.registry.next_round()  # the menu is synced at the end of a round
    menu = {c["command"] for c in await user.commands(bot.id)}
    assert "echo" not in menu
    assert {"help", "language", "forgetme"} <= menu
