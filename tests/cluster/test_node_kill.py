"""Kill -9 cluster nodes while 1,000 /echo requests flow through the real system.

Gateway and echo run as their own processes (as `botbus up` starts them)
against a three-node JetStream cluster and the sandbox. Mid-stream the node
leading BOTBUS_IN is killed -9 and restarted; once it is back, the node
then leading BOTBUS_OUT is killed -9 and restarted too. Every request must
be answered (0 lost) and stored once; duplicated replies are counted and
reported (a send caught by a kill may be repeated, never lost).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects, topology
from botbus.connect import close_within, connect
from botbus.natsserver import NatsCluster
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings
from botbus.supervisor import child_env
from tests.gateway.test_crash import inbound_ids

REPO = Path(__file__).resolve().parents[2]
UPDATES = 1000
USERS = 200  # 5 requests each: well within Telegram's 1 msg/s per chat
SEND_RATE = 60.0  # requests per second offered by the users


async def spawn(argv: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=out, stderr=out, cwd=str(REPO)
        )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def stream_requests(user: SandboxClient, bot: SandboxBot) -> None:
    for n in range(UPDATES):
        uid = 20_000 + n % USERS
        await user.send_text(bot.id, f"/echo {n}", user={"id": uid, "first_name": f"u{uid}"})
        await asyncio.sleep(1 / SEND_RATE)


async def replies(user: SandboxClient, bot: SandboxBot) -> Counter[str]:
    seen: Counter[str] = Counter()
    for uid in range(20_000, 20_000 + USERS):
        for event in await user.messages(bot.id, uid):
            text = (event.get("message") or {}).get("text", "")
            if event["kind"] == "message" and text.isdigit():
                seen[text] += 1
    return seen


async def settled(nc: Client, stream: str) -> str:
    """Wait (bounded) until ``stream`` has a leader and every replica is current."""
    async with asyncio.timeout(30):
        while True:
            try:
                info = await nc.jetstream(timeout=2).stream_info(stream)
            except (NatsError, TimeoutError):
                info = None  # an election or our own reconnect in progress
            cluster = info.cluster if info else None
            if cluster and cluster.leader and all(r.current for r in cluster.replicas or []):
                return cluster.leader
            await asyncio.sleep(0.2)


async def kill_and_restart(cluster: NatsCluster, nc: Client, stream: str) -> str:
    """Kill -9 the node leading ``stream``, wait a moment, bring it back, let it catch up."""
    leader = await settled(nc, stream)
    index = int(leader.removeprefix("n")) - 1
    cluster.kill(index)
    await asyncio.sleep(2)  # the node stays dead this long: the outage itself
    await cluster.restart(index)
    for name in (subjects.STREAM_INBOUND, subjects.STREAM_OUTBOUND):
        await settled(nc, name)
    return leader


@pytest.mark.slow
async def test_nothing_lost_when_nodes_die(
    tmp_path: Path,
    nats_cluster: NatsCluster,
    settings: Settings,
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
) -> None:
    admin = await connect(settings, "admin", url=nats_cluster.url)
    js = admin.jetstream()
    await topology.ensure_topology(js)
    # Keeps interest in everything inbound so the test can count it afterwards.
    await js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(durable_name="test_all", ack_policy=AckPolicy.EXPLICIT),
    )
    gateway_env = child_env(
        settings,
        "gateway",
        nats_cluster.url,
        {
            "TELEGRAM_BOT_TOKEN": bot.token,
            "TELEGRAM_API_URL": quiet_sandbox.api_url,
            "BOTBUS_GATEWAY_HTTP": "127.0.0.1:0",
            "BOTBUS_RATE_GLOBAL": "300",
        },
    )
    gateway_env.pop("BOTBUS_WEBHOOK_URL", None)
    procs = [
        await spawn([sys.executable, "-m", "botbus.gateway"], gateway_env, tmp_path / "gw.log"),
        await spawn(
            [sys.executable, "-m", "services.echo"],
            child_env(settings, "echo", nats_cluster.url),
            tmp_path / "echo.log",
        ),
    ]
    killed: list[str] = []
    try:
        # Kills hit a running system: wait until a first /echo made the round trip.
        first = await user.send_text(bot.id, "/echo ready", user={"id": 19_999, "first_name": "r"})
        await user.wait_for(bot.id, first["chat_id"], kind="message", timeout=60)
        sender = asyncio.create_task(stream_requests(user, bot))
        await asyncio.wait({sender}, timeout=4)
        killed.append(await kill_and_restart(nats_cluster, admin, subjects.STREAM_INBOUND))
        await asyncio.wait({sender}, timeout=3)
        killed.append(await kill_and_restart(nats_cluster, admin, subjects.STREAM_OUTBOUND))
        await sender
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while len(seen := await replies(user, bot)) < UPDATES and loop.time() < deadline:
            await user.messages(bot.id, 20_000, after=10**9, timeout=1)  # paced wait
        ids = await inbound_ids(admin)
    finally:
        for proc in procs:
            await stop(proc)
        await close_within(admin, 5)
    lost = sorted(set(range(UPDATES)) - {int(t) for t in seen})
    duplicates = sum(seen.values()) - len(seen)
    print(f"\nkilled {killed}: {len(lost)} lost, {duplicates} duplicated replies of {UPDATES}")
    assert len(killed) == 2
    assert not lost, (lost[:20], (tmp_path / "gw.log").read_text()[-3000:])
    assert len(ids) == UPDATES and set(ids.values()) == {1}  # each update stored once
