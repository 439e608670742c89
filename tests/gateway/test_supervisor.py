"""``botbus up`` runs the system; ``botbus status`` reports it; SIGTERM stops it all."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiomqtt
import pytest

from botbus.auth import Authority, Credentials, authority_dir, decode_claims
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxClient
from botbus.settings import load_settings
from botbus.supervisor import child_env
from tests.support.waiting import eventually

from .factories import message_texts


async def read_output(
    stream: asyncio.StreamReader, lines: list[str], running: asyncio.Event
) -> None:
    """Collect ``botbus up``'s output; flag the line saying everything started."""
    while raw := await stream.readline():
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        if line.startswith("[up] running:"):
            running.set()


async def spawn_up(env: dict[str, str], cwd: Path, *args: str) -> asyncio.subprocess.Process:
    """``botbus up ARGS`` as a child whose output (stdout and stderr) can be read."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from botbus.cli import main; main()",
        "up",
        *args,
        env=env,
        cwd=str(cwd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


@pytest.mark.slow  # botbus up with its processes
async def test_up_runs_echo_end_to_end_and_stops_cleanly(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    env = dict(os.environ)
    for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL", "BOTBUS_WEBHOOK_URL"):
        env.pop(name, None)
    env.update(
        NATS_URL=nats_server.url,
        BOTBUS_DATA_DIR=str(tmp_path / "data"),
        BOTBUS_GATEWAY_HTTP="127.0.0.1:0",
    )
    proc = await spawn_up(env, tmp_path, "--services", "echo", "--sandbox-port", "0")
    lines: list[str] = []
    running = asyncio.Event()
    assert proc.stdout is not None
    reader = asyncio.create_task(read_output(proc.stdout, lines, running))
    try:
        async with asyncio.timeout(20):
            await running.wait()
        state = json.loads((tmp_path / "data" / "up.json").read_text())
        base_url = state["telegram_api_url"].removesuffix("/bot")
        async with SandboxClient(base_url) as user:
            [bot] = await user.bots()
            after = 0
            async with asyncio.timeout(30):
                while True:  # until the gateway has discovered echo
                    sent = await user.send_text(bot.id, "/help")
                    [help_event] = await user.wait_for(bot.id, sent["chat_id"], after=after)
                    after = help_event["seq"]
                    if "/echo" in message_texts([help_event])[0]:
                        break
                    await user.messages(bot.id, sent["chat_id"], after=10**9, timeout=0.5)
            sent = await user.send_text(bot.id, "/echo hi")
            events = await user.wait_for(bot.id, sent["chat_id"], after=after, timeout=10)
            assert message_texts(events) == ["hi"]
        shown = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from botbus.cli import main; main()",
            "status",
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        table, _ = await shown.communicate()
        assert shown.returncode == 0
        assert "/echo" in table.decode()
        # How to chat is said again once the children's start-up logs scrolled past it.
        await eventually(
            lambda: sum(line.startswith("[up] web chat:") for line in lines) == 2,
            30,
            "the web chat URL to be repeated",
        )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
            await reader
    text = "\n".join(lines)
    assert proc.returncode == 0, text[-2000:]
    assert "[up] stopped" in text
    assert not (tmp_path / "data" / "up.json").exists()


@pytest.mark.slow  # botbus up with its processes
async def test_up_shows_how_mqtt_publishers_connect(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTBUS_", "TELEGRAM_"))}
    env.pop("NATS_URL", None)  # the embedded broker, whose MQTT port is picked at start
    env.update(BOTBUS_DATA_DIR=str(tmp_path / "data"), BOTBUS_GATEWAY_HTTP="127.0.0.1:0")
    proc = await spawn_up(env, tmp_path, "--services", "echo", "--sandbox-port", "0")
    lines: list[str] = []
    running = asyncio.Event()
    assert proc.stdout is not None
    reader = asyncio.create_task(read_output(proc.stdout, lines, running))
    try:
        async with asyncio.timeout(30):
            await running.wait()
        [shown] = [line for line in lines if line.startswith("[up] MQTT for publishers")]
        found = re.search(r"127\.0\.0\.1:(\d+); .*`(botbus creds publisher) SERVICE`", shown)
        assert found, shown
        port = int(found.group(1))
        # What it says is enough to connect and publish: issue the identity it names.
        issue = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from botbus.cli import main; main()",
            *found.group(2).split()[1:],
            "alerts",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await issue.wait() == 0
        creds = Credentials.read(tmp_path / "data" / "auth" / "creds" / "publisher.creds")
        async with aiomqtt.Client("127.0.0.1", port, username="d", password=creds.jwt) as device:
            await device.publish("alerts/weather", '{"title": "Frost"}', qos=1)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
            await reader
    assert proc.returncode == 0, "\n".join(lines)[-2000:]


def test_up_issues_each_service_its_own_identity_and_keeps_dotenv_secrets_from_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``botbus up`` issues every child's .creds with the grants the service declares;
    children read no .env, and get its settings but not its secrets."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "TELEGRAM_BOT_TOKEN=123:not-a-real-token\n"
        "BOTBUS_WEBHOOK_SECRET=not-a-real-secret\n"
        "BOTBUS_LOG_LEVEL=DEBUG\n"
    )
    for name in ("TELEGRAM_BOT_TOKEN", "BOTBUS_WEBHOOK_SECRET", "BOTBUS_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BOTBUS_ENV_FILE", raising=False)
    settings = load_settings(BOTBUS_DATA_DIR=str(tmp_path / "data"))
    assert settings.telegram_bot_token is not None  # this process did read the .env
    Authority.load_or_create(authority_dir(settings))

    env = child_env(settings, "alerts", "nats://127.0.0.1:4222")

    creds = Credentials.read(Path(env["BOTBUS_NATS_CREDS"]))
    assert creds.name == "alerts"
    assert "res:subs" in decode_claims(creds.jwt)["nats"]["tags"]  # alerts declares it
    assert "TELEGRAM_BOT_TOKEN" not in env
    assert "BOTBUS_WEBHOOK_SECRET" not in env
    assert env["BOTBUS_LOG_LEVEL"] == "DEBUG"
    assert env["BOTBUS_ENV_FILE"] == ""
    # What the child then loads: the .env's settings, none of its secrets.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen = load_settings()
    assert seen.telegram_bot_token is None
    assert seen.webhook_secret is None
    assert seen.log_level == "DEBUG"
    assert seen.nats_creds == Path(env["BOTBUS_NATS_CREDS"])


def test_up_gives_no_identity_where_the_bus_has_no_authority(tmp_path: Path) -> None:
    """An external broker without authentication: children get no .creds at all."""
    settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path / "data"))
    env = child_env(settings, "echo", "nats://127.0.0.1:4222")
    assert "BOTBUS_NATS_CREDS" not in env
