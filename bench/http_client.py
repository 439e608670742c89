"""PTB's HTTP transport: HTTPXRequest against botbus's AiohttpRequest.

A PTB ``Bot`` sends ``sendMessage`` to the sandbox (flood limits off, in its
own process so that only the client's CPU is counted here) from ``--callers``
concurrent callers, ``--n`` calls each. For each transport the script prints
calls per second and the client process's CPU seconds per 1,000 calls; the
rounds alternate the transports so that a drifting machine load hits both.

    python bench/http_client.py [--n 300] [--callers 64] [--rounds 2]

Run it on an otherwise idle machine: CPU time is what it compares.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

import telegram
import uvloop
from telegram.request import BaseRequest, HTTPXRequest

from botbus.gateway.http import AiohttpRequest
from botbus.sandbox import Limits, SandboxServer

FIRST_CHAT = 100_000  # user ids of the callers' chats
WARMUP_CALLS = 2  # per caller, not measured: opens the connections


@dataclass(frozen=True)
class Target:
    """Where the sandbox listens and the bot registered there."""

    api_url: str
    token: str


def _sandbox_process(conn: Connection, chats: int) -> None:
    """Child process: a sandbox with limits off and ``chats`` private chats, until told to stop."""

    async def serve() -> None:
        server = SandboxServer(Limits(enabled=False))
        await server.start()
        registered = server.add_bot(username="http_bench_bot")
        state = server.state(registered.id)
        for uid in range(FIRST_CHAT, FIRST_CHAT + chats):
            state.private_chat(state.user({"id": uid}))
        conn.send(Target(server.api_url, registered.token))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop()

    uvloop.run(serve())


@dataclass(frozen=True)
class Result:
    """One measured round of one transport."""

    name: str
    calls: int
    seconds: float
    cpu_seconds: float

    @property
    def per_second(self) -> float:
        """Calls completed per wall-clock second."""
        return self.calls / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        """Client CPU seconds spent per 1,000 calls."""
        return self.cpu_seconds * 1000 / self.calls


async def measure(
    name: str, make: Callable[[], BaseRequest], target: Target, callers: int, n: int
) -> Result:
    """``callers`` concurrent callers each sending ``n`` messages to their own chat."""
    bot = telegram.Bot(target.token, base_url=target.api_url, request=make())

    async def caller(chat_id: int, calls: int) -> None:
        for i in range(calls):
            await bot.send_message(chat_id, f"bench {i}")

    async with bot:
        chats = range(FIRST_CHAT, FIRST_CHAT + callers)
        await asyncio.gather(*(caller(chat, WARMUP_CALLS) for chat in chats))
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(caller(chat, n) for chat in chats))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Result(name, callers * n, seconds, cpu)


TRANSPORTS: dict[str, Callable[[int], BaseRequest]] = {
    "HTTPXRequest": lambda pool: HTTPXRequest(connection_pool_size=pool),
    "AiohttpRequest": lambda pool: AiohttpRequest(connection_pool_size=pool),
}


async def run(callers: int, n: int, rounds: int, pool: int) -> list[Result]:
    """Every transport ``rounds`` times, alternating, against one sandbox process."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_sandbox_process, args=(child, callers), daemon=True)
    process.start()
    loop = asyncio.get_running_loop()
    results: list[Result] = []
    try:
        target: Target = await loop.run_in_executor(None, parent.recv)
        for round_no in range(rounds):
            names = list(TRANSPORTS) if round_no % 2 == 0 else list(reversed(TRANSPORTS))
            for name in names:
                factory = TRANSPORTS[name]
                result = await measure(name, lambda f=factory: f(pool), target, callers, n)
                print(
                    f"  round {round_no + 1} {name:15s} {result.per_second:8.0f} calls/s  "
                    f"{result.cpu_per_1000:6.3f} CPU s/1000 calls",
                    flush=True,
                )
                results.append(result)
    finally:
        parent.send("stop")
        await loop.run_in_executor(None, process.join, 30)
    return results


def main() -> None:
    """Parse arguments, run the rounds, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="calls per caller per round")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per transport")
    parser.add_argument("--pool", type=int, default=128, help="connection_pool_size of both")
    args = parser.parse_args()
    print(
        f"sendMessage through a PTB Bot, {args.callers} callers x {args.n} calls, "
        f"pool {args.pool}, uvloop; sandbox in its own process, limits off; "
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    results = uvloop.run(run(args.callers, args.n, args.rounds, args.pool))
    print("median of the rounds:")
    medians: dict[str, tuple[float, float]] = {}
    for name in TRANSPORTS:
        mine = [r for r in results if r.name == name]
        medians[name] = (
            statistics.median(r.per_second for r in mine),
            statistics.median(r.cpu_per_1000 for r in mine),
        )
        rate, cpu = medians[name]
        print(f"  {name:15s} {rate:8.0f} calls/s  {cpu:6.3f} CPU s/1000 calls")
    (httpx_rate, httpx_cpu), (aio_rate, aio_cpu) = medians.values()
    print(
        f"AiohttpRequest vs HTTPXRequest: {aio_rate / httpx_rate:.2f}x calls/s, "
        f"{aio_cpu / httpx_cpu:.2f}x CPU per call; "
        f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
