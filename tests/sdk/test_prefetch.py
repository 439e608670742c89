"""Prefetching: the handlers stay busy, yet no message is held where it cannot run.

An instance fetches ahead of its handlers (at most twice ``concurrency``
messages per feed); these tests pin what that must never cost: work held by a
busy instance still reaches an idle one, a prefetched message is handed back
at once on SIGTERM-style drain, and a message waiting in the buffer longer
than ack_wait is not redelivered behind the instance's back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client

from botbus import subjects
from botbus.models import InboundCommand
from botbus.natsserver import NatsServer
from botbus.service import Context, Service, ServiceApp
from botbus.settings import Settings
from tests.sdk.conftest import Gateway
from tests.support.builders import make_command
from tests.support.outbox import StreamReader, texts
from tests.support.waiting import eventually

HOLD_LIMIT = 15.0  # seconds a /hold handler waits for its gate at most


@dataclass
class Gate:
    """Holds /hold handlers until the test opens it."""

    open: asyncio.Event = field(default_factory=asyncio.Event)
    started: list[str] = field(default_factory=list)


def gated_service(gate: Gate, *, concurrency: int, ack_wait: float = 30.0) -> Service:
    """An "echo" whose /hold waits for ``gate`` and /echo answers at once."""
    svc = Service("echo", "1.0.0", {"en": "test"}, concurrency=concurrency, ack_wait=ack_wait)

    @svc.command("hold", en="Wait for the gate")
    async def hold(ctx: Context, cmd: InboundCommand) -> str:
        gate.started.append(cmd.correlation_id)
        # Bounded, so a failing test is not stuck for the whole drain timeout.
        await asyncio.wait_for(gate.open.wait(), HOLD_LIMIT)
        return f"held {cmd.args}"

    @svc.command("echo", en="Repeat")
    async def echo(ctx: Context, cmd: InboundCommand) -> str:
        return cmd.args

    return svc


def handled(app: ServiceApp, command: str) -> int:
    """How many /command messages ``app`` finished (its micro stats)."""
    return sum(c.num_requests for c in app.stats if c.name == command)


async def consumer_holds(js_nc: Client, ack_pending: int) -> bool:
    """True if echo's command consumer has exactly ``ack_pending`` messages out."""
    info = await js_nc.jetstream().consumer_info(
        subjects.STREAM_INBOUND, subjects.consumer_commands("echo")
    )
    return bool(info.num_ack_pending == ack_pending)


async def wait_until_held(js_nc: Client, ack_pending: int, timeout: float = 5.0) -> None:
    """Wait until ``ack_pending`` messages are delivered and unacked (prefetched or running)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await consumer_holds(js_nc, ack_pending):
        assert loop.time() < deadline, f"{ack_pending} messages were not delivered in time"
        await asyncio.sleep(0.02)


async def test_prefetched_message_is_handed_back_at_once_on_drain(
    nats_server: NatsServer,
    settings: Settings,
    gateway: Gateway,
    outbound: StreamReader,
    topology: Client,
) -> None:
    gate = Gate()
    svc = gated_service(gate, concurrency=1)
    busy = ServiceApp(svc, settings, url=nats_server.url)
    await busy.start()
    slow, quick = make_command("slow", command="hold"), make_command("quick")
    await gateway.command(slow)
    await eventually(lambda: gate.started == [slow.correlation_id])
    await gateway.command(quick)
    # The busy instance prefetched /echo quick: delivered to it, waiting for its only slot.
    await wait_until_held(topology, 2)

    async with ServiceApp(svc, settings, url=nats_server.url) as idle:
        stopping = asyncio.create_task(busy.stop())
        # ack_wait is 30 s: only a prompt hand-back lets the other instance answer now,
        # while the busy instance is still draining its running handler.
        [reply] = await outbound.actions(1, timeout=5)
        assert reply.correlation_id == quick.correlation_id
        assert not stopping.done()
        gate.open.set()
        await asyncio.wait_for(stopping, 10)
        [held] = await outbound.actions(1, timeout=5)

    assert texts([reply, held]) == ["quick", "held slow"]
    assert handled(idle, "echo") == 1 and handled(busy, "echo") == 0
    assert handled(busy, "hold") == 1


async def test_busy_instance_holds_at_most_twice_its_concurrency(
    nats_server: NatsServer,
    settings: Settings,
    gateway: Gateway,
    outbound: StreamReader,
    topology: Client,
) -> None:
    gate = Gate()
    svc = gated_service(gate, concurrency=2)
    holds = [make_command(f"h{i}", command="hold") for i in range(6)]
    async with ServiceApp(svc, settings, url=nats_server.url) as busy:
        for cmd in holds:
            await gateway.command(cmd)
        await eventually(lambda: len(gate.started) == 2)
        # Two running, two prefetched; the other two stay on the server...
        await wait_until_held(topology, 4)
        async with ServiceApp(svc, settings, url=nats_server.url) as idle:
            # ...where a second instance picks them up while the first is still busy.
            await eventually(lambda: len(gate.started) == 4)
            assert handled(busy, "hold") == 0
            gate.open.set()
            actions = await outbound.actions(6, timeout=10)
            await eventually(lambda: handled(busy, "hold") + handled(idle, "hold") == 6)

    assert sorted(a.correlation_id or "" for a in actions) == sorted(
        c.correlation_id for c in holds
    )
    assert handled(busy, "hold") == 4 and handled(idle, "hold") == 2


@pytest.mark.slow  # outlasts a consumer ack wait
async def test_message_waiting_longer_than_ack_wait_is_not_redelivered(
    nats_server: NatsServer,
    settings: Settings,
    gateway: Gateway,
    outbound: StreamReader,
    topology: Client,
) -> None:
    gate = Gate()
    # One slot and a 1 s ack_wait: /echo waits in the prefetch buffer well past it.
    svc = gated_service(gate, concurrency=1, ack_wait=1.0)
    slow, waiting = make_command("slow", command="hold"), make_command("patient")
    async with ServiceApp(svc, settings, url=nats_server.url) as app:
        await gateway.command(slow)
        await eventually(lambda: gate.started == [slow.correlation_id])
        await gateway.command(waiting)
        await wait_until_held(topology, 2)
        # Three ack_waits pass while /echo waits for the slot.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while loop.time() < deadline:
            assert await consumer_holds(topology, 2)
            await asyncio.sleep(0.2)
        gate.open.set()
        actions = await outbound.actions(2, timeout=5)
        await eventually(lambda: handled(app, "echo") + handled(app, "hold") == 2)
        info = await topology.jetstream().consumer_info(
            subjects.STREAM_INBOUND, subjects.consumer_commands("echo")
        )

    assert sorted(texts(actions)) == ["held slow", "patient"]
    assert info.num_redelivered == 0
    assert handled(app, "echo") == 1 and handled(app, "hold") == 1
