"""A service's /healthz and ``botbus healthcheck``: what container healthchecks ask."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from botbus.errors import ConfigError
from botbus.health import HealthServer
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings
from botbus.topology import ensure_topology
from services.echo.service import service as echo
from tests.conftest import connect_as
from tests.support.waiting import eventually


async def status_of(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status


async def healthcheck(url: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from botbus.cli import main; main()",
        "healthcheck",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_healthz_follows_the_checks_and_healthcheck_exits_accordingly() -> None:
    checks = {"nats_connected": True, "consuming": True}
    server = HealthServer(lambda: dict(checks))
    port = await server.start("127.0.0.1:0")
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        assert await status_of(url) == 200
        assert (await healthcheck(url))[0] == 0
        checks["consuming"] = False
        assert await status_of(url) == 503
        code, out = await healthcheck(url)
        assert code == 1
        assert "unhealthy: HTTP 503" in out and '"consuming": false' in out
    finally:
        await server.stop()
    code, out = await healthcheck(url)  # nobody listening any more
    assert code == 1 and "no answer" in out


async def test_a_taken_health_port_names_the_setting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match="BOTBUS_HEALTH_HTTP"):
            await HealthServer(dict).start(f"127.0.0.1:{port}")


@pytest.mark.slow
async def test_a_service_is_unhealthy_while_nats_is_gone(
    nats_server: NatsServer, settings: Settings, tmp_path: Path
) -> None:
    admin = await connect_as(nats_server, settings, "admin")
    await ensure_topology(admin.jetstream())
    await admin.close()
    app = ServiceApp(echo, settings, url=nats_server.url)
    await app.start()
    try:
        assert all(app.health().values())
        await nats_server.stop()
        await eventually(lambda: not app.health()["nats_connected"], what="the disconnect")
        await nats_server.start()  # same port and store
        await eventually(lambda: all(app.health().values()), what="healthy again")
    finally:
        await app.stop()
