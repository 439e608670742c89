"""Benchmark: callback round trip of the games service at a steady press rate.

Two measurements, both with a throwaway nats-server and one games instance:

* end to end (default): the sandbox (local Telegram) + the real gateway. A
  user presses a trivia answer in the sandbox; the clock stops when the
  edited board is visible in the sandbox (an ``edit`` event in the chat).
  The sandbox's flood limits are off: this measures our path, not Telegram's
  pacing. The gateway and the games service each run in their own process,
  as deployed (``--one-process`` runs them in this one); this process is
  Telegram and its users. A bus tap splits each round trip into ingest
  (sandbox -> gateway -> BOTBUS_IN), service, and relay (BOTBUS_OUT ->
  gateway -> sandbox).
* bus level (``--bus``, or when the gateway/sandbox are not importable):
  publish an InboundCallback to BOTBUS_IN as the gateway would; the clock
  stops when the EditText is stored in BOTBUS_OUT.

Presses are spread over ``--players`` private chats, each playing 20-question
trivia rounds (every answer edits the board), paced to ``--rate`` presses/s
overall. Prints p50/p90/p99/max. Target: p99 <= 50 ms at 50 presses/s.

    python bench/games.py [--rate 50] [--seconds 20] [--players 50] [--bus] [--one-process]

Everything shares the machine's cores: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from botbus import subjects
from botbus.connect import connect_options
from botbus.models import (
    EditText,
    InboundCallback,
    InboundCommand,
    SendText,
    decode_action,
    decode_as,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.provision import Provisioner
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from botbus.topology import ensure_topology
from services.games.service import service as games_service

REPO = Path(__file__).resolve().parents[1]
TARGET_P99_MS = 50.0
ROUND = 20  # questions per trivia round: presses before a new round is needed
WAIT = 10.0  # seconds a single round trip may take before it counts as lost

Press = Callable[[int], Coroutine[Any, Any, float]]  # player index -> round-trip seconds


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- end to end: sandbox + gateway ------------------------------------------------


class Stages:
    """Where the time of each end-to-end press goes, from the bus's point of view.

    A core-NATS tap (admin user) timestamps each InboundCallback the gateway
    publishes and each EditText the service publishes, so a round trip splits
    into: sandbox -> gateway -> BOTBUS_IN ("ingest"), the service ("service"),
    and BOTBUS_OUT -> gateway -> edit visible in the sandbox ("relay").
    """

    def __init__(self) -> None:
        self.pressed: dict[str, float] = {}  # callback_query_id -> press sent
        self.seen: dict[str, float] = {}  # callback_query_id -> end (edit visible)
        self.inbound: dict[str, tuple[float, str]] = {}  # query id -> (time, correlation)
        self.edited: dict[str, float] = {}  # correlation id -> EditText published

    async def on_inbound(self, msg: Msg) -> None:
        """Timestamp a press as the gateway published it."""
        now = time.perf_counter()
        cb = decode_as(InboundCallback, msg.data)
        self.inbound[cb.callback_query_id] = (now, cb.correlation_id)

    async def on_outbound(self, msg: Msg) -> None:
        """Timestamp the service's board edits."""
        now = time.perf_counter()
        action = decode_action(msg.data)
        if isinstance(action, EditText) and action.correlation_id:
            self.edited.setdefault(action.correlation_id, now)

    def report(self) -> list[str]:
        """Percentiles of each stage over the presses seen end to end."""
        ingest, service, relay = [], [], []
        for query, end in self.seen.items():
            if query not in self.inbound:
                continue
            t_in, correlation = self.inbound[query]
            if correlation not in self.edited:
                continue
            ingest.append((t_in - self.pressed[query]) * 1000)
            service.append((self.edited[correlation] - t_in) * 1000)
            relay.append((end - self.edited[correlation]) * 1000)
        lines = []
        for name, values in (("ingest", ingest), ("service", service), ("relay", relay)):
            if values:
                lines.append(
                    f"  {name:<8} p50={percentile(values, 50):6.1f} ms  "
                    f"p99={percentile(values, 99):6.1f} ms  max={max(values):6.1f} ms"
                )
        return lines


async def spawn(module: str, env_extra: dict[str, str]) -> asyncio.subprocess.Process:
    """``python -m <module>`` as its own process, settings from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "BOTBUS_"))}
    env.update(BOTBUS_LOG_LEVEL="WARNING", **env_extra)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL
    )


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the process drains), then wait for it."""
    if proc.returncode is None:
        proc.terminate()
    await proc.wait()


async def until_games_answer(user: Any, bot_id: int) -> None:
    """Wait until /leaderboard is answered by the games service through the gateway."""
    probe, seen = 699_999, 0
    for _ in range(30):
        await user.send_text(bot_id, "/leaderboard", user=probe)
        with contextlib.suppress(TimeoutError):
            for event in await user.wait_for(bot_id, probe, kind="message", after=seen, timeout=1):
                seen = event["seq"]
                if event["message"]["text"].startswith("No scores yet"):
                    return
    raise RuntimeError("the games service never answered through the gateway")


@contextlib.asynccontextmanager
async def sandbox_path(
    settings: Settings, nats_url: str, players: int, *, separate: bool = True
) -> AsyncIterator[tuple[Press, Callable[[], list[str]]]]:
    """Sandbox + gateway + games; yields a function timing one press, and a stage report.

    With ``separate`` the gateway and the games service each run in their own
    process, as deployed (this process is Telegram and its users); otherwise
    all of it shares this process's event loop.
    """
    from botbus.gateway import Gateway
    from botbus.sandbox import Limits, SandboxClient, SandboxServer

    sandbox = SandboxServer(Limits(enabled=False))
    await sandbox.start()
    bot = sandbox.add_bot(username="botbus_bench_bot")
    env = {
        "BOTBUS_DATA_DIR": str(settings.data_dir),
        "NATS_URL": nats_url,
        "TELEGRAM_BOT_TOKEN": bot.token,
        "TELEGRAM_API_URL": sandbox.api_url,
        "BOTBUS_GATEWAY_HTTP": "127.0.0.1:0",
    }
    gw_settings = load_settings(_env_file=None, **env)
    user = SandboxClient(sandbox.base_url)
    login = connect_options(settings, "admin")
    tap: Client = await nats.connect(
        nats_url,
        **login,
    )
    stages = Stages()
    await tap.subscribe(subjects.inbound_callback("games"), cb=stages.on_inbound)
    await tap.subscribe(subjects.outbound_of("games"), cb=stages.on_outbound)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if separate:
                for module in ("botbus.gateway", "services.games"):
                    proc = await spawn(module, env)
                    stack.push_async_callback(stop_process, proc)
                await until_games_answer(user, bot.id)
            else:
                await stack.enter_async_context(
                    Gateway(gw_settings, poll_timeout=5, discovery_interval=0.3)
                )
                await stack.enter_async_context(
                    ServiceApp(games_service, gw_settings, url=nats_url)
                )
                await until_games_answer(user, bot.id)
            boards: dict[int, tuple[int, int]] = {}  # player -> (message id, last seq)
            left = dict.fromkeys(range(players), 0)

            async def new_round(player: int) -> None:
                uid = 700_000 + player
                await user.send_text(bot.id, f"/trivia {ROUND}", user=uid)
                after = boards.get(player, (0, 0))[1]
                [event] = await user.wait_for(
                    bot.id, uid, kind="message", after=after, timeout=WAIT
                )
                boards[player] = (event["message"]["message_id"], event["seq"])
                left[player] = ROUND

            await asyncio.gather(*(new_round(p) for p in range(players)))

            async def press(player: int) -> float:
                if left[player] == 0:
                    await new_round(player)
                uid = 700_000 + player
                message_id, after = boards[player]
                started = time.perf_counter()
                sent = await user.press(
                    bot.id, chat_id=uid, message_id=message_id, user=uid, label="1"
                )
                [event] = await user.wait_for(bot.id, uid, kind="edit", after=after, timeout=WAIT)
                ended = time.perf_counter()
                elapsed = ended - started
                stages.pressed[sent["callback_query_id"]] = started
                stages.seen[sent["callback_query_id"]] = ended
                boards[player] = (message_id, event["seq"])
                left[player] -= 1
                return elapsed

            yield press, stages.report
    finally:
        await tap.drain()
        await user.close()
        await sandbox.stop()


# -- bus level ------------------------------------------------------------------


class Outbox:
    """Wakes up whoever waits for the EditText answering a given press."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[EditText]] = {}
        self.sent: dict[str, asyncio.Future[SendText]] = {}

    async def on_action(self, msg: Msg) -> None:
        """Resolve the future of the inbound this action answers."""
        action = decode_action(msg.data)
        key = action.correlation_id or ""
        if isinstance(action, EditText) and key in self.waiting:
            self.waiting.pop(key).set_result(action)
        elif isinstance(action, SendText) and key in self.sent:
            self.sent.pop(key).set_result(action)


@contextlib.asynccontextmanager
async def bus_path(
    settings: Settings, nats_url: str, players: int
) -> AsyncIterator[tuple[Press, Callable[[], list[str]]]]:
    """Games on the bus alone; yields a function timing one press (no stage report)."""
    login = connect_options(settings, "admin")
    nc: Client = await nats.connect(
        nats_url,
        **login,
    )
    js = nc.jetstream()
    await ensure_topology(js)
    # The service's buckets are made by the provisioner, which the gateway runs.
    await Provisioner(nc).start()  # answers until nc closes
    outbox = Outbox()
    sub = await js.subscribe(
        subjects.outbound_of("games"),
        stream=subjects.STREAM_OUTBOUND,
        cb=outbox.on_action,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    ids = itertools.count(1)
    boards: dict[int, tuple[str, str]] = {}  # player -> (gid, first option data prefix)
    moves = dict.fromkeys(range(players), ROUND)

    def base(player: int) -> dict[str, object]:
        uid = next(ids)
        chat = 800_000 + player
        return {
            "correlation_id": f"9:{uid}",
            "bot_id": 9,
            "update_id": uid,
            "chat": {"id": chat},
            "user": {"id": chat, "first_name": f"P{player}"},
        }

    async def new_round(player: int) -> None:
        fields = base(player)
        cmd = InboundCommand.model_validate(
            {**fields, "message_id": 1, "service": "games", "command": "trivia", "args": "20"}
        )
        future = asyncio.get_running_loop().create_future()
        outbox.sent[cmd.correlation_id] = future
        subject = subjects.inbound_command("games", "trivia")
        await js.publish(subject, encode(cmd), headers={"Nats-Msg-Id": cmd.correlation_id})
        board: SendText = await asyncio.wait_for(future, WAIT)
        assert board.keyboard is not None and board.keyboard.rows[0][0].callback_data
        boards[player] = (board.keyboard.rows[0][0].callback_data.split(":")[2], "")
        moves[player] = 0

    try:
        async with ServiceApp(games_service, settings, url=nats_url):
            await asyncio.gather(*(new_round(p) for p in range(players)))

            async def press(player: int) -> float:
                if moves[player] >= ROUND:
                    await new_round(player)
                gid = boards[player][0]
                fields = base(player)
                cb = InboundCallback.model_validate(
                    {
                        **fields,
                        "callback_query_id": f"q{fields['update_id']}",
                        "message_id": 1,
                        "service": "games",
                        "data": f"q:{gid}:{moves[player]}:0",
                    }
                )
                future = asyncio.get_running_loop().create_future()
                outbox.waiting[cb.correlation_id] = future
                started = time.perf_counter()
                await js.publish(
                    subjects.inbound_callback("games"),
                    encode(cb),
                    headers={"Nats-Msg-Id": cb.correlation_id},
                )
                await asyncio.wait_for(future, WAIT)
                moves[player] += 1
                return time.perf_counter() - started

            yield press, list
    finally:
        await sub.unsubscribe()
        await nc.drain()


# -- driver -----------------------------------------------------------------------


async def drive(press: Press, rate: float, seconds: float, players: int) -> list[float]:
    """Fire presses at ``rate``/s, round-robin over players (one in flight per player)."""
    busy: dict[int, asyncio.Task[float]] = {}
    results: list[float] = []
    lost = 0
    total = int(rate * seconds)
    interval = 1.0 / rate
    start = time.perf_counter()
    tasks: list[asyncio.Task[float]] = []
    for n in range(total):
        player = n % players
        if player in busy:
            # The previous press of this player must finish first (its board changes).
            with contextlib.suppress(TimeoutError, AssertionError):
                await busy[player]
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(press(player))
        busy[player] = task
        tasks.append(task)
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            lost += 1
        else:
            results.append(outcome)
    achieved = total / (time.perf_counter() - start)
    print(f"sent {total} presses at {achieved:.1f}/s over {players} chats; lost: {lost}")
    return results


async def run(args: argparse.Namespace) -> int:
    """Start the broker and the chosen path, drive the presses, print the figures."""
    mode = "bus"
    if not args.bus:
        if all(importlib.util.find_spec(m) for m in ("botbus.gateway", "botbus.sandbox")):
            mode = "sandbox"
        else:
            print("gateway/sandbox not available; measuring at the bus level")
    with tempfile.TemporaryDirectory(prefix="botbus-bench-games-") as tmp:
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(Path(tmp) / "data"))
        async with NatsServer(Path(tmp) / "nats", settings) as server:
            path = (
                sandbox_path(settings, server.url, args.players, separate=not args.one_process)
                if mode == "sandbox"
                else bus_path(settings, server.url, args.players)
            )
            async with path as (press, report):
                await drive(press, args.rate, 2.0, args.players)  # warm-up, not counted
                results = await drive(press, args.rate, args.seconds, args.players)
                stage_lines = report()
    if not results:
        print("no press completed")
        return 1
    ms = [r * 1000 for r in results]
    where = (
        "press in the sandbox -> edited board visible in the sandbox (via gateway + bus)"
        if mode == "sandbox"
        else "InboundCallback published -> EditText stored in BOTBUS_OUT (bus level, no gateway)"
    )
    if mode == "sandbox":
        where += "; " + (
            "gateway + games in this process"
            if args.one_process
            else "gateway and games each in its own process"
        )
    print(f"round trip: {where}")
    print(
        f"n={len(ms)}  p50={percentile(ms, 50):.1f} ms  p90={percentile(ms, 90):.1f} ms  "
        f"p99={percentile(ms, 99):.1f} ms  max={max(ms):.1f} ms  mean={statistics.fmean(ms):.1f} ms"
    )
    if stage_lines:
        print("where the time goes (same presses):")
        for line in stage_lines:
            print(line)
    verdict = "MET" if percentile(ms, 99) <= TARGET_P99_MS else "MISSED"
    print(f"target p99 <= {TARGET_P99_MS:.0f} ms at {args.rate:g} presses/s: {verdict}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=50.0, help="presses per second overall")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--players", type=int, default=50, help="chats pressing in turn")
    parser.add_argument("--bus", action="store_true", help="measure at the bus level only")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="run the gateway and the service in this process (one event loop for everything)",
    )
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
