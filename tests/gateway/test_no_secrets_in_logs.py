"""No secret in any log line, at DEBUG, over a full run of ``botbus up``.

The run uses every kind of secret a deployment has: the bot token (in the
Bot API URL python-telegram-bot logs at DEBUG), a configured webhook secret
(also the proof that ``botbus up`` passes it on: the webhook accepts it),
NATS passwords, and an alerts channel token (shown to the admin in a reply,
used over HTTP). Then every line the run printed is searched for them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from botbus.auth import Authority, Credentials, authority_dir
from botbus.creds import issue_for
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxClient, SandboxServer
from botbus.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOKEN = "123456789:AAE-test-bot-token-secret-part-0042"
WEBHOOK_SECRET = "whsec-configured-for-the-log-test-77"
ADMIN = 4242
WAIT = 60.0  # seconds for the system to answer (a bound against hangs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def reply_containing(user: SandboxClient, bot_id: int, text: str, expect: str) -> str:
    """Send ``text`` as the admin; the first bot message containing ``expect``."""
    sent = await user.send_text(bot_id, text, user={"id": ADMIN, "first_name": "Ada"})
    after = 0
    async with asyncio.timeout(WAIT):
        while True:
            events = await user.wait_for(
                bot_id, sent["chat_id"], kind="message", after=after, timeout=WAIT
            )
            after = events[-1]["seq"]
            for event in events:
                body = str((event.get("message") or {}).get("text"))
                if expect in body:
                    return body


async def spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Proc:
    """Start ``botbus ARGV``; its output is read line by line by the caller."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from botbus.cli import main; main()",
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return Proc(name, proc)


@dataclass
class Proc:
    """A started process of the run."""

    name: str
    proc: asyncio.subprocess.Process


@pytest.mark.parametrize("mode", ["up", "processes"])
async def test_a_debug_run_logs_no_secret(
    mode: str, tmp_path: Path, quiet_sandbox: SandboxServer
) -> None:
    """``up``: one supervisor (which masks its children's lines again); ``processes``:
    the gateway and services alone, as in containers, each masking its own lines."""
    # The broker's authority lives in the run's data directory: `up` issues from it.
    broker_settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path / "data"))
    bot = quiet_sandbox.add_bot(TOKEN, username="secret_test_bot")
    hook_port, alerts_port = free_port(), free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BOTBUS_", "TELEGRAM_", "NATS_"))
    }
    env.update(
        BOTBUS_DATA_DIR=str(tmp_path / "data"),
        BOTBUS_LOG_LEVEL="DEBUG",
        BOTBUS_ADMIN_IDS=f"[{ADMIN}]",
        BOTBUS_ALERTS_HTTP=f"127.0.0.1:{alerts_port}",
    )
    gateway_env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": quiet_sandbox.api_url,
        "BOTBUS_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "BOTBUS_WEBHOOK_LISTEN": f"127.0.0.1:{hook_port}",
        "BOTBUS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BOTBUS_GATEWAY_HTTP": "127.0.0.1:0",
    }
    lines: list[str] = []
    async with NatsServer(tmp_path / "nats", broker_settings) as server:
        env["NATS_URL"] = server.url
        authority = Authority.load(authority_dir(broker_settings))
        if mode == "up":
            up_env = {**env, **gateway_env}
            procs = [await spawn("up", ["up", "--services", "echo,alerts"], up_env, tmp_path)]
        else:
            procs = []
            for name, argv, extra in (
                ("gateway", ["gateway"], gateway_env),
                ("echo", ["service", "echo"], {}),
                ("alerts", ["service", "alerts"], {}),
            ):
                # As in containers: each process gets only its own .creds file.
                creds = issue_for(authority, name).write(tmp_path / "creds" / f"{name}.creds")
                own = {**env, **extra, "BOTBUS_NATS_CREDS": str(creds)}
                procs.append(await spawn(name, argv, own, tmp_path))
        ready = asyncio.Event()  # the gateway routes /echo and /newchannel

        async def collect(p: Proc) -> None:
            assert p.proc.stdout is not None
            while raw := await p.proc.stdout.readline():
                lines.append(f"{p.name}| {raw.decode(errors='replace').rstrip()}")
                registered = [ln for ln in lines if "registry: service" in ln]
                if all(any(s in ln for ln in registered) for s in ("echo", "alerts")):
                    ready.set()

        readers = [asyncio.create_task(collect(p)) for p in procs]
        user = SandboxClient(quiet_sandbox.base_url)
        try:
            async with asyncio.timeout(WAIT):
                await ready.wait()
            await reply_containing(user, bot.id, "/echo are secrets safe", "are secrets safe")
            # The configured secret is the one the webhook accepts.
            update = {
                "update_id": 777001,
                "message": {
                    "message_id": 1,
                    "date": 0,
                    "chat": {"id": ADMIN, "type": "private"},
                    "from": {"id": ADMIN, "is_bot": False, "first_name": "Ada"},
                    "text": "hello",
                },
            }
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://127.0.0.1:{hook_port}/hook",
                    json=update,
                    headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET},
                ) as resp:
                    assert resp.status == 200
                created = await reply_containing(
                    user, bot.id, "/newchannel sensors Greenhouse sensors", "Bearer"
                )
                match = re.search(r"Bearer (\S+?)'", created)
                assert match, created
                channel_token = match[1]
                async with http.post(
                    f"http://127.0.0.1:{alerts_port}/alerts/sensors",
                    json={"title": "Frost", "text": "-2 C"},
                    headers={"Authorization": f"Bearer {channel_token}"},
                ) as resp:
                    assert resp.status == 202
        except BaseException:
            print("\n".join(lines[-60:]))  # what the run said, for the failure report
            raise
        finally:
            await user.close()
            for p in procs:
                if p.proc.returncode is None:
                    p.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                for p in procs:
                    await p.proc.wait()
                await asyncio.gather(*readers)
    output = "\n".join(lines)
    assert any("Set Bot API URL" in line and "***" in line for line in lines), (
        "the run did not log at DEBUG the line that used to carry the token"
    )
    secrets = {
        "bot token": TOKEN,
        "bot token's secret half": TOKEN.partition(":")[2],
        "webhook secret": WEBHOOK_SECRET,
        "channel token": channel_token,
        **{
            f"NATS seed of {path.stem}": Credentials.read(path).seed
            for path in authority_dir(broker_settings).glob("**/*.creds")
        },
        **{
            f"NATS seed of {path.stem}": Credentials.read(path).seed
            for path in (tmp_path / "creds").glob("*.creds")
        },
    }
    leaked = {what: value for what, value in secrets.items() if value in output}
    assert not leaked, f"secrets in the logs: {sorted(leaked)}"
