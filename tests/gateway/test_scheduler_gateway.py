"""The scheduler inside the gateway: its figures in ``botbus status`` and on ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from botbus.auth import credentials_for
from botbus.errors import ConfigError
from botbus.gateway import Budget, Gateway
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient
from botbus.settings import Settings, load_settings
from botbus.status import collect, gateway_lines

from .conftest import connect_admin
from .factories import publish_reply


async def send_replies(
    nats_server: NatsServer, settings: Settings, user: SandboxClient, bot: SandboxBot, count: int
) -> None:
    """``count`` replies from the echo service to one user, waited for in the sandbox."""
    sent = await user.send_text(bot.id, "hi", user={"id": 8301, "first_name": "S"})
    nc = await connect_admin(nats_server, settings)
    try:
        for n in range(count):
            await publish_reply(nc, int(sent["chat_id"]), f"reply {n}")
        await user.wait_for(bot.id, int(sent["chat_id"]), count=count, kind="message")
    finally:
        await nc.close()


@pytest.mark.slow  # 3 s of real waiting under load
async def test_status_command_shows_the_outbound_figures(
    tmp_path: Path,
    nats_server: NatsServer,
    gateway: Gateway,
    gw_settings: Settings,
    user: SandboxClient,
    bot: SandboxBot,
) -> None:
    await send_replies(nats_server, gw_settings, user, bot, 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTBUS_", "TELEGRAM_"))}
    env.update(NATS_URL=nats_server.url, BOTBUS_DATA_DIR=str(tmp_path / "data"))
    shown = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from botbus.cli import main; main()",
        "status",
        "--json",
        env=env,
        cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await shown.communicate()
    assert shown.returncode == 0
    figures = json.loads(out)["gateway"]
    assert figures["sent_total"] == 3
    assert figures["budget_per_second"] == 30.0  # BOTBUS_RATE_GLOBAL's default
    assert figures["queued_interactive"] == 0 and figures["queued_bulk"] == 0
    assert figures["rate_limited_total"] == 0 and figures["permanent_failures_total"] == 0
    assert figures["sends_per_second"] > 0


async def test_status_table_says_when_no_gateway_answers(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = load_settings(
        _env_file=None,
        NATS_URL=nats_server.url,
        BOTBUS_DATA_DIR=str(tmp_path / "d"),
        BOTBUS_NATS_CREDS=str(credentials_for(nats_server.settings, "admin")),
    )
    system = await collect(settings)
    assert system.gateway is None
    assert "gateway: no answer" in gateway_lines(system.gateway)[0]


async def test_metrics_endpoint_serves_the_scheduler_figures(
    nats_server: NatsServer,
    gateway: Gateway,
    gw_settings: Settings,
    user: SandboxClient,
    bot: SandboxBot,
) -> None:
    await send_replies(nats_server, gw_settings, user, bot, 2)
    url = f"http://127.0.0.1:{gateway.http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body = await resp.text()
    assert resp.status == 200
    assert 'botbus_outbound_sends_total{lane="interactive"} 2.0' in body
    assert 'botbus_outbound_queue_depth{lane="bulk"} 0.0' in body
    for name in ("botbus_outbound_429_total", "botbus_outbound_retries_total"):
        assert f"{name} 0.0" in body
    assert "botbus_outbound_permanent_failures_total 0.0" in body


def test_budget_comes_from_the_environment_names(tmp_path: Path) -> None:
    def budget(**env: object) -> Budget:
        settings = load_settings(
            _env_file=None, TELEGRAM_BOT_TOKEN="1:token", BOTBUS_DATA_DIR=str(tmp_path), **env
        )
        return Gateway(settings).sender.budget

    custom = budget(
        BOTBUS_RATE_GLOBAL="12", BOTBUS_RATE_PER_CHAT="0.5", BOTBUS_RATE_GROUP_PER_MIN="10"
    )
    assert (custom.overall_per_second, custom.per_chat_per_second) == (12.0, 0.5)
    assert custom.group_per_minute == 10
    assert budget().overall_per_second == 30.0
    assert budget(BOTBUS_PAID_BROADCAST="true").overall_per_second == 1000.0
    with pytest.raises(ConfigError, match="BOTBUS_RATE_GLOBAL"):
        budget(BOTBUS_RATE_GLOBAL="0")
