"""Broadcast benchmark: the outbound scheduler against the sandbox's Telegram limits.

A python-telegram-bot ``Bot`` sends, over real HTTP, through
:class:`~botbus.gateway.scheduler.OutboundScheduler` to an in-process sandbox
that enforces Telegram's flood limits. For each mode it broadcasts N bulk
messages to N chats while users keep writing (interactive replies injected at
``--interactive-rate`` per second), and prints:

* achieved sends/s (bulk + interactive) vs the configured budget (target >= 95%),
* 429 answers from the sandbox (target 0),
* p50 / p99 latency of the interactive replies, submit -> Telegram accepted
  (target p99 <= 1.5 s).

Modes: ``default`` (30 msg/s; the sandbox at Telegram's defaults) and ``paid``
(``allow_paid_broadcast``: 1000 msg/s; the sandbox's global limit raised to
match). Runtime: N / 30 s for the default mode, so the default N = 10,000
takes about 5.6 minutes, plus ~15 s for paid mode. ``--n 2000`` takes ~70 s.

``--through gateway`` measures the whole system instead: a nats-server, the
gateway (``python -m botbus.gateway``, budget from ``BOTBUS_RATE_GLOBAL`` /
``BOTBUS_PAID_BROADCAST``) and the echo service (``python -m services.echo``)
as processes; the broadcast is N bulk ``SendText`` actions published on
BOTBUS_OUT by the ``alerts`` NATS user, and the interactive replies are users
writing ``/echo`` to the sandbox, timed until the reply shows up there.

``--through ptb`` runs the same workload against the usual alternative: one
python-telegram-bot process (``bench/_ptb_monolith.py``: ``Application`` with
long polling, ``AIORateLimiter`` at the same budget, an ``/echo`` handler, and
a ``/broadcast`` command that hands every alert to the limiter at once).
``--through compare`` runs botbus's gateway and the PTB monolith one after the
other on the same workload and prints their figures side by side.

    .venv/bin/python bench/broadcast.py [--n 10000] [--mode default|paid|both]
        [--through scheduler|gateway|ptb|compare]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

import uvloop
from _procs import cpu_seconds, spawn, stop
from nats.aio.client import Client
from telegram import Bot
from telegram.warnings import PTBDeprecationWarning

from botbus import subjects
from botbus.connect import connect
from botbus.gateway.app import API_POOL_SIZE
from botbus.gateway.http import AiohttpRequest
from botbus.gateway.scheduler import Budget, OutboundJob, OutboundScheduler, Outcome
from botbus.models import Priority, SendText, encode
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxClient, SandboxServer
from botbus.settings import load_settings

FIRST_SUBSCRIBER = 1_000_000  # user ids of broadcast recipients start here
FIRST_WRITER = 10_000  # user ids of the people writing to the bot during the broadcast
WRITERS = 200  # distinct writers, so no single chat's 1/s limit shapes the replies
ROOT = Path(__file__).resolve().parents[1]
PUBLISH_CHUNK = 500  # concurrent publishes while loading the broadcast into BOTBUS_OUT
SENT_POLL = 0.05  # seconds between two looks at how many messages the sandbox got
# Seconds a user waits for an answer: a reply queued behind a whole broadcast
# (the PTB monolith's limiter is first come, first served) takes that long.
REPLY_TIMEOUT = 900.0
STALLED_AFTER = 30.0  # seconds without a send: what is missing was dropped
WRITER_SESSIONS = 4  # HTTP sessions the writers share (WRITERS / 4 long polls each at most)
ADMIN = 9_999  # the user who sends /broadcast to the PTB monolith
PTB_RETRIES = 3  # AIORateLimiter's retries after a 429 (its default, 0, drops the message)


@dataclass
class Result:
    """Figures of one run."""

    mode: str
    n: int
    budget: float
    elapsed: float
    sent: int
    too_many_requests: int | None  # None: no sandbox in the loop (dry run)
    latencies: list[float]
    failed: int
    busiest_second: int | None = None  # most sends in any 1 s window (dry run)
    cores: str = ""  # CPU used by each process during the run (through the gateway)

    def report(self) -> str:
        """The lines printed for this run."""
        rate = self.sent / self.elapsed if self.elapsed > 0 else 0.0
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        worst = lat[-1] if lat else float("nan")
        return "\n".join(
            [
                f"== {self.mode}: {self.n} bulk messages to {self.n} chats",
                f"   elapsed              {self.elapsed:8.1f} s",
                f"   achieved sends/s     {rate:8.1f} of {self.budget:.0f} budget "
                f"({100 * rate / self.budget:.1f}%, target >= 95%)",
                f"   429 answers          {self.too_many_requests:8d} (target 0)"
                if self.too_many_requests is not None
                else f"   busiest second       {self.busiest_second:8d} sends (budget "
                f"{self.budget:.0f})",
                f"   interactive replies  {len(lat):8d}: p50 {p50:.3f} s, p99 {p99:.3f} s, "
                f"max {worst:.3f} s (target p99 <= 1.5 s)",
                f"   not sent             {self.failed:8d}",
                *([f"   cores used           {self.cores}"] if self.cores else []),
            ]
        )


def make_job(bot: Bot, chat_id: int, text: str, priority: Priority) -> OutboundJob:
    """A job sending ``text`` to ``chat_id`` with PTB."""

    async def send() -> object:
        return await bot.send_message(chat_id, text)

    return OutboundJob(chat_id, chat_id < 0, priority, send, key=text)


@dataclass(frozen=True)
class SandboxInfo:
    """Where the sandbox listens and the bot it registered."""

    base_url: str
    api_url: str
    token: str
    bot_id: int
    pid: int  # the process serving the sandbox


def _chat_ids(n: int) -> list[int]:
    return [
        *range(FIRST_SUBSCRIBER, FIRST_SUBSCRIBER + n),
        *range(FIRST_WRITER, FIRST_WRITER + WRITERS),
    ]


async def _open_sandbox(server: SandboxServer, n: int) -> SandboxInfo:
    await server.start()
    registered = server.add_bot(username="bench_bot")
    # Chats exist once a user has written; creating 10,000 of them in-process
    # keeps the set-up out of the measurement (the sends all go over HTTP).
    state = server.state(registered.id)
    for uid in _chat_ids(n):
        state.private_chat(state.user({"id": uid}))
    return SandboxInfo(
        server.base_url, server.api_url, registered.token, registered.id, os.getpid()
    )


def _sandbox_process(conn: Connection, global_limit: int, n: int) -> None:
    """Child process: serve the sandbox until the parent says stop."""

    async def serve() -> None:
        server = SandboxServer(Limits(global_per_second=global_limit))
        conn.send(await _open_sandbox(server, n))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop()

    # Telegram runs elsewhere; its stand-in should take as little of this
    # machine's CPU from the gateway as it can.
    uvloop.run(serve())


@contextlib.asynccontextmanager
async def sandbox(global_limit: int, n: int, *, inline: bool) -> AsyncIterator[SandboxInfo]:
    """A sandbox with ``global_limit`` msg/s: in this process, or in a child process.

    One Python process cannot be both ends of 1000 HTTP calls a second (both
    sides share one core), so by default the sandbox gets its own process, as
    Telegram would be elsewhere.
    """
    if inline:
        server = SandboxServer(Limits(global_per_second=global_limit))
        try:
            yield await _open_sandbox(server, n)
        finally:
            await server.stop()
        return
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_sandbox_process, args=(child, global_limit, n), daemon=True
    )
    process.start()
    loop = asyncio.get_running_loop()
    try:
        info: SandboxInfo = await loop.run_in_executor(None, parent.recv)
        yield info
    finally:
        parent.send("stop")
        await loop.run_in_executor(None, process.join, 30)


JobFactory = Callable[[int, str, Priority], OutboundJob]


async def broadcast(
    scheduler: OutboundScheduler, n: int, interactive_rate: float, make: JobFactory
) -> tuple[list[Outcome], list[float], float]:
    """Broadcast to ``n`` chats while injecting replies; (outcomes, reply latencies, seconds)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    started = loop.time()
    bulk = [
        scheduler.submit(make(uid, f"alert {uid}", "bulk"))
        for uid in range(FIRST_SUBSCRIBER, FIRST_SUBSCRIBER + n)
    ]
    everything = asyncio.gather(*bulk)
    replies: list[asyncio.Task[None]] = []

    async def reply(chat_id: int) -> None:
        submitted = loop.time()
        outcome = await scheduler.submit(make(chat_id, f"reply {submitted:.3f}", "interactive"))
        if outcome.status == "sent":
            latencies.append(loop.time() - submitted)

    writer = 0
    while not everything.done():
        replies.append(asyncio.create_task(reply(FIRST_WRITER + writer % WRITERS)))
        writer += 1
        await asyncio.wait([everything], timeout=1 / interactive_rate)
    outcomes: list[Outcome] = everything.result()
    await asyncio.gather(*replies)
    return outcomes, latencies, loop.time() - started


async def run(
    mode: str, n: int, interactive_rate: float, *, inline: bool, max_in_flight: int
) -> Result:
    """Broadcast ``n`` messages in ``mode`` ("default" or "paid") over HTTP and measure."""
    budget = Budget(paid_broadcast=mode == "paid")
    async with sandbox(int(budget.overall_per_second), n, inline=inline) as info:
        # The gateway's own transport, so this measures what the gateway would do.
        bot = Bot(
            info.token,
            base_url=info.api_url,
            request=AiohttpRequest(connection_pool_size=API_POOL_SIZE, pool_timeout=10.0),
        )
        client = SandboxClient(info.base_url)
        try:
            await bot.initialize()
            async with OutboundScheduler(budget, max_in_flight=max_in_flight) as scheduler:
                outcomes, latencies, elapsed = await broadcast(
                    scheduler, n, interactive_rate, partial(make_job, bot)
                )
            stats = await client.stats(info.bot_id)
        finally:
            await client.close()
            await bot.shutdown()
    return Result(
        mode=mode,
        n=n,
        budget=budget.overall_per_second,
        elapsed=elapsed,
        sent=sum(o.status == "sent" for o in outcomes) + len(latencies),
        too_many_requests=int(stats["too_many_requests"]),
        latencies=latencies,
        failed=sum(o.status != "sent" for o in outcomes),
    )


async def run_dry(mode: str, n: int, interactive_rate: float, *, max_in_flight: int) -> Result:
    """The scheduler alone: each send is a no-op, so its own ceiling shows.

    No sandbox answers here, so instead of 429s the report gives the most sends
    seen in any one-second window (it must not exceed the budget).
    """
    budget = Budget(paid_broadcast=mode == "paid")
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []

    def make(chat_id: int, text: str, priority: Priority) -> OutboundJob:
        async def send() -> None:
            sent_at.append(loop.time())

        return OutboundJob(chat_id, chat_id < 0, priority, send, key=text)

    async with OutboundScheduler(budget, max_in_flight=max_in_flight) as scheduler:
        outcomes, latencies, elapsed = await broadcast(scheduler, n, interactive_rate, make)
    sent_at.sort()
    busiest, first = 0, 0
    for last, at in enumerate(sent_at):
        while sent_at[first] <= at - 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return Result(
        mode=f"{mode} (dry: no HTTP, scheduler only)",
        n=n,
        budget=budget.overall_per_second,
        elapsed=elapsed,
        sent=len(sent_at),
        too_many_requests=None,
        latencies=latencies,
        failed=sum(o.status != "sent" for o in outcomes),
        busiest_second=busiest,
    )


async def _echo_once(client: SandboxClient, bot_id: int, uid: int, text: str) -> float:
    """``uid`` writes ``/echo text``; seconds until the reply is in the chat."""
    cursor = 0
    began = time.monotonic()
    await client.send_text(bot_id, f"/echo {text}", user={"id": uid, "first_name": "w"})
    while True:
        events = await client.wait_for(
            bot_id, uid, after=cursor, kind="message", timeout=REPLY_TIMEOUT
        )
        cursor = events[0]["seq"]
        if events[0]["message"]["text"] == text:
            return time.monotonic() - began


async def _wait_ready(client: SandboxClient, bot_id: int, workdir: Path) -> None:
    """Until the gateway has discovered echo and answers /echo."""
    for attempt in range(30):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_echo_once(client, bot_id, 9_000 + attempt, "ready"), 3)
            return
    raise RuntimeError(f"the gateway never answered /echo; see the logs in {workdir}")


async def run_gateway(mode: str, n: int, interactive_rate: float) -> Result:
    """The whole system: broadcast ``n`` bulk actions on BOTBUS_OUT while users write /echo."""
    budget = Budget(paid_broadcast=mode == "paid")
    with tempfile.TemporaryDirectory(prefix="botbus-bench-") as tmp:
        workdir = Path(tmp)
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(workdir / "data"))
        async with (
            NatsServer(workdir / "nats", settings) as server,
            sandbox(int(budget.overall_per_second), n, inline=False) as info,
        ):
            settings = load_settings(
                _env_file=None, BOTBUS_DATA_DIR=str(workdir / "data"), NATS_URL=server.url
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("BOTBUS_")}
            env.update(
                NATS_URL=server.url,
                TELEGRAM_API_URL=info.api_url,
                BOTBUS_GATEWAY_HTTP="off",
                BOTBUS_FLOOD_RATE="1000",
                BOTBUS_FLOOD_BURST="1000",
                BOTBUS_LOG_LEVEL="WARNING",
                BOTBUS_DATA_DIR=str(workdir / "data"),
                BOTBUS_RATE_GLOBAL=str(budget.global_per_second),
                BOTBUS_PAID_BROADCAST="true" if budget.paid_broadcast else "false",
                PYTHONPATH=str(ROOT),
            )
            gw = await spawn(
                [sys.executable, "-m", "botbus.gateway"],
                {**env, "TELEGRAM_BOT_TOKEN": info.token},
                workdir / "gateway.log",
            )
            echo = await spawn([sys.executable, "-m", "services.echo"], env, workdir / "echo.log")
            alerts = await connect(settings, "alerts")
            client = SandboxClient(info.base_url)
            try:
                await _wait_ready(client, info.bot_id, workdir)
                before = int((await client.stats(info.bot_id))["methods"].get("sendMessage", 0))
                pids = {
                    "gateway": gw.pid,
                    "echo": echo.pid,
                    "nats": server.pid or 0,
                    "sandbox": info.pid,
                    "bench": os.getpid(),
                }
                return await _broadcast_through(
                    client,
                    _publish_alerts(alerts, n),
                    info.bot_id,
                    f"{mode} (botbus: gateway + echo over NATS)",
                    n,
                    interactive_rate,
                    budget,
                    before,
                    pids,
                )
            finally:
                await client.close()
                await alerts.close()
                await stop(gw)
                await stop(echo)


def _publish_alerts(alerts: Client, n: int) -> Callable[[], Awaitable[None]]:
    """The gateway's broadcast: ``n`` bulk SendText actions of the alerts service."""
    js = alerts.jetstream()

    async def publish(chat_id: int) -> None:
        action = SendText(
            service="alerts",
            chat_id=chat_id,
            idempotency_key=f"bench-{chat_id}",
            text=f"alert {chat_id}",
            priority="bulk",
        )
        await js.publish(
            subjects.outbound("alerts", "bulk"),
            encode(action),
            headers={"Nats-Msg-Id": action.idempotency_key},
        )

    async def start() -> None:
        chats = list(range(FIRST_SUBSCRIBER, FIRST_SUBSCRIBER + n))
        for i in range(0, n, PUBLISH_CHUNK):
            await asyncio.gather(*(publish(c) for c in chats[i : i + PUBLISH_CHUNK]))

    return start


async def _broadcast_through(
    client: SandboxClient,
    start_broadcast: Callable[[], Awaitable[None]],
    bot_id: int,
    mode: str,
    n: int,
    interactive_rate: float,
    budget: Budget,
    before: int,
    pids: dict[str, int],
) -> Result:
    # Writers wait on their own sessions (a long poll holds a connection, and a
    # session has 100), so the stats below never queue behind them.
    writers = [SandboxClient(client.base_url) for _ in range(WRITER_SESSIONS)]
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    await start_broadcast()
    latencies: list[float] = []
    replies: list[asyncio.Task[None]] = []
    waiting: set[int] = set()  # writers still waiting for their last answer

    async def reply(uid: int, k: int) -> None:
        try:
            session = writers[uid % WRITER_SESSIONS]
            latencies.append(await _echo_once(session, bot_id, uid, f"r{k}"))
        finally:
            waiting.discard(uid)

    async def sent() -> int:
        stats = await client.stats(bot_id)
        return int(stats["methods"].get("sendMessage", 0)) - before

    async def users_write() -> None:
        for k in itertools.count():
            uid = FIRST_WRITER + k % WRITERS
            if uid not in waiting:  # a user waits for an answer before writing again
                waiting.add(uid)
                replies.append(asyncio.create_task(reply(uid, k)))
            await asyncio.sleep(1 / interactive_rate)

    writing = asyncio.create_task(users_write())
    # The end is noticed within SENT_POLL (polling only as often as users write
    # would overstate the elapsed time by up to a writer's interval).
    # The sandbox is another process: only polling its stats can tell.
    try:
        count, progress_at = 0, time.monotonic()
        while True:
            now_sent = await sent()
            ended = time.monotonic()
            if now_sent >= n + len(replies):
                break
            if now_sent != count:
                count, progress_at = now_sent, ended
            elif ended - progress_at > STALLED_AFTER:
                # Some messages will never come (the sender dropped them): the
                # broadcast ended when the last one went out.
                ended = progress_at
                break
            await asyncio.sleep(SENT_POLL)
        elapsed = ended - started
        wall = time.monotonic() - started  # CPU shares over all of it, stall included
        used = {name: (cpu_seconds(pid) - cpu_before[name]) / wall for name, pid in pids.items()}
        writing.cancel()
        # An answer the sender dropped never comes: those users stop waiting.
        _, lost = await asyncio.wait(replies, timeout=STALLED_AFTER) if replies else ((), ())
        for task in lost:
            task.cancel()
    finally:
        writing.cancel()
        for task in replies:
            task.cancel()
        for session in writers:
            await session.close()
    stats = await client.stats(bot_id)
    total = int(stats["methods"].get("sendMessage", 0)) - before
    return Result(
        mode=mode,
        n=n,
        budget=budget.overall_per_second,
        elapsed=elapsed,
        sent=total,
        too_many_requests=int(stats["too_many_requests"]),
        latencies=latencies,
        failed=max(n + len(replies) - total, 0),
        cores=", ".join(f"{name} {share:.2f}" for name, share in used.items())
        + f" (of {os.cpu_count()}; load {' '.join(f'{x:.2f}' for x in os.getloadavg())})",
    )


async def run_ptb(mode: str, n: int, interactive_rate: float) -> Result:
    """The same workload against one python-telegram-bot process with AIORateLimiter."""
    budget = Budget(paid_broadcast=mode == "paid")
    with tempfile.TemporaryDirectory(prefix="botbus-bench-ptb-") as tmp:
        workdir = Path(tmp)
        async with sandbox(int(budget.overall_per_second), n, inline=False) as info:
            env = {k: v for k, v in os.environ.items() if not k.startswith("BOTBUS_")}
            env.update(
                TELEGRAM_BOT_TOKEN=info.token,
                TELEGRAM_API_URL=info.api_url,
                BENCH_SUBSCRIBERS=f"{FIRST_SUBSCRIBER}:{n}",
                BENCH_RATE=str(budget.overall_per_second),
                BENCH_RETRIES=str(PTB_RETRIES),
            )
            monolith = await spawn(
                [sys.executable, str(ROOT / "bench" / "_ptb_monolith.py")],
                env,
                workdir / "ptb.log",
            )
            client = SandboxClient(info.base_url)

            async def start() -> None:
                await client.send_text(
                    info.bot_id, "/broadcast", user={"id": ADMIN, "first_name": "admin"}
                )

            try:
                await _wait_ready(client, info.bot_id, workdir)
                before = int((await client.stats(info.bot_id))["methods"].get("sendMessage", 0))
                pids = {"ptb": monolith.pid, "sandbox": info.pid, "bench": os.getpid()}
                return await _broadcast_through(
                    client,
                    start,
                    info.bot_id,
                    f"{mode} (python-telegram-bot monolith, AIORateLimiter)",
                    n,
                    interactive_rate,
                    budget,
                    before,
                    pids,
                )
            finally:
                await client.close()
                await stop(monolith)


def main() -> None:
    """Parse arguments, run the modes, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="subscribers (default 10000)")
    parser.add_argument("--mode", choices=["default", "paid", "both"], default="both")
    parser.add_argument(
        "--interactive-rate", type=float, default=2.0, help="replies injected per second"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=4,
        help="Telegram calls in flight at once (default 4: the local sandbox answers in about "
        "a millisecond, so 4 calls in flight carry 1000/s)",
    )
    parser.add_argument(
        "--dry",
        action="store_true",
        help="no sandbox, no HTTP: sends are no-ops, to show the scheduler's own ceiling",
    )
    parser.add_argument(
        "--inline",
        action="store_true",
        help="run the sandbox in this process (tops out near 900 calls/s on one core)",
    )
    parser.add_argument(
        "--through",
        choices=["scheduler", "gateway", "ptb", "compare"],
        default="scheduler",
        help="scheduler: the scheduler alone over HTTP; gateway: NATS + gateway + echo "
        "processes; ptb: a python-telegram-bot monolith with AIORateLimiter; compare: "
        "gateway, then ptb, on the same workload",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Reading RetryAfter.retry_after warns in PTB 22; the scheduler handles both types.
    warnings.filterwarnings("ignore", category=PTBDeprecationWarning)
    modes = ["default", "paid"] if args.mode == "both" else [args.mode]
    for mode in modes:
        jobs: list[Coroutine[object, object, Result]] = []
        if args.through in ("gateway", "compare"):
            jobs.append(run_gateway(mode, args.n, args.interactive_rate))
        if args.through in ("ptb", "compare"):
            jobs.append(run_ptb(mode, args.n, args.interactive_rate))
        if args.through == "scheduler" and args.dry:
            jobs.append(
                run_dry(mode, args.n, args.interactive_rate, max_in_flight=args.max_in_flight)
            )
        elif args.through == "scheduler":
            jobs.append(
                run(
                    mode,
                    args.n,
                    args.interactive_rate,
                    inline=args.inline,
                    max_in_flight=args.max_in_flight,
                )
            )
        for job in jobs:
            print(asyncio.run(job).report(), flush=True)


if __name__ == "__main__":
    main()
