"""One nats-server vs a three-node JetStream cluster, with nodes killed -9; gateway failover.

Each run starts the broker (1 node, or a cluster of 3), the sandbox (flood
limits off), the gateway and the echo service as separate processes, lets
``--updates`` users each send one ``/echo N`` as fast as the sandbox takes
them, and waits for every answer. Faulted runs kill -9 a node twice while
the requests flow (on the cluster: the node leading BOTBUS_IN, then, once it
is back and caught up, the one leading BOTBUS_OUT; on one node: the node,
which is an outage) and restart it two seconds later. The script prints,
side by side, updates/s (answers / time from the first request to the last
answer), lost and duplicated answers, and the longest pause between two
answers (what a user waiting at that moment saw).

Then the gateway failover: two gateways for the bot on the cluster, the
active one killed -9 mid-stream; it prints how long the standby took to take
the lease, the longest pause in answers, and lost/duplicated answers.

    python bench/cluster.py [--updates 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import uvloop
from _procs import spawn, stop
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError

from botbus import subjects
from botbus.connect import close_within, connect
from botbus.gateway.lease import lease_key
from botbus.natsserver import NatsCluster
from botbus.sandbox import Limits, SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings, load_settings
from botbus.supervisor import child_env

ROOT = Path(__file__).resolve().parents[1]
FIRST_USER = 100_000
SENDERS = 16  # concurrent users writing
OUTAGE = 2.0  # seconds a killed node stays down
ANSWER_TIMEOUT = 120.0  # seconds to wait for the last answer


@dataclass
class Result:
    """What one run measured."""

    label: str
    rate: float  # answers per second
    lost: int
    duplicated: int
    pause: float  # longest stretch without a new answer, in seconds
    note: str = ""


class System:
    """Broker, sandbox, gateway(s) and echo for one run."""

    def __init__(self, workdir: Path, nodes: int, gateways: int = 1) -> None:
        self.workdir = workdir
        self.settings: Settings = load_settings(
            _env_file=None, BOTBUS_DATA_DIR=str(workdir / "data")
        )
        self.cluster = NatsCluster(workdir / "nats", self.settings, size=nodes)
        self.sandbox = SandboxServer(Limits(enabled=False))
        self.gateways = gateways
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.admin: Client | None = None
        self.user: SandboxClient | None = None
        self.bot: SandboxBot | None = None

    async def start(self) -> None:
        await self.cluster.start()
        await self.sandbox.start()
        self.bot = self.sandbox.add_bot(username="bench_cluster_bot")
        self.user = SandboxClient(self.sandbox.base_url)
        self.admin = await connect(self.settings, "admin", url=self.cluster.url)
        for n in range(self.gateways):
            await self.start_gateway(f"gateway-{n}")
        self.procs["echo"] = await spawn(
            [sys.executable, "-m", "services.echo"],
            child_env(self.settings, "echo", self.cluster.url),
            self.workdir / "echo.log",
        )
        # Ready when a first /echo made the round trip.
        sent = await self.user.send_text(self.bot.id, "/echo ready", user={"id": 1})
        await self.user.wait_for(self.bot.id, sent["chat_id"], kind="message", timeout=90)

    async def start_gateway(self, name: str) -> None:
        assert self.bot is not None
        env = child_env(
            self.settings,
            "gateway",
            self.cluster.url,
            {
                "TELEGRAM_BOT_TOKEN": self.bot.token,
                "TELEGRAM_API_URL": self.sandbox.api_url,
                "BOTBUS_GATEWAY_HTTP": "127.0.0.1:0",
                "BOTBUS_RATE_GLOBAL": "1000",
                "BOTBUS_DATA_DIR": str(self.workdir / name),
            },
        )
        env.pop("BOTBUS_WEBHOOK_URL", None)
        self.procs[name] = await spawn(
            [sys.executable, "-m", "botbus.gateway"], env, self.workdir / f"{name}.log"
        )

    async def stop(self) -> None:
        for proc in self.procs.values():
            await stop(proc)
        if self.admin is not None:
            await close_within(self.admin, 5)
        if self.user is not None:
            await self.user.close()
        await self.sandbox.stop()
        await self.cluster.stop()

    async def leader_index(self, stream: str) -> int:
        """Index of the node leading ``stream`` once every replica is current."""
        if len(self.cluster.nodes) == 1:
            return 0
        assert self.admin is not None
        while True:
            with contextlib.suppress(NatsError, TimeoutError):
                info = await self.admin.jetstream(timeout=2).stream_info(stream)
                c = info.cluster
                if c and c.leader and all(r.current for r in c.replicas or []):
                    return int(c.leader.removeprefix("n")) - 1
            await asyncio.sleep(0.2)

    async def kill_node(self, stream: str) -> None:
        index = await self.leader_index(stream)
        self.cluster.kill(index)
        await asyncio.sleep(OUTAGE)
        await self.cluster.restart(index)

    async def holder(self) -> str | None:
        assert self.admin is not None and self.bot is not None
        kv = await self.admin.jetstream().key_value(subjects.KV_GATEWAY_LEASE)
        try:
            entry = await kv.get(lease_key(self.bot.id))
        except KeyNotFoundError:
            return None
        return (entry.value or b"").decode() or None


async def send_all(user: SandboxClient, bot: SandboxBot, updates: int) -> None:
    queue = iter(range(updates))

    async def sender() -> None:
        for n in queue:
            uid = FIRST_USER + n
            await user.send_text(bot.id, f"/echo {n}", user={"id": uid, "first_name": "b"})

    await asyncio.gather(*(sender() for _ in range(SENDERS)))


async def sent_messages(system: System) -> int:
    assert system.user is not None and system.bot is not None
    stats = await system.user.stats(system.bot.id)
    return int(stats["methods"].get("sendMessage", 0))


async def answers(
    system: System, updates: int, started: float, baseline: int
) -> tuple[Counter[int], float]:
    """Wait until the bot sent ``updates`` more messages; then read every chat once.

    Returns the answers per request and the seconds from ``started`` to the
    moment the last expected answer was sent (or the timeout).
    """
    assert system.user is not None and system.bot is not None
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while True:  # polled: the sandbox's counters are the finish line
        if await sent_messages(system) - baseline >= updates or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    took = time.monotonic() - started
    await asyncio.sleep(1.0)  # a duplicate in flight at that moment still counts
    seen: Counter[int] = Counter()
    missing = list(range(updates))
    while True:
        # Duplicates count towards the finish line above: requests still unanswered
        # then are waited for (until the timeout) before they count as lost.
        for n in missing:
            events = await system.user.messages(system.bot.id, FIRST_USER + n)
            count = sum(1 for e in events if e["kind"] == "message")
            if count:
                seen[n] = count
        missing = [n for n in range(updates) if n not in seen]
        if not missing or time.monotonic() > deadline:
            break
        took = time.monotonic() - started
        await asyncio.sleep(0.5)
    return seen, took


async def longest_pause(system: System, done: asyncio.Event) -> float:
    """Longest stretch (s) between two answers, until ``done`` is set."""
    last_count, last_change, longest = -1, time.monotonic(), 0.0
    while not done.is_set():
        count = await sent_messages(system)
        now = time.monotonic()
        if count != last_count:
            longest = max(longest, now - last_change)
            last_count, last_change = count, now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.1)
    return longest


async def run(nodes: int, faults: bool, updates: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        system = System(Path(tmp), nodes)
        try:
            await system.start()
            assert system.user is not None and system.bot is not None
            baseline = await sent_messages(system)
            started = time.monotonic()
            done = asyncio.Event()
            watching = asyncio.create_task(longest_pause(system, done))
            sending = asyncio.create_task(send_all(system.user, system.bot, updates))
            if faults:
                await system.kill_node(subjects.STREAM_INBOUND)
                await system.kill_node(subjects.STREAM_OUTBOUND)
            await sending
            seen, took = await answers(system, updates, started, baseline)
            done.set()
            pause = await watching
        finally:
            await system.stop()
    lost = updates - len(seen)
    duplicated = sum(seen.values()) - len(seen)
    label = f"{nodes} node{'s' if nodes > 1 else ''}, " + ("2 kills" if faults else "no fault")
    return Result(label, len(seen) / took, lost, duplicated, pause)


async def failover(updates: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        system = System(Path(tmp), 3, gateways=2)
        try:
            await system.start()
            assert system.user is not None and system.bot is not None
            active = await system.holder()
            assert active is not None
            baseline = await sent_messages(system)
            started = time.monotonic()
            done = asyncio.Event()
            watching = asyncio.create_task(longest_pause(system, done))
            sending = asyncio.create_task(send_all(system.user, system.bot, updates))
            await asyncio.sleep(1.0)  # mid-stream
            name = next(n for n in system.procs if active.endswith(n))
            system.procs[name].kill()
            killed = time.monotonic()
            while True:  # polled: the lease bucket says who is active
                if (holder := await system.holder()) not in (None, active):
                    break
                await asyncio.sleep(0.05)
            takeover = time.monotonic() - killed
            await sending
            seen, took = await answers(system, updates, started, baseline)
            done.set()
            pause = await watching
        finally:
            await system.stop()
    lost = updates - len(seen)
    duplicated = sum(seen.values()) - len(seen)
    note = f"standby took the lease {takeover:.1f}s after kill -9 of the active one ({holder})"
    label = "3 nodes, 2 gateways, active killed"
    return Result(label, len(seen) / took, lost, duplicated, pause, note)


async def main(args: argparse.Namespace) -> None:
    results = []
    for nodes, faults in ((1, False), (3, False), (1, True), (3, True)):
        print(f"running: {nodes} node(s), {'kills' if faults else 'no fault'} ...", flush=True)
        results.append(await run(nodes, faults, args.updates))
    print("running: gateway failover ...", flush=True)
    results.append(await failover(args.updates))
    print(f"\n{args.updates} /echo requests, each answered through gateway + NATS + echo")
    header = f"{'run':<36} {'updates/s':>10} {'lost':>6} {'duplicated':>11} {'longest pause':>14}"
    print(header)
    for r in results:
        print(f"{r.label:<36} {r.rate:>10.1f} {r.lost:>6} {r.duplicated:>11} {r.pause:>13.1f}s")
    for r in results:
        if r.note:
            print(f"{r.label}: {r.note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=1000, help="requests per run")
    uvloop.run(main(parser.parse_args()))
