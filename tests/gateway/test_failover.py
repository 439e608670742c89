"""Two gateways for one bot: the standby takes over when the active one is killed -9.

While 500 updates stream in, the active gateway is killed -9; the standby
takes the lease and carries on, then the killed one comes back as the new
standby and the second active one is killed too. Afterwards every update
is in BOTBUS_IN exactly once and every /echo got its answer; the gateway
that took over was never refused by getUpdates (no two pollers at once).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError

from botbus import subjects
from botbus.exits import EXIT_STEPPED_DOWN
from botbus.gateway.lease import lease_key
from botbus.natsserver import NatsServer, free_ports
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings

from .conftest import MiniService
from .test_crash import (
    MAX_IN_FLIGHT_PER_KILL,
    UPDATES,
    GatewayProcess,
    admin,  # noqa: F401  (the fixture)
    child_env,
    inbound_ids,
    stream_updates,
    wait_all_replies,
)

KILLS = 2


async def active_holder(nc: Client, bot: SandboxBot) -> str | None:
    """The holder name in the bot's lease, if any gateway holds it."""
    kv = await nc.jetstream().key_value(subjects.KV_GATEWAY_LEASE)
    try:
        entry = await kv.get(lease_key(bot.id))
    except KeyNotFoundError:
        return None
    return (entry.value or b"").decode() or None


async def wait_for_holder(nc: Client, bot: SandboxBot, other_than: str | None = None) -> str:
    """Wait (bounded) until a gateway other than ``other_than`` holds the lease."""
    async with asyncio.timeout(30):
        while True:
            try:
                holder = await active_holder(nc, bot)
            except Exception:  # the bucket may not exist before the first gateway
                holder = None
            if holder is not None and holder != other_than:
                return holder
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_standby_takes_over_when_the_active_gateway_is_killed(
    tmp_path: Path,
    nats_server: NatsServer,
    settings: Settings,
    admin: Client,  # noqa: F811
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
) -> None:
    echo = MiniService(admin)
    await echo.start()
    gateways: dict[str, GatewayProcess] = {}
    for name in ("a", "b"):
        env = child_env(settings, nats_server.url, quiet_sandbox, bot)
        env["BOTBUS_DATA_DIR"] = str(tmp_path / f"gateway-{name}")
        gateways[name] = GatewayProcess(env, tmp_path / f"gateway-{name}.log")
    takeovers: list[float] = []
    try:
        await gateways["a"].start()
        holder = await wait_for_holder(admin, bot)
        await gateways["b"].start()
        sender = asyncio.create_task(stream_updates(user, bot))
        loop = asyncio.get_running_loop()
        for _ in range(KILLS):
            await asyncio.wait({sender}, timeout=5)  # mid-stream
            active = next(n for n in gateways if holder.endswith(f"gateway-{n}"))
            await gateways[active].kill()
            killed_at = loop.time()
            holder = await wait_for_holder(admin, bot, other_than=holder)
            takeovers.append(loop.time() - killed_at)
            await gateways[active].start()  # back as the standby
        await sender
        seen = await wait_all_replies(user, bot, timeout=60)
        ids = await inbound_ids(admin)
    finally:
        for gateway in gateways.values():
            await gateway.stop()
        await echo.stop()
    duplicates = sum(seen.values()) - len(seen)
    print(
        f"\n{KILLS} failovers, takeover in "
        + ", ".join(f"{t:.1f}s" for t in takeovers)
        + f"; {duplicates} duplicated replies out of {UPDATES}"
    )
    assert len(ids) == UPDATES and set(ids.values()) == {1}  # each update exactly once
    assert set(seen) == {str(n) for n in range(UPDATES)}  # every /echo answered
    assert duplicates <= KILLS * MAX_IN_FLIGHT_PER_KILL
    logs = {n: (tmp_path / f"gateway-{n}.log").read_text() for n in gateways}
    # Nobody polled while another gateway held the lease: no getUpdates was refused.
    refused = [n for n, text in logs.items() if "getUpdates refused" in text]
    assert not refused, {n: logs[n][-3000:] for n in refused}


@pytest.mark.slow
async def test_a_paused_active_gateway_steps_down_without_polling_again(
    tmp_path: Path,
    nats_server: NatsServer,
    settings: Settings,
    admin: Client,  # noqa: F811
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
) -> None:
    """SIGSTOP the active gateway past its lease: the standby takes over; resumed, the
    old one finds the lease taken and exits (code 7) instead of polling next to it."""
    echo = MiniService(admin)
    await echo.start()
    gateways: dict[str, GatewayProcess] = {}
    for name in ("a", "b"):
        env = child_env(settings, nats_server.url, quiet_sandbox, bot)
        env["BOTBUS_DATA_DIR"] = str(tmp_path / f"gateway-{name}")
        gateways[name] = GatewayProcess(env, tmp_path / f"gateway-{name}.log")
    try:
        await gateways["a"].start()
        first = await wait_for_holder(admin, bot)
        assert first.endswith("gateway-a")
        await gateways["b"].start()
        paused = gateways["a"].proc
        assert paused is not None
        paused.send_signal(signal.SIGSTOP)
        assert (await wait_for_holder(admin, bot, other_than=first)).endswith("gateway-b")
        sent = await user.send_text(bot.id, "/echo while a sleeps", user={"id": 77})
        events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=20)
        assert [e["message"]["text"] for e in events] == ["while a sleeps"]
        paused.send_signal(signal.SIGCONT)
        async with asyncio.timeout(30):
            code = await paused.wait()
        sent = await user.send_text(bot.id, "/echo after", user={"id": 78})
        events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=20)
        assert [e["message"]["text"] for e in events] == ["after"]
    finally:
        for gateway in gateways.values():
            await gateway.stop()
        await echo.stop()
    logs = {n: (tmp_path / f"gateway-{n}.log").read_text() for n in gateways}
    assert code == EXIT_STEPPED_DOWN, logs["a"][-3000:]
    assert "another gateway took" in logs["a"]
    assert "getUpdates refused" not in logs["b"], logs["b"][-3000:]


@pytest.mark.slow
async def test_the_standby_takes_over_the_webhook(
    tmp_path: Path,
    nats_server: NatsServer,
    settings: Settings,
    admin: Client,  # noqa: F811
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
) -> None:
    """In webhook mode only the active gateway listens; the one taking over re-registers it."""
    echo = MiniService(admin)
    await echo.start()
    gateways: dict[str, GatewayProcess] = {}
    for name, port in zip(("a", "b"), free_ports(2), strict=True):
        env = child_env(settings, nats_server.url, quiet_sandbox, bot)
        env.update(
            BOTBUS_DATA_DIR=str(tmp_path / f"gateway-{name}"),
            BOTBUS_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
            BOTBUS_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
            BOTBUS_WEBHOOK_SECRET="failover-secret",
        )
        gateways[name] = GatewayProcess(env, tmp_path / f"gateway-{name}.log")
    try:
        await gateways["a"].start()
        first = await wait_for_holder(admin, bot)
        await gateways["b"].start()
        sent = await user.send_text(bot.id, "/echo via a", user={"id": 81})
        events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=20)
        assert [e["message"]["text"] for e in events] == ["via a"]
        await gateways["a"].kill()
        await wait_for_holder(admin, bot, other_than=first)
        # Sent right after the kill: the sandbox retries the delivery until b listens.
        sent = await user.send_text(bot.id, "/echo via b", user={"id": 82})
        events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=30)
        assert [e["message"]["text"] for e in events] == ["via b"]
    finally:
        for gateway in gateways.values():
            await gateway.stop()
        await echo.stop()
    assert "ingest: webhook" in (tmp_path / "gateway-b.log").read_text()
