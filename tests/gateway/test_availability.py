"""Honest availability: a broker restart never makes live services look down.

The gateway says "<service> is unavailable" only once the service has been
absent for the registry's grace while the bus itself was reachable. Here
nats-server is stopped for longer than that grace while users keep
writing; when it is back, every /echo is answered and nobody was told echo
was unavailable. A service that really stopped is still reported.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from botbus.connect import close_within, connect_options
from botbus.gateway import Gateway
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings

from .conftest import MiniService, gateway_settings, wait_until_live
from .factories import message_texts

USERS = 6
NOTICE = "echo is unavailable right now; I will answer when it is back."


@pytest.mark.slow
async def test_nats_restart_does_not_declare_live_services_down(
    tmp_path: Path,
    settings: Settings,
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
) -> None:
    server = NatsServer(tmp_path / "nats", settings)
    await server.start()
    nc = await nats.connect(
        server.url,
        **connect_options(settings, "admin"),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )
    echo = MiniService(nc)
    gw_settings = gateway_settings(tmp_path, server.url, quiet_sandbox, bot)
    gateway = Gateway(gw_settings, poll_timeout=2, discovery_interval=0.3)
    try:
        await gateway.initialize()
        await echo.start()
        await gateway.start()
        assert gateway.registry is not None
        await wait_until_live(gateway, "echo")
        # The broker is down for twice the grace: absence while it is down must not count.
        outage = 2 * gateway.registry.absent_grace
        await server.stop()
        chats = []
        for n in range(USERS):
            who = {"id": 500 + n, "first_name": f"U{n}"}
            chats.append((await user.send_text(bot.id, f"/echo during {n}", user=who))["chat_id"])
        await asyncio.sleep(outage)  # the outage itself, not a wait for an event
        server = NatsServer(tmp_path / "nats", settings, port=server.port)
        await server.start()
        for n, chat in enumerate(chats):
            events = await user.wait_for(bot.id, chat, kind="message", timeout=30)
            assert message_texts(events) == [f"during {n}"]
        # Once back, new requests are answered as usual, with no notice either.
        sent = await user.send_text(bot.id, "/echo after", user={"id": 600, "first_name": "A"})
        events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10)
        assert message_texts(events) == ["after"]
        for chat in chats:
            assert NOTICE not in message_texts(await user.messages(bot.id, chat))
        # A service that really stops is still reported, after the grace.
        await echo.stop()
        await wait_until_live(gateway, "echo", live=False)
        sent = await user.send_text(bot.id, "/echo gone?", user={"id": 601, "first_name": "B"})
        events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10)
        assert message_texts(events) == [NOTICE]
    finally:
        await gateway.stop()
        await echo.stop()
        await close_within(nc, 5)
        await server.stop()
