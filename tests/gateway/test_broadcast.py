"""Broadcasts through the real gateway, with the sandbox enforcing Telegram's limits.

Everything is real: a nats-server, the sandbox over HTTP, the ``Gateway`` (in
process, or ``python -m botbus.gateway`` when a test kills it) and bulk
``SendText`` actions published on BOTBUS_OUT by the ``alerts`` NATS user, as the
alerts service would.

Scaling: Telegram's global limit (30 msg/s) is raised to GLOBAL_RATE on BOTH
sides, the sandbox's limit and the gateway's ``BOTBUS_RATE_GLOBAL``, so a
2,000-chat broadcast takes ~10 s instead of ~67 s. The per-chat limit (1 msg/s,
burst 3) and the group limit (20 msg/min) are Telegram's own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from nats.aio.client import Client

from botbus import subjects, topology
from botbus.connect import connect
from botbus.gateway import Gateway
from botbus.gateway.scheduler import DEFAULT_MAX_IN_FLIGHT
from botbus.models import DeliveryEvent, SendText, decode_as, encode
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings
from tests.support.waiting import eventually

from .conftest import MiniService, connect_admin, gateway_settings, wait_until_live
from .factories import message_texts

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

GLOBAL_RATE = 200  # msg/s: Telegram's 30/s scaled up on both sides (see the module doc)
FIRST_SUBSCRIBER = 2_000_000
FIRST_WRITER = 30_000
PUBLISH_CHUNK = 250  # concurrent publishes while loading a broadcast


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture
async def limited_sandbox() -> AsyncIterator[SandboxServer]:
    """A sandbox enforcing Telegram's per-chat and group limits, global one scaled."""
    server = SandboxServer(Limits(global_per_second=GLOBAL_RATE))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def tg_bot(limited_sandbox: SandboxServer) -> SandboxBot:
    """The bot the gateway runs as."""
    return limited_sandbox.add_bot(username="botbus_broadcast_bot")


@pytest.fixture
async def tg_user(limited_sandbox: SandboxServer) -> AsyncIterator[SandboxClient]:
    """The users' side of the sandbox (and its statistics)."""
    async with SandboxClient(limited_sandbox.base_url) as client:
        yield client


@pytest.fixture
def bc_settings(
    tmp_path: Path, nats_server: NatsServer, limited_sandbox: SandboxServer, tg_bot: SandboxBot
) -> Settings:
    """Gateway settings with the global budget scaled like the sandbox's."""
    return gateway_settings(
        tmp_path, nats_server.url, limited_sandbox, tg_bot, BOTBUS_RATE_GLOBAL=GLOBAL_RATE
    )


def subscribers(n: int) -> list[int]:
    """Chat ids of ``n`` broadcast recipients."""
    return list(range(FIRST_SUBSCRIBER, FIRST_SUBSCRIBER + n))


def make_chats(sandbox: SandboxServer, bot: SandboxBot, chat_ids: Iterable[int]) -> None:
    """Private chats that exist as if each user had once written to the bot.

    Set up in process: creating thousands of chats over HTTP would also create
    thousands of updates for the gateway, which is not what is measured.
    """
    state = sandbox.state(bot.id)
    for uid in chat_ids:
        state.private_chat(state.user({"id": uid}))


async def publish_bulk(nc: Client, chat_ids: list[int], tag: str) -> None:
    """Bulk SendText actions of the alerts service, one per chat, in chat order."""
    js = nc.jetstream()

    async def one(chat_id: int) -> None:
        action = SendText(
            service="alerts",
            chat_id=chat_id,
            idempotency_key=f"{tag}-{chat_id}",
            text=f"{tag} for {chat_id}",
            priority="bulk",
        )
        await js.publish(
            subjects.outbound("alerts", "bulk"),
            encode(action),
            headers={"Nats-Msg-Id": action.idempotency_key},
        )

    for start in range(0, len(chat_ids), PUBLISH_CHUNK):
        await asyncio.gather(*(one(c) for c in chat_ids[start : start + PUBLISH_CHUNK]))


async def outbound_settled(admin: Client) -> bool:
    """True when the gateway's consumer has delivered and acked every action."""
    for consumer in subjects.CONSUMER_GATEWAY_OUTBOUND.values():
        info = await admin.jetstream().consumer_info(subjects.STREAM_OUTBOUND, consumer)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def messages_per_chat(
    user: SandboxClient, bot: SandboxBot, chat_ids: list[int]
) -> dict[int, list[str]]:
    """The texts each chat received, read from the sandbox over HTTP."""
    out: dict[int, list[str]] = {}

    async def one(chat_id: int) -> None:
        out[chat_id] = message_texts(await user.messages(bot.id, chat_id))

    for start in range(0, len(chat_ids), 100):
        await asyncio.gather(*(one(c) for c in chat_ids[start : start + 100]))
    return out


def sent_messages(gateway: Gateway) -> float:
    """Telegram calls the gateway's relay recorded as sent."""
    value = gateway.metrics.registry.get_sample_value("botbus_actions_total", {"result": "sent"})
    return value or 0.0


# -- the broadcast and the users writing during it -----------------------------


async def write_echoes(
    user: SandboxClient, bot: SandboxBot, uid: int, rounds: int, start_after: float
) -> list[float]:
    """``uid`` writes /echo ``rounds`` times; the seconds each reply took to arrive."""
    await asyncio.sleep(start_after)  # stagger the writers across the broadcast
    delays: list[float] = []
    cursor = 0
    for n in range(rounds):
        began = time.monotonic()
        await user.send_text(bot.id, f"/echo {uid}-{n}", user={"id": uid, "first_name": f"w{uid}"})
        [reply] = await user.wait_for(bot.id, uid, after=cursor, kind="message", timeout=15)
        delays.append(time.monotonic() - began)
        cursor = reply["seq"]
        assert message_texts([reply]) == [f"{uid}-{n}"]
    return delays


@pytest.mark.slow  # a 10,000-chat broadcast, tens of seconds
async def test_bulk_broadcast_gets_no_429_while_replies_arrive_within_2s(
    nats_server: NatsServer,
    limited_sandbox: SandboxServer,
    tg_bot: SandboxBot,
    tg_user: SandboxClient,
    bc_settings: Settings,
) -> None:
    """2,000 bulk messages to 2,000 chats; meanwhile 20 users write /echo 3 times each.

    Global limit scaled to 200 msg/s on both sides (sandbox and BOTBUS_RATE_GLOBAL);
    per-chat and group limits are Telegram's.
    """
    chats = subscribers(2000)
    writers = list(range(FIRST_WRITER, FIRST_WRITER + 20))
    make_chats(limited_sandbox, tg_bot, chats)
    async with Gateway(bc_settings, poll_timeout=5, discovery_interval=0.3) as gateway:
        admin = await connect_admin(nats_server, bc_settings)
        echo = MiniService(admin)
        alerts = await connect(bc_settings, "alerts")
        try:
            await echo.start()
            await wait_until_live(gateway, "echo")
            await publish_bulk(alerts, chats, "news")
            per_writer = await asyncio.gather(
                *(
                    write_echoes(tg_user, tg_bot, uid, rounds=3, start_after=0.2 * i)
                    for i, uid in enumerate(writers)
                )
            )
            sent_when_last_reply_arrived = sent_messages(gateway)
            await eventually(lambda: outbound_settled(admin), 60, "the broadcast to finish")
            snapshot = gateway.sender.snapshot()
        finally:
            await echo.stop()
            await alerts.close()
            await admin.close()
    delays = [d for writer in per_writer for d in writer]
    print(f"\n{len(delays)} replies during the broadcast: max {max(delays):.2f} s")
    stats = await tg_user.stats(tg_bot.id)
    replies = len(delays)
    assert stats["too_many_requests"] == 0, stats
    # The replies arrived while the broadcast was still going on: they did not wait
    # for it (how long they took is bench/broadcast.py's business, not a test's).
    assert sent_when_last_reply_arrived < len(chats) + replies
    # Every message went out exactly once: no retries, no duplicates, none lost.
    assert stats["methods"]["sendMessage"] == len(chats) + replies
    assert snapshot.sent_total == len(chats) + replies and snapshot.retries_total == 0
    received = await messages_per_chat(tg_user, tg_bot, chats[::50])
    assert all(texts == [f"news for {c}"] for c, texts in received.items())


@pytest.mark.slow  # a 1,000-chat broadcast at 200 msg/s
async def test_reply_behind_a_queued_bulk_message_is_not_held_back(
    nats_server: NatsServer,
    limited_sandbox: SandboxServer,
    tg_bot: SandboxBot,
    tg_user: SandboxClient,
    bc_settings: Settings,
) -> None:
    """Users at the end of a 1,000-chat broadcast write /echo while it runs.

    Their bulk message was produced first, so it must come first, but it must not
    keep the reply waiting in the bulk lane: it goes at interactive priority and
    the reply follows before the broadcast ends. Global limit scaled to 200 msg/s on
    both sides.
    """
    chats = subscribers(1000)
    writers = chats[-3:]
    make_chats(limited_sandbox, tg_bot, chats)
    async with Gateway(bc_settings, poll_timeout=5, discovery_interval=0.3) as gateway:
        admin = await connect_admin(nats_server, bc_settings)
        echo = MiniService(admin)
        alerts = await connect(bc_settings, "alerts")

        async def write(uid: int) -> tuple[float, list[str]]:
            began = time.monotonic()
            await tg_user.send_text(bot_id, f"/echo hi {uid}", user={"id": uid})
            events = await tg_user.wait_for(bot_id, uid, count=2, kind="message", timeout=15)
            return time.monotonic() - began, message_texts(events)

        bot_id = tg_bot.id
        try:
            await echo.start()
            await wait_until_live(gateway, "echo")
            await publish_bulk(alerts, chats, "digest")
            await tg_user.wait_for(bot_id, chats[100], kind="message", timeout=20)  # under way
            results = await asyncio.gather(*(write(uid) for uid in writers))
            sent_meanwhile = sent_messages(gateway)
            await eventually(lambda: outbound_settled(admin), 30, "the broadcast to finish")
        finally:
            await echo.stop()
            await alerts.close()
            await admin.close()
    for uid, (took, texts) in zip(writers, results, strict=True):
        print(f"reply to {uid} after {took:.2f} s")
        assert texts == [f"digest for {uid}", f"hi {uid}"]  # the order they were produced in
    assert sent_meanwhile < len(chats)  # the broadcast was still going on
    stats = await tg_user.stats(tg_bot.id)
    assert stats["too_many_requests"] == 0


# -- refusals and 429s -------------------------------------------------------------


async def test_blocked_chat_is_not_retried_and_reported_once(
    nats_server: NatsServer,
    limited_sandbox: SandboxServer,
    tg_bot: SandboxBot,
    tg_user: SandboxClient,
    bc_settings: Settings,
) -> None:
    chats = subscribers(60)
    blocked = chats[7]
    make_chats(limited_sandbox, tg_bot, chats)
    await tg_user.block(tg_bot.id, blocked)
    async with Gateway(bc_settings, poll_timeout=5) as gateway:
        admin = await connect_admin(nats_server, bc_settings)
        alerts = await connect(bc_settings, "alerts")
        events = await admin.subscribe(subjects.delivery_event("alerts"))
        try:
            await publish_bulk(alerts, chats, "promo")
            first = await events.next_msg(timeout=20)
            await eventually(lambda: outbound_settled(admin), 30, "every action to be acked")
            stream = await admin.jetstream().stream_info(
                subjects.STREAM_EVENTS, subjects_filter=subjects.delivery_event("alerts")
            )
            snapshot = gateway.sender.snapshot()
        finally:
            await events.unsubscribe()
            await alerts.close()
            await admin.close()
    event = decode_as(DeliveryEvent, first.data)
    assert (event.chat_id, event.error_code) == (blocked, 403)
    assert event.idempotency_key == f"promo-{blocked}"
    assert stream.state.subjects == {subjects.delivery_event("alerts"): 1}  # exactly one event
    stats = await tg_user.stats(tg_bot.id)
    assert stats["errors"] == {"403": 1}  # one call to the blocked chat: never retried
    assert stats["methods"]["sendMessage"] == len(chats)
    assert snapshot.refused_total == 1 and snapshot.retries_total == 0


@pytest.mark.slow  # waits out a forced retry_after
async def test_forced_429_on_one_chat_does_not_delay_the_others(
    nats_server: NatsServer,
    limited_sandbox: SandboxServer,
    tg_bot: SandboxBot,
    tg_user: SandboxClient,
    bc_settings: Settings,
) -> None:
    chats = subscribers(40)
    limited = chats[0]
    make_chats(limited_sandbox, tg_bot, chats)
    await tg_user.fail_next(
        tg_bot.id, method="sendMessage", error_code=429, retry_after=2, chat_id=limited
    )
    async with Gateway(bc_settings, poll_timeout=5) as gateway:
        alerts = await connect(bc_settings, "alerts")
        try:
            await publish_bulk(alerts, chats, "flash")  # the limited chat first
            others = await asyncio.gather(
                *(tg_user.wait_for(tg_bot.id, c, kind="message", timeout=10) for c in chats[1:])
            )
            [late] = await tg_user.wait_for(tg_bot.id, limited, kind="message", timeout=10)
            snapshot = gateway.sender.snapshot()
        finally:
            await alerts.close()
    assert len(others) == len(chats) - 1
    assert message_texts([late]) == [f"flash for {limited}"]
    # The others went out while the limited chat sat out its retry_after: every one of
    # them reached Telegram before the limited chat's message, published first, did.
    assert max(int(events[0]["seq"]) for events in others) < int(late["seq"])
    assert snapshot.rate_limited_total == 1 and snapshot.retries_total == 1
    assert snapshot.globally_paused_for == 0.0
    stats = await tg_user.stats(tg_bot.id)
    assert stats["too_many_requests"] == 1  # only the injected one


# -- a gateway restart in the middle of a broadcast ---------------------------------


class GatewayProcess:
    """``python -m botbus.gateway`` as a child process, to SIGKILL or SIGTERM."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Spawn the gateway, its output into ``log_path``."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "botbus.gateway",
                env=self.env,
                stdout=log,
                stderr=log,
                cwd=str(self.log_path.parent),
            )

    async def signal(self, sig: signal.Signals, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL after ``timeout``)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def log(self) -> str:
        """The child's output, for failure messages."""
        return self.log_path.read_text(errors="replace")[-3000:]


def child_env(settings: Settings, rate: int) -> dict[str, str]:
    """The environment of a gateway child pointed at the test's broker and sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTBUS_", "TELEGRAM_"))}
    assert settings.telegram_bot_token is not None and settings.nats_url is not None
    env.update(
        NATS_URL=settings.nats_url,
        TELEGRAM_BOT_TOKEN=settings.telegram_bot_token.get_secret_value(),
        TELEGRAM_API_URL=str(settings.telegram_api_url),
        BOTBUS_GATEWAY_HTTP="127.0.0.1:0",
        BOTBUS_DATA_DIR=str(settings.data_dir),
        BOTBUS_RATE_GLOBAL=str(rate),
        BOTBUS_LOG_LEVEL="INFO",
    )
    return env


async def broadcast_across_a_restart(
    tmp_path: Path,
    nats_server: NatsServer,
    sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
    settings: Settings,
    *,
    n: int,
    child_rate: int,
    stop_with: signal.Signals,
) -> tuple[dict[int, list[str]], int, float]:
    """Broadcast ``n`` messages; stop the gateway child with ``stop_with`` mid-way; finish
    with a fresh gateway. Returns (texts per chat, child's exit code, sent by the restart)."""
    chats = subscribers(n)
    make_chats(sandbox, bot, chats)
    admin = await connect_admin(nats_server, settings)
    alerts = await connect(settings, "alerts")
    child = GatewayProcess(child_env(settings, child_rate), tmp_path / "gateway-child.log")
    try:
        await topology.ensure_topology(admin.jetstream())  # the child creates it only later
        await publish_bulk(alerts, chats, "bulletin")
        await child.start()
        # A fifth of the broadcast is out: the child is in the middle of it.
        await user.wait_for(bot.id, chats[n // 5], kind="message", timeout=30)
        code = await child.signal(stop_with)
        async with Gateway(settings, poll_timeout=5) as gateway:
            await eventually(lambda: outbound_settled(admin), 40, "the rest of the broadcast")
            resumed = sent_messages(gateway)
    except BaseException:
        if child.proc is not None:
            await child.signal(signal.SIGKILL)
            print(child.log())
        raise
    finally:
        await alerts.close()
        await admin.close()
    return await messages_per_chat(user, bot, chats), code, resumed


@pytest.mark.slow  # a 10,000-chat broadcast, tens of seconds
async def test_gateway_killed_mid_broadcast_loses_nothing(
    tmp_path: Path,
    nats_server: NatsServer,
    limited_sandbox: SandboxServer,
    tg_bot: SandboxBot,
    tg_user: SandboxClient,
    bc_settings: Settings,
) -> None:
    """SIGKILL during a 1,000-chat broadcast (global limit scaled to 200/s), then restart.

    Only a message Telegram accepted in the instant before the kill, before the
    gateway recorded it, may come twice: at most the calls in flight then.
    """
    received, _, resumed = await broadcast_across_a_restart(
        tmp_path,
        nats_server,
        limited_sandbox,
        tg_bot,
        tg_user,
        bc_settings,
        n=1000,
        child_rate=GLOBAL_RATE,
        stop_with=signal.SIGKILL,
    )
    lost = [c for c, texts in received.items() if not texts]
    duplicates = sum(len(texts) - 1 for texts in received.values() if texts)
    print(f"\nkilled mid-broadcast: {duplicates} duplicates, {resumed:.0f} sent after restart")
    assert not lost, f"{len(lost)} chats got nothing, e.g. {lost[:5]}"
    assert all(set(texts) == {f"bulletin for {c}"} for c, texts in received.items())
    assert resumed > 0  # the restarted gateway really finished the broadcast
    assert duplicates <= DEFAULT_MAX_IN_FLIGHT
    stats = await tg_user.stats(tg_bot.id)
    assert stats["too_many_requests"] == 0


@pytest.mark.slow  # a 10,000-chat broadcast, tens of seconds
async def test_sigterm_mid_broadcast_drains_then_hands_over(
    tmp_path: Path,
    nats_server: NatsServer,
    limited_sandbox: SandboxServer,
    tg_bot: SandboxBot,
    tg_user: SandboxClient,
    bc_settings: Settings,
) -> None:
    """SIGTERM: the child sends for its drain grace, exits 0, and the rest is redelivered.

    The child's budget is 100 msg/s so a 1,000-chat broadcast outlasts its grace.
    """
    received, code, resumed = await broadcast_across_a_restart(
        tmp_path,
        nats_server,
        limited_sandbox,
        tg_bot,
        tg_user,
        bc_settings,
        n=1000,
        child_rate=100,
        stop_with=signal.SIGTERM,
    )
    assert code == 0
    assert resumed > 0  # un-acked actions came back to the next gateway
    assert all(texts == [f"bulletin for {c}"] for c, texts in received.items())  # once each
