"""A service that cannot start says why in one ERROR line and exits with a documented code.

Each case runs a real service process; the traceback appears only at DEBUG level.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from botbus.auth import Authority
from botbus.service._runner import EXIT_CONFIG, EXIT_HOOK, EXIT_REFUSED, EXIT_UNREACHABLE
from tests.sdk.conftest import REPO, Spawn

# Each test starts a service process and waits for it to fail: the slow set.
pytestmark = pytest.mark.slow

SERVICE_MODULE = '''
"""A service whose start-up fails the way the test asks (SERVICE_NAME, FAIL_HOOK)."""
import sys

from botbus.service import Service


service = Service(name=sys.argv[1], version="0.1.0", description={"en": "t", "es": "t"})


@service.command("probe", en="Probe", es="Sonda")
async def probe(ctx, cmd):
    await ctx.reply("ok")


if sys.argv[2] == "fail":

    @service.on_startup
    async def load_index(app):
        raise FileNotFoundError("index.db is missing; run `make index` first")


service.run()
'''


def records(output: str) -> list[dict[str, Any]]:
    """The JSON log records of a process; any other line (a bare traceback) fails the test."""
    lines = [line for line in output.splitlines() if line.strip()]
    for line in lines:
        assert line.startswith("{"), f"not a log record: {line!r}\n{output}"
    return [json.loads(line) for line in lines]


def the_error(output: str) -> str:
    """The one ERROR record's message, checking it is alone and carries no traceback."""
    logged = records(output)
    errors = [r for r in logged if r["level"] == "ERROR"]
    assert len(errors) == 1, output
    assert not any("exc" in r for r in logged), output
    return str(errors[0]["msg"])


@pytest.fixture
def service_script(tmp_path: Path) -> Path:
    path = tmp_path / "startup_probe.py"
    path.write_text(SERVICE_MODULE)
    return path


def run_detached(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a service with only the given settings (no broker needed), capturing stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "BOTBUS_"))}
    clean.update({"PYTHONPATH": str(REPO), **env})
    return subprocess.run(args, capture_output=True, text=True, timeout=30, env=clean, cwd=tmp_path)


async def test_failing_startup_hook_is_one_line_and_exit_5(
    spawn: Spawn, topology: Client, service_script: Path
) -> None:
    proc = spawn(f"{sys.executable} {service_script} echo fail", name="echo")
    assert await proc.wait() == EXIT_HOOK
    message = the_error(proc.log())
    assert "on_startup hook load_index of service 'echo' failed" in message
    assert "FileNotFoundError: index.db is missing; run `make index` first" in message


async def test_traceback_of_a_failing_hook_is_logged_at_debug(
    spawn: Spawn, topology: Client, service_script: Path
) -> None:
    proc = spawn(
        f"{sys.executable} {service_script} echo fail", name="echo", BOTBUS_LOG_LEVEL="DEBUG"
    )
    assert await proc.wait() == EXIT_HOOK
    traced = [r for r in records(proc.log()) if "exc" in r]
    assert len(traced) == 1 and traced[0]["level"] == "DEBUG"
    assert "Traceback" in traced[0]["exc"] and "load_index" in traced[0]["exc"]


async def test_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        run_detached,
        [sys.executable, "-m", "services.echo"],
        tmp_path,
        NATS_URL="nats://127.0.0.1:4222",
        BOTBUS_NATS_CONNECT_TIMEOUT="soon",
    )
    assert result.returncode == EXIT_CONFIG
    message = the_error(result.stderr)
    assert "BOTBUS_NATS_CONNECT_TIMEOUT" in message and "cannot start" in message


async def test_unreachable_nats_gives_up_after_the_timeout_with_exit_3(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = await asyncio.to_thread(
        run_detached,
        [sys.executable, "-m", "services.echo"],
        tmp_path,
        NATS_URL=f"nats://127.0.0.1:{port}",
        BOTBUS_NATS_CONNECT_TIMEOUT="1",
    )
    assert result.returncode == EXIT_UNREACHABLE
    message = the_error(result.stderr)
    assert f"cannot reach NATS at nats://127.0.0.1:{port} within 1s" in message
    assert "BOTBUS_NATS_CONNECT_TIMEOUT" in message


async def test_credentials_of_another_authority_are_refused_with_exit_4(
    spawn: Spawn, tmp_path: Path
) -> None:
    stranger = Authority.create().issue_service("echo").write(tmp_path / "stranger.creds")
    proc = spawn("services.echo", name="echo", BOTBUS_NATS_CREDS=str(stranger))
    assert await proc.wait() == EXIT_REFUSED
    message = the_error(proc.log())
    assert "refused the identity of service 'echo'" in message
    assert "botbus creds issue echo" in message


async def test_permission_violation_at_consumer_creation_is_refused_with_exit_4(
    spawn: Spawn, topology: Client, service_script: Path
) -> None:
    # Service "games" run with echo's identity: it may touch only echo's consumers.
    proc = spawn(f"{sys.executable} {service_script} games ok", name="echo")
    assert await proc.wait() == EXIT_REFUSED
    message = the_error(proc.log())
    assert "this identity is not allowed to set up service 'games'" in message
    assert "botbus creds issue games" in message
