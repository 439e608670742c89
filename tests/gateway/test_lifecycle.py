"""A gateway that fails to start closes everything it had opened.

Each test makes start-up fail at a different step against a real nats-server
and the sandbox, then checks that the NATS connection is closed and that no
task of it (or of anything else the gateway opened) is left running.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from botbus.errors import ConfigError
from botbus.gateway import Gateway
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxServer

from .conftest import gateway_settings

TASKS_GONE_WITHIN = 5.0  # seconds for cancelled tasks to finish


async def no_new_tasks(before: set[asyncio.Task[object]]) -> None:
    """Wait until every task started since ``before`` has ended (fails after a bound)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TASKS_GONE_WITHIN
    me = asyncio.current_task()
    while left := {t for t in asyncio.all_tasks() if t not in before and t is not me}:
        if loop.time() > deadline:
            names = sorted(t.get_name() for t in left)
            raise AssertionError(f"tasks still running after a failed start: {names}")
        await asyncio.wait(left, timeout=0.1)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A TCP port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_rejected_token_closes_the_nats_connection(
    tmp_path: Path, nats_server: NatsServer, quiet_sandbox: SandboxServer, bot: SandboxBot
) -> None:
    wrong = SandboxBot(id=bot.id, username=bot.username, token=f"{bot.id}:not-the-token")
    settings = gateway_settings(tmp_path, nats_server.url, quiet_sandbox, wrong)
    before = set(asyncio.all_tasks())
    gateway = Gateway(settings)
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        await gateway.initialize()
    # NATS was connected (and the streams made) before Telegram refused the token.
    assert gateway.nc.is_closed
    await no_new_tasks(before)


async def test_failed_start_closes_what_initialize_opened(
    tmp_path: Path,
    nats_server: NatsServer,
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    taken_port: int,
) -> None:
    settings = gateway_settings(
        tmp_path,
        nats_server.url,
        quiet_sandbox,
        bot,
        BOTBUS_WEBHOOK_URL="https://bot.example.com/hook",
        BOTBUS_WEBHOOK_LISTEN=f"127.0.0.1:{taken_port}",
    )
    before = set(asyncio.all_tasks())
    gateway = Gateway(settings, poll_timeout=5)
    # One line naming the setting to change, not a bare OSError.
    with pytest.raises(ConfigError, match="BOTBUS_WEBHOOK_LISTEN"):
        async with gateway:
            pytest.fail("the gateway started on a port that is taken")
    assert gateway.nc.is_closed
    await no_new_tasks(before)
