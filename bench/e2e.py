"""Round-trip latency: user -> gateway -> NATS -> echo -> gateway -> user.

Compared with the monolith a user would otherwise write: one
python-telegram-bot ``Application`` answering ``/echo`` itself. Both run as
separate processes against the same sandbox (flood limits off), under the
same steady offered load; the script prints p50/p99 of each and the
difference, i.e. what the bus costs. The gateway sends through its own aiohttp
transport (``botbus.gateway.http``), which is cheaper than PTB's default httpx,
so a third variant runs the monolith with that transport too and the script
prints the difference to it as well: the bus's own cost, transport aside.

    python bench/e2e.py [--rate 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from _procs import spawn, stop

from botbus import topology
from botbus.connect import connect_options
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxBot, SandboxClient, SandboxServer
from botbus.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
USERS = 500  # distinct users: each writes every 10 s, well under the 1 msg/s per-chat limit
WARMUP = 2.0  # seconds of load not measured


async def monolith() -> None:
    """The child process of the monolith variant: PTB answering /echo itself."""
    from telegram import Update
    from telegram.ext import Application, CommandHandler, ContextTypes

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(" ".join(context.args or []) or "(nothing)")

    builder = (
        Application.builder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(os.environ["TELEGRAM_API_URL"])
        .concurrent_updates(True)
    )
    if os.environ.get("BENCH_TRANSPORT") == "aiohttp":
        # The same HTTP transport as the gateway, to show what the bus itself costs.
        from botbus.gateway.http import AiohttpRequest

        builder.request(AiohttpRequest(connection_pool_size=128))
        builder.get_updates_request(AiohttpRequest(connection_pool_size=2, read_timeout=20.0))
    else:
        builder.connection_pool_size(128)
    app = builder.build()
    app.add_handler(CommandHandler("echo", echo))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=10)
        await asyncio.Event().wait()


async def measure(
    client: SandboxClient, bot: SandboxBot, rate: float, seconds: float
) -> list[float]:
    """Offer ``rate`` /echo per second for ``seconds``; return latencies (ms) after warm-up."""
    cursors: dict[int, int] = {}
    latencies: list[float] = []
    started = time.perf_counter()

    async def one(n: int) -> None:
        uid = 50_000 + n % USERS
        t0 = time.perf_counter()
        sent = await client.send_text(bot.id, f"/echo {n}", user={"id": uid, "first_name": "b"})
        chat = int(sent["chat_id"])
        while True:
            events = await client.wait_for(
                bot.id, chat, after=cursors.get(chat, 0), kind="message", timeout=30
            )
            cursors[chat] = max(cursors.get(chat, 0), events[0]["seq"])
            if events[0]["message"]["text"] == str(n):
                break
        if t0 - started >= WARMUP:
            latencies.append((time.perf_counter() - t0) * 1000)

    tasks = []
    total = int(rate * (seconds + WARMUP))
    for n in range(total):
        target = started + n / rate
        await asyncio.sleep(max(0.0, target - time.perf_counter()))
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return latencies


async def wait_ready(client: SandboxClient, bot: SandboxBot, timeout: float = 30.0) -> None:
    """Until /echo is answered (the gateway has discovered echo, or PTB is polling)."""
    deadline = time.monotonic() + timeout
    uid = 49_999
    while time.monotonic() < deadline:
        sent = await client.send_text(bot.id, "/echo ready", user={"id": uid, "first_name": "w"})
        try:
            events = await client.wait_for(bot.id, sent["chat_id"], count=1, timeout=3)
        except TimeoutError:
            continue
        texts = [e["message"]["text"] for e in await client.messages(bot.id, sent["chat_id"])]
        if "ready" in texts:
            return
        del events
        uid -= 1
    raise RuntimeError("the bot never answered /echo; see the logs in the bench directory")


def summary(name: str, values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<22} n={len(values):5d}  p50={p50:7.2f} ms  p99={p99:7.2f} ms")
    return p50, p99


async def run_variant(
    name: str,
    workdir: Path,
    nats_url: str | None,
    rate: float,
    seconds: float,
    transport: str = "httpx",
) -> list[float]:
    sandbox = SandboxServer(Limits(enabled=False))
    await sandbox.start()
    bot = sandbox.add_bot(username=f"bench_{name}_bot")
    env = dict(os.environ)
    env.update(
        TELEGRAM_BOT_TOKEN=bot.token,
        TELEGRAM_API_URL=sandbox.api_url,
        BOTBUS_GATEWAY_HTTP="off",
        BOTBUS_FLOOD_BURST="1000",
        BOTBUS_FLOOD_RATE="1000",
        # The offered 50 req/s is above Telegram's 30 msg/s default budget, which
        # the scheduler would (rightly) enforce; this bench measures the bus's
        # latency, and the monolith it is compared with has no limiter either.
        BOTBUS_RATE_GLOBAL="1000",
        BOTBUS_LOG_LEVEL="WARNING",
        BOTBUS_DATA_DIR=str(workdir / "data"),
        PYTHONPATH=str(ROOT),
        BENCH_TRANSPORT=transport,
    )
    procs: list[asyncio.subprocess.Process] = []
    try:
        if nats_url is None:
            procs.append(
                await spawn([sys.executable, __file__, "--monolith"], env, workdir / "mono.log")
            )
        else:
            env["NATS_URL"] = nats_url
            procs.append(
                await spawn([sys.executable, "-m", "botbus.gateway"], env, workdir / "gw.log")
            )
            echo_env = {k: v for k, v in env.items() if k != "TELEGRAM_BOT_TOKEN"}
            procs.append(
                await spawn([sys.executable, "-m", "services.echo"], echo_env, workdir / "echo.log")
            )
        async with SandboxClient(sandbox.base_url) as client:
            await wait_ready(client, bot)
            return await measure(client, bot, rate, seconds)
    finally:
        for proc in procs:
            await stop(proc)
        await sandbox.stop()


async def main(rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="botbus-bench-") as tmp:
        workdir = Path(tmp)
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(workdir / "data"))
        async with NatsServer(workdir / "nats", settings) as server:
            import nats

            login = connect_options(settings, "admin")
            nc = await nats.connect(
                server.url,
                **login,
            )
            await topology.ensure_topology(nc.jetstream())
            await nc.close()
            print(
                f"offered load: {rate:g} /echo per second for {seconds:g}s (+{WARMUP:g}s warm-up)"
            )
            mono = await run_variant("monolith", workdir, None, rate, seconds)
            lean = await run_variant("lean", workdir, None, rate, seconds, "aiohttp")
            bus = await run_variant("bus", workdir, server.url, rate, seconds)
        p50_m, p99_m = summary("monolith (PTB only)", mono)
        p50_l, p99_l = summary("monolith, aiohttp", lean)
        p50_b, p99_b = summary("botbus (gateway+NATS)", bus)
        print(
            f"bus adds:              p50 {p50_b - p50_m:+.2f} ms (target <= 3)   "
            f"p99 {p99_b - p99_m:+.2f} ms (target <= 10)"
        )
        # The gateway talks to Telegram through its own aiohttp transport; against a
        # monolith given the same transport, what remains is the bus's own cost.
        print(f"vs the same transport: p50 {p50_b - p50_l:+.2f} ms   p99 {p99_b - p99_l:+.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--monolith", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The same fast event loop for the load generator, the monolith and the gateway.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(monolith() if args.monolith else main(args.rate, args.seconds))
