"""Throughput of the service SDK: /echo commands through real echo instances.

Prints, each figure with the load average of the machine next to it:

- latency: commands published one after another to one in-process echo,
  publish-to-stored-reply percentiles (what a user waiting for a reply sees);
- throughput: a backlog of --commands commands drained by one, then two
  echo instances running as separate processes (as deployed), commands/s
  from the moment the instances start to the last stored reply, the share
  each instance handled (micro stats) and the cores each process used;
  then the ratio two/one. Every reply is checked: none lost, none doubled.
- cost: CPU milliseconds per command, for the instances together and for
  the broker. Echo's handler does next to nothing, so the instances' figure
  is the SDK's own overhead per message (receive, decode, context, reply
  publish awaited, ack, stats); the goal is at most 0.15 ms. It is what
  scaling depends on: on a 2-core machine two instances cannot beat one,
  as instances and broker already share both cores.

The broker and the benchmark run on the same machine, so two instances can
be at most twice one only if there are cores to spare; the load average says
whether there were.

Run: .venv/bin/python bench/sdk_echo.py [--commands N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from botbus import subjects
from botbus.connect import connect_options
from botbus.models import InboundCommand, decode_action, encode
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from botbus.topology import ensure_topology

DEFAULT_COMMANDS = 10_000  # backlog drained by the instances
LATENCY_COMMANDS = 500  # published one at a time for the latency figures
PUBLISH_BATCH = 500  # publishes awaited together while filling the backlog
DRAIN_LIMIT = 300.0  # seconds the backlog may take before the run is declared stuck


def command(i: int) -> InboundCommand:
    """The i-th /echo command, over 50 chats."""
    return InboundCommand.model_validate(
        {
            "correlation_id": f"1:{i}",
            "bot_id": 1,
            "update_id": i,
            "chat": {"id": i % 50},
            "user": {"id": i % 50},
            "message_id": i,
            "service": "echo",
            "command": "echo",
            "args": f"message {i}",
        }
    )


def _loadavg() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _connect(server: NatsServer, settings: Settings, user: str) -> Client:
    return await nats.connect(server.url, **connect_options(settings, user))


async def _publish(js: Any, i: int) -> None:
    cmd = command(i)
    await js.publish(
        subjects.inbound_command("echo", "echo"),
        encode(cmd),
        headers={"Nats-Msg-Id": cmd.correlation_id},
    )


# -- latency: one in-process instance, one command at a time -------------------------


async def latency(concurrency: int | None) -> str:
    """Publish-to-stored percentiles of commands sent one after another."""
    from services.echo.service import service

    if concurrency:
        service.concurrency = concurrency
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=tmp)
        async with NatsServer(Path(tmp) / "nats", settings) as server:
            admin = await _connect(server, settings, "admin")
            gw = await _connect(server, settings, "gateway")
            await ensure_topology(admin.jetstream())
            stored: asyncio.Queue[float] = asyncio.Queue()

            async def on_reply(msg: Msg) -> None:
                stored.put_nowait(time.perf_counter())

            await admin.subscribe(subjects.outbound_of("echo"), cb=on_reply)
            js = gw.jetstream()
            latencies: list[float] = []
            async with ServiceApp(service, settings, url=server.url):
                for i in range(LATENCY_COMMANDS):
                    sent = time.perf_counter()
                    await _publish(js, i)
                    latencies.append((await asyncio.wait_for(stored.get(), 10) - sent) * 1000)
            await gw.close()
            await admin.close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return (
        f"{LATENCY_COMMANDS} commands one at a time, publish->stored ms: "
        f"p50 {q[49]:.1f}  p95 {q[94]:.1f}  max {latencies[-1]:.1f}"
    )


# -- throughput: a backlog drained by N instances in separate processes ---------------


def _instance(
    settings: Settings, url: str, concurrency: int | None, events: tuple[Event, Event, Event]
) -> None:
    """One echo instance, as `python -m services.echo` runs it, started on ``go``."""
    from services.echo.service import service

    ready, go, stop = events
    if concurrency:
        service.concurrency = concurrency

    async def run() -> None:
        ready.set()  # imported: starting now takes milliseconds, not seconds
        await asyncio.to_thread(go.wait)
        async with ServiceApp(service, settings, url=url):
            await asyncio.to_thread(stop.wait)  # the parent decides when to stop

    asyncio.run(run())


async def throughput(instances: int, commands: int, concurrency: int | None) -> tuple[float, str]:
    """Commands/s of ``instances`` processes draining a backlog; the rate and a line."""
    from services.echo.service import service

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=f"{tmp}/data")
        server = NatsServer(Path(tmp) / "nats", settings)
        await server.start()
        ctx = mp.get_context("spawn")
        go, stop = ctx.Event(), ctx.Event()
        procs = []
        try:
            admin = await _connect(server, settings, "admin")
            gw = await _connect(server, settings, "gateway")
            await ensure_topology(admin.jetstream())
            # The durable consumer starts at "new messages": create it before the backlog.
            async with ServiceApp(service, settings, url=server.url):
                pass
            replies: set[str] = set()
            doubled = 0
            done = asyncio.Event()

            async def on_reply(msg: Msg) -> None:
                nonlocal doubled
                correlation = decode_action(msg.data).correlation_id or ""
                doubled += correlation in replies
                replies.add(correlation)
                if len(replies) == commands:
                    done.set()

            await admin.subscribe(subjects.outbound_of("echo"), cb=on_reply)
            js = gw.jetstream()
            for first in range(0, commands, PUBLISH_BATCH):
                last = min(first + PUBLISH_BATCH, commands)
                await asyncio.gather(*(_publish(js, i) for i in range(first, last)))
            readies = []
            for _ in range(instances):
                ready = ctx.Event()
                proc = ctx.Process(
                    target=_instance, args=(settings, server.url, concurrency, (ready, go, stop))
                )
                proc.start()
                procs.append(proc)
                readies.append(ready)
            for ready in readies:
                if not await asyncio.to_thread(ready.wait, 120):
                    raise RuntimeError("an echo instance did not start within 120 s")
            pids = {"broker": server.pid}
            pids.update({f"instance{n + 1}": p.pid for n, p in enumerate(procs)})
            live = {name: pid for name, pid in pids.items() if pid}
            cpu_before = {name: _cpu_seconds(pid) for name, pid in live.items()}
            load = _loadavg()
            began = time.perf_counter()
            go.set()
            await asyncio.wait_for(done.wait(), DRAIN_LIMIT)
            took = time.perf_counter() - began
            cpu = {name: _cpu_seconds(live[name]) - before for name, before in cpu_before.items()}
            cores = {name: used / took for name, used in cpu.items()}
            shares = await _shares(admin, instances, commands)
            await gw.close()
            await admin.close()
        finally:
            stop.set()
            go.set()
            for proc in procs:
                proc.join(timeout=60)
            await server.stop()
    rate = commands / took
    check = "none lost" + (f", {doubled} DOUBLED" if doubled else ", none doubled")
    used = ", ".join(f"{name} {share:.2f}" for name, share in cores.items())
    per_msg = {name: 1000 * seconds / commands for name, seconds in cpu.items()}
    instance_ms = sum(ms for name, ms in per_msg.items() if name != "broker")
    return rate, (
        f"{rate:,.0f} cmd/s  [{load}]  ({check}; handled per instance: {shares}; "
        f"cores used: {used})\n"
        f"    CPU per command: instance(s) {instance_ms:.3f} ms, "
        f"broker {per_msg.get('broker', 0.0):.3f} ms"
    )


async def _shares(nc: Client, instances: int, commands: int) -> str:
    """How many commands each instance handled, from its micro stats."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        counts = await _handled(nc, instances)
        # Counters move just after the ack, a moment after the reply is stored.
        if sum(counts) >= commands or loop.time() > deadline:
            return " / ".join(str(n) for n in sorted(counts, reverse=True)) or "?"
        await asyncio.sleep(0.05)


async def _handled(nc: Client, instances: int) -> list[int]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"{subjects.SRV_STATS}.echo", b"", reply=inbox)
    counts: list[int] = []
    try:
        while len(counts) < instances:
            msg = await sub.next_msg(timeout=2)
            stats = json.loads(msg.data)
            counts.append(sum(e["num_requests"] for e in stats["endpoints"]))
    except TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return counts


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=DEFAULT_COMMANDS)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="handlers per instance (default: echo's)"
    )
    args = parser.parse_args()

    print(f"== latency (one in-process echo)  [{_loadavg()}]")
    print(asyncio.run(latency(args.concurrency)))
    print(f"== throughput: a backlog of {args.commands} commands, cpus={mp.cpu_count()}")
    rates = []
    for instances in (1, 2):
        rate, line = asyncio.run(throughput(instances, args.commands, args.concurrency))
        rates.append(rate)
        label = "one instance: " if instances == 1 else "two instances:"
        print(f"{label} {line}  [after: {_loadavg()}]")
    print(f"two instances = x{rates[1] / rates[0]:.2f} of one")


if __name__ == "__main__":
    main()
