"""The dev loop: a restarted sandbox still knows its chats, so alerts keep reaching them.

Before the sandbox kept its state, Ctrl-C and `make run` again meant "Chat not
found" for every subscriber, and the alerts service unsubscribed them all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from botbus.models import Alert
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxClient, SandboxServer
from services.alerts.service import service as alerts_service

from .conftest import ADMIN, Chat, Stack, launch_stack
from .test_alerts_e2e import publish_over_nats, until_text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ANA: dict[str, Any] = {"id": 5401, "first_name": "Ana"}


@pytest.fixture
async def kept(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[tuple[Stack, Path]]:
    """Gateway + alerts against a sandbox that keeps its state in ``tmp_path/sandbox``."""
    sandbox = SandboxServer(Limits(enabled=False), data_dir=tmp_path / "sandbox")
    await sandbox.start()
    client = SandboxClient(sandbox.base_url)
    stack = await launch_stack(tmp_path / "data", nats_server, sandbox, client, alerts_service)
    try:
        yield stack, tmp_path / "sandbox"
    finally:
        await stack.close()
        await client.close()
        await stack.sandbox.stop()


async def test_alerts_reach_subscribers_after_the_sandbox_restarts(
    kept: tuple[Stack, Path],
) -> None:
    stack, directory = kept
    admin_dm, ana = Chat(stack, ADMIN["id"]), Chat(stack, ANA["id"])
    await admin_dm.reply_text("/newchannel weather Storms and frost", ADMIN)
    assert (await ana.reply_text("/subscribe weather", ANA)).startswith("Subscribed to weather")

    # Ctrl-C and start again: same data directory, same address, same bot token
    host_port = urlsplit(stack.sandbox.base_url)
    await stack.sandbox.stop()
    restarted = SandboxServer(Limits(enabled=False), data_dir=directory)
    await restarted.start(host_port.hostname or "127.0.0.1", host_port.port or 0)
    stack.sandbox = restarted
    assert [bot.token for bot in restarted.bots] == [stack.bot.token]

    await publish_over_nats(stack, "weather", Alert(title="Frost tonight", text="-3 °C"))
    assert "Frost tonight" in await until_text(ana, "Frost tonight")
    still = await ana.reply_text("/mysubs", ANA)
    assert "weather" in still, still
