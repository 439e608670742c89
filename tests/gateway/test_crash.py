"""Kill -9 the gateway, or restart NATS, while 500 updates stream in.

Afterwards every update is in BOTBUS_IN exactly once and every /echo got its
answer. A reply may be duplicated only when a kill fell between Telegram
accepting it and the gateway recording its key: the test counts those and
bounds them by the sends that can be in flight at a kill.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects, topology
from botbus.auth import credentials_for
from botbus.connect import connect_options
from botbus.gateway.scheduler import DEFAULT_MAX_IN_FLIGHT
from botbus.models import decode_inbound
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings

from .conftest import MiniService

UPDATES = 500
USERS = 50
SEND_RATE = 30.0  # updates per second offered by the users
# The scheduler's cap on calls in flight bounds the sends a kill can catch.
MAX_IN_FLIGHT_PER_KILL = DEFAULT_MAX_IN_FLIGHT


class GatewayProcess:
    """``python -m botbus.gateway`` as a child we can SIGKILL and restart."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.kills = 0

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "botbus.gateway",
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=str(self.log_path.parent),
        )
        log.close()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
            self.kills += 1

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                await self.kill()


def child_env(
    settings: Settings, nats_url: str, sandbox: SandboxServer, bot: SandboxBot
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NATS_URL=nats_url,
        TELEGRAM_BOT_TOKEN=bot.token,
        TELEGRAM_API_URL=sandbox.api_url,
        BOTBUS_GATEWAY_HTTP="127.0.0.1:0",
        BOTBUS_DATA_DIR=str(settings.data_dir),
        BOTBUS_LOG_LEVEL="INFO",
    )
    env.pop("BOTBUS_WEBHOOK_URL", None)
    # The gateway's identity, issued by the test broker's authority: a child given a
    # data directory of its own (the failover tests) still logs in as the gateway.
    creds = credentials_for(settings, "gateway")
    if creds is not None:
        env["BOTBUS_NATS_CREDS"] = str(creds)
    return env


@pytest.fixture
async def admin(nats_server: NatsServer, settings: Settings) -> AsyncIterator[Client]:
    login = connect_options(settings, "admin")
    nc = await nats.connect(
        nats_server.url,
        **login,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )
    js = nc.jetstream()
    await topology.ensure_topology(js)
    # Keeps interest in everything inbound so the test can count it afterwards.
    await js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(durable_name="test_all", ack_policy=AckPolicy.EXPLICIT),
    )
    try:
        yield nc
    finally:
        await nc.close()


async def stream_updates(user: SandboxClient, bot: SandboxBot) -> None:
    for n in range(UPDATES):
        uid = 10_000 + n % USERS
        await user.send_text(bot.id, f"/echo {n}", user={"id": uid, "first_name": f"u{uid}"})
        await asyncio.sleep(1 / SEND_RATE)


async def collect_replies(user: SandboxClient, bot: SandboxBot) -> Counter[str]:
    """Every numeric reply in every user's chat, with multiplicity."""
    seen: Counter[str] = Counter()
    for uid in range(10_000, 10_000 + USERS):
        for event in await user.messages(bot.id, uid):
            text = (event.get("message") or {}).get("text", "")
            if event["kind"] == "message" and text.isdigit():
                seen[text] += 1
    return seen


async def wait_all_replies(user: SandboxClient, bot: SandboxBot, timeout: float) -> Counter[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        seen = await collect_replies(user, bot)
        if len(seen) >= UPDATES:
            return seen
        if loop.time() > deadline:
            missing = sorted(set(range(UPDATES)) - {int(t) for t in seen})
            stats = await user.stats(bot.id)
            raise AssertionError(f"{len(missing)} /echo unanswered, e.g. {missing[:10]}; {stats}")
        await user.messages(bot.id, 10_000, after=10**9, timeout=0.5)  # paced wait


async def inbound_ids(nc: Client) -> Counter[str]:
    psub = await nc.jetstream().pull_subscribe(
        subjects.INBOUND_ALL, durable="test_all", stream=subjects.STREAM_INBOUND
    )
    ids: Counter[str] = Counter()
    while True:
        try:
            msgs = await psub.fetch(500, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):
            # nats-py raises the builtin TimeoutError when its no-wait probe alone
            # outlasts the timeout (a loaded machine): the stream is drained all the same.
            return ids
        for msg in msgs:
            ids[decode_inbound(msg.data).correlation_id] += 1


@pytest.mark.slow  # fault test: kills and restarts processes
async def test_gateway_killed_at_random_moments(
    tmp_path: Path,
    nats_server: NatsServer,
    settings: Settings,
    admin: Client,
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
) -> None:
    echo = MiniService(admin)
    await echo.start()
    gateway = GatewayProcess(
        child_env(settings, nats_server.url, quiet_sandbox, bot), tmp_path / "gateway.log"
    )
    await gateway.start()
    rng = random.Random(4)
    try:
        sender = asyncio.create_task(stream_updates(user, bot))
        while not sender.done():
            await asyncio.wait({sender}, timeout=rng.uniform(1.5, 4.0))
            await gateway.kill()
            await gateway.start()
        seen = await wait_all_replies(user, bot, timeout=40)
        ids = await inbound_ids(admin)
    finally:
        await gateway.stop()
        await echo.stop()
    duplicates = sum(seen.values()) - len(seen)
    print(f"\n{gateway.kills} kills: {duplicates} duplicated replies out of {UPDATES}")
    assert gateway.kills >= 3
    assert len(ids) == UPDATES and set(ids.values()) == {1}  # each update exactly once
    assert set(seen) == {str(n) for n in range(UPDATES)}  # every /echo answered
    assert duplicates <= gateway.kills * MAX_IN_FLIGHT_PER_KILL


@pytest.mark.slow  # fault test: kills and restarts processes
async def test_nats_restarted_mid_stream(
    tmp_path: Path,
    settings: Settings,
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
) -> None:
    server = NatsServer(tmp_path / "nats-restart", settings)
    await server.start()
    port = server.port
    login = connect_options(settings, "admin")
    nc = await nats.connect(
        server.url,
        **login,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )
    js = nc.jetstream()
    await topology.ensure_topology(js)
    await js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(durable_name="test_all", ack_policy=AckPolicy.EXPLICIT),
    )
    echo = MiniService(nc)
    await echo.start()
    gateway = GatewayProcess(
        child_env(settings, server.url, quiet_sandbox, bot), tmp_path / "gateway.log"
    )
    await gateway.start()
    restarts = 0
    try:
        sender = asyncio.create_task(stream_updates(user, bot))
        while not sender.done():
            await asyncio.wait({sender}, timeout=4.0)
            if sender.done():
                break
            await server.stop(timeout=5)  # SIGTERM: JetStream flushed, as an operator restart
            server = NatsServer(tmp_path / "nats-restart", settings, port=port)
            await server.start()
            restarts += 1
        seen = await wait_all_replies(user, bot, timeout=40)
        ids = await inbound_ids(nc)
    finally:
        await gateway.stop()
        await echo.stop()
        await nc.close()
        await server.stop()
    duplicates = sum(seen.values()) - len(seen)
    print(f"\n{restarts} NATS restarts: {duplicates} duplicated replies out of {UPDATES}")
    assert restarts >= 2
    assert len(ids) == UPDATES and set(ids.values()) == {1}
    assert set(seen) == {str(n) for n in range(UPDATES)}
