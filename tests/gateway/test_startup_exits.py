"""Start-up that explains itself: one line, a documented exit code, no traceback.

Each case runs the real ``botbus gateway`` / ``botbus service`` / ``botbus
up`` process with the environment a user would give it, and reads what it
prints and how it exits (codes from ``botbus.exits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from botbus.connect import connect
from botbus.errors import ConfigError, StartupError
from botbus.exits import EXIT_BROKER, EXIT_CONFIG, EXIT_OK
from botbus.gateway import Gateway
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.settings import load_settings
from botbus.supervisor import data_dir_lock
from tests.support.waiting import eventually

from .conftest import gateway_settings

pytestmark = pytest.mark.timeout(90)

EXIT_WAIT = 30.0  # seconds a process gets to exit on its own (a bound against hangs)
STOP_WAIT = 10.0  # seconds a process gets to stop after SIGTERM


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any botbus or Telegram setting, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BOTBUS_", "TELEGRAM_", "NATS_"))
    }
    env.update(BOTBUS_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1", **extra)
    return env


async def run(tmp_path: Path, *argv: str, **env: str) -> tuple[int, str]:
    """Run ``botbus ARGV`` until it exits; its code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from botbus.cli import main; main()",
        *argv,
        env=clean_env(tmp_path, **env),
        cwd=tmp_path,  # no .env file of the developer's
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), EXIT_WAIT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def assert_one_clear_line(output: str, *needles: str) -> None:
    """An ERROR line with every needle, and no traceback anywhere."""
    assert "Traceback" not in output, output
    lines = [ln for ln in output.splitlines() if all(n in ln for n in needles)]
    assert lines, f"no line with {needles} in:\n{output}"


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gateway_env(
    nats_server: NatsServer, quiet_sandbox: SandboxServer, bot: SandboxBot
) -> dict[str, str]:
    """What a gateway needs to start against the test's broker and sandbox."""
    return {
        "NATS_URL": nats_server.url,
        "TELEGRAM_BOT_TOKEN": bot.token,
        "TELEGRAM_API_URL": quiet_sandbox.api_url,
        "BOTBUS_GATEWAY_HTTP": "127.0.0.1:0",
    }


# -- a broker too old -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def old_nats(version: str) -> AsyncIterator[str]:
    """A server that speaks just enough of the NATS protocol to announce ``version``."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {
            "server_id": "OLD",
            "server_name": "old",
            "version": version,
            "proto": 1,
            "headers": True,
            "max_payload": 1048576,
            "jetstream": True,
        }
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                if line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")
                    await writer.drain()
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.close()


async def test_connect_names_the_missing_server_feature(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path))
    async with old_nats("2.11.4") as url:
        with pytest.raises(StartupError, match=r"nats-server 2\.11\.4 .* needs 2\.12") as info:
            await connect(settings, "echo", url=url)
    assert info.value.reason == "broker"
    assert "message schedules" in str(info.value)


@pytest.mark.slow
async def test_gateway_and_service_exit_6_on_an_old_server(tmp_path: Path) -> None:
    async with old_nats("2.10.22") as url:
        code, out = await run(
            tmp_path, "gateway", NATS_URL=url, TELEGRAM_BOT_TOKEN="123:abc-for-an-old-server"
        )
        assert code == EXIT_BROKER
        assert_one_clear_line(out, "ERROR", "nats-server 2.10.22", "2.12 or later")
        code, out = await run(tmp_path, "service", "echo", NATS_URL=url)
        assert code == EXIT_BROKER
        assert_one_clear_line(out, "ERROR", "nats-server 2.10.22", "2.12 or later")


# -- what a restart cannot fix: exit 2, one line --------------------------------------


@pytest.mark.slow
async def test_a_taken_health_port(tmp_path: Path, gateway_env: dict[str, str]) -> None:
    with taken_port() as port:
        code, out = await run(
            tmp_path, "gateway", **{**gateway_env, "BOTBUS_GATEWAY_HTTP": f"127.0.0.1:{port}"}
        )
    assert code == EXIT_CONFIG
    assert_one_clear_line(out, "ERROR", f"127.0.0.1:{port}", "BOTBUS_GATEWAY_HTTP")


@pytest.mark.slow
async def test_a_token_telegram_rejects(tmp_path: Path, gateway_env: dict[str, str]) -> None:
    code, out = await run(
        tmp_path, "gateway", **{**gateway_env, "TELEGRAM_BOT_TOKEN": "garbage-token-0042"}
    )
    assert code == EXIT_CONFIG
    assert_one_clear_line(out, "ERROR", "Telegram rejected the bot token", "TELEGRAM_BOT_TOKEN")
    assert "garbage-token-0042" not in out  # masked, even in its own error line


@pytest.mark.slow
async def test_an_http_webhook_url_for_telegram(tmp_path: Path) -> None:
    code, out = await run(
        tmp_path,
        "gateway",
        NATS_URL=f"nats://127.0.0.1:{closed_port()}",
        TELEGRAM_BOT_TOKEN="123456:a-token-for-a-webhook-test",
        BOTBUS_WEBHOOK_URL="http://bot.example.com/hook",
    )
    assert code == EXIT_CONFIG
    assert_one_clear_line(out, "BOTBUS_WEBHOOK_URL", "https://")


# -- SIGTERM while start-up is still retrying -----------------------------------------


async def stop_while_waiting(
    tmp_path: Path, waiting: tuple[str, ...], **env: str
) -> tuple[int, str]:
    """Start the gateway, wait for a line with one of ``waiting``, SIGTERM it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "botbus.gateway",
        env=clean_env(tmp_path, **env),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(EXIT_WAIT):
            while not any(w in (lines[-1] if lines else "") for w in waiting):
                raw = await proc.stdout.readline()
                assert raw, f"the gateway exited before retrying:\n{''.join(lines)}"
                lines.append(raw.decode(errors="replace"))
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_WAIT):
            rest, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, "".join(lines) + rest.decode(errors="replace")


@pytest.mark.slow
async def test_sigterm_stops_a_gateway_waiting_for_nats(tmp_path: Path) -> None:
    code, out = await stop_while_waiting(
        tmp_path,
        ("waiting for NATS",),
        NATS_URL=f"nats://127.0.0.1:{closed_port()}",
        TELEGRAM_BOT_TOKEN="123456:a-token-for-a-sigterm-test",
    )
    assert code == EXIT_OK
    assert "Traceback" not in out
    assert "NATS error" not in out  # the wait is said now and then, not per attempt


@pytest.mark.slow
async def test_sigterm_stops_a_gateway_waiting_for_telegram(
    tmp_path: Path, gateway_env: dict[str, str]
) -> None:
    code, out = await stop_while_waiting(
        tmp_path,
        ("Telegram is unreachable",),
        **{**gateway_env, "TELEGRAM_API_URL": f"http://127.0.0.1:{closed_port()}/bot"},
    )
    assert code == EXIT_OK
    assert "Traceback" not in out
    assert "stopped before it was ready" in out


# -- botbus up ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_up_does_not_restart_a_gateway_with_a_rejected_token(
    tmp_path: Path, nats_server: NatsServer, quiet_sandbox: SandboxServer
) -> None:
    code, out = await run(
        tmp_path,
        "up",
        "--services",
        "echo",
        NATS_URL=nats_server.url,
        TELEGRAM_BOT_TOKEN="123456:rejected-by-the-sandbox",
        TELEGRAM_API_URL=quiet_sandbox.api_url,
        BOTBUS_GATEWAY_HTTP="127.0.0.1:0",
    )
    assert code == EXIT_CONFIG
    assert "a restart cannot fix that" in out
    assert "restart #" not in out
    assert "[up] stopped" in out
    assert "rejected-by-the-sandbox" not in out


@pytest.mark.slow
async def test_a_second_up_on_the_same_data_dir(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path / "data"))
    with data_dir_lock(settings):  # held by this test process, as a first `botbus up` would
        code, out = await run(tmp_path, "up", "--services", "echo")
    assert code == EXIT_CONFIG
    assert_one_clear_line(out, "another botbus up", f"pid {os.getpid()}", "BOTBUS_DATA_DIR")
    assert "nats-server" not in out  # nothing was started


# -- a loop that dies ------------------------------------------------------------------


@pytest.mark.slow
async def test_a_dead_gateway_loop_ends_the_run_with_its_error(
    tmp_path: Path, nats_server: NatsServer, quiet_sandbox: SandboxServer, bot: SandboxBot
) -> None:
    settings = gateway_settings(tmp_path, nats_server.url, quiet_sandbox, bot)
    gateway = Gateway(settings, poll_timeout=5)
    run = asyncio.create_task(gateway.run_until_stopped())
    await eventually(lambda: gateway.http_port is not None, what="the gateway started")

    async def broken_loop() -> None:
        raise RuntimeError("a bug in a gateway loop")

    # Stands for any of its loops dying of a bug: the run must end with that error
    # (exit 1 at the CLI, so a supervisor restarts it), not as a clean stop (exit 0).
    gateway._spawn(broken_loop(), "broken")
    with pytest.raises(RuntimeError, match="a bug in a gateway loop"):
        await asyncio.wait_for(run, EXIT_WAIT)
    assert gateway.nc.is_closed


@pytest.mark.slow
async def test_a_token_revoked_while_polling_ends_the_run_as_a_setting_error(
    tmp_path: Path, nats_server: NatsServer, quiet_sandbox: SandboxServer, bot: SandboxBot
) -> None:
    settings = gateway_settings(tmp_path, nats_server.url, quiet_sandbox, bot)
    gateway = Gateway(settings, poll_timeout=1)
    run = asyncio.create_task(gateway.run_until_stopped())
    await eventually(lambda: gateway.http_port is not None, what="the gateway started")
    user = SandboxClient(quiet_sandbox.base_url)
    try:
        # What Telegram answers getUpdates once the token was revoked at @BotFather.
        await user.fail_next(bot.id, method="getUpdates", error_code=401)
    finally:
        await user.close()
    # Exit 2 at the CLI (not restarted), instead of retrying every 10 s forever.
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        await asyncio.wait_for(run, EXIT_WAIT)
