"""Webhook mode: the same conversation, and forged requests never reach the bus."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects
from botbus.gateway import Gateway
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings

from .conftest import MiniService, connect_admin, gateway_settings, wait_until_live
from .factories import message_texts

SECRET = "s3cret-token_for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hook_settings(
    tmp_path: Path, nats_server: NatsServer, quiet_sandbox: SandboxServer, bot: SandboxBot
) -> Settings:
    port = free_port()
    return gateway_settings(
        tmp_path,
        nats_server.url,
        quiet_sandbox,
        bot,
        BOTBUS_WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram/hook",
        BOTBUS_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
        BOTBUS_WEBHOOK_SECRET=SECRET,
    )


@pytest.fixture
async def hook_gateway(hook_settings: Settings) -> AsyncIterator[Gateway]:
    async with Gateway(hook_settings, discovery_interval=0.3) as gw:
        yield gw


def update(update_id: int, text: str) -> dict[str, object]:
    """A Telegram text-message update, as Telegram would POST it."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "chat": {"id": 77, "type": "private"},
            "from": {"id": 77, "is_bot": False, "first_name": "Web"},
            "text": text,
        },
    }


async def test_echo_through_the_webhook(
    hook_gateway: Gateway,
    nats_server: NatsServer,
    hook_settings: Settings,
    user: SandboxClient,
    bot: SandboxBot,
) -> None:
    assert hook_gateway.poller is None  # no getUpdates in webhook mode
    nc = await connect_admin(nats_server, hook_settings)
    echo = MiniService(nc)
    await echo.start()
    try:
        await wait_until_live(hook_gateway, "echo")
        sent = await user.send_text(bot.id, "/echo via webhook")
        events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10)
        assert message_texts(events) == ["via webhook"]
    finally:
        await echo.stop()
        await nc.close()


async def test_forged_webhook_requests_are_refused_and_publish_nothing(
    hook_gateway: Gateway, nats_server: NatsServer, hook_settings: Settings
) -> None:
    nc = await connect_admin(nats_server, hook_settings)
    js = nc.jetstream()
    # A durable consumer keeps interest, so everything published stays countable.
    await js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(durable_name="test_all", ack_policy=AckPolicy.EXPLICIT),
    )
    url = f"http://127.0.0.1:{hook_gateway.webhook_port}/telegram/hook"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=update(1, "forged")) as resp:
                assert resp.status == 403
            bad = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
            async with http.post(url, json=update(2, "forged"), headers=bad) as resp:
                assert resp.status == 403
            assert (await js.stream_info(subjects.STREAM_INBOUND)).state.messages == 0
            good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            async with http.post(url, data=b"not json", headers=good) as resp:
                assert resp.status == 400
            async with http.post(url, json={"update_id": "x"}, headers=good) as resp:
                assert resp.status == 200  # malformed: skipped, so Telegram stops resending
            async with http.post(url, json=update(3, "genuine"), headers=good) as resp:
                assert resp.status == 200
            assert (await js.stream_info(subjects.STREAM_INBOUND)).state.messages == 1
    finally:
        await nc.close()
    assert hook_gateway.metrics.webhook_refused._value.get() == 2


@pytest.mark.slow  # 5 s: NATS goes away and comes back
async def test_webhook_answers_503_while_nats_is_down(
    hook_gateway: Gateway, nats_server: NatsServer
) -> None:
    url = f"http://127.0.0.1:{hook_gateway.webhook_port}/telegram/hook"
    await nats_server.stop()
    good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=update(4, "lost?"), headers=good) as resp,
    ):
        assert resp.status == 503  # Telegram will deliver it again later
