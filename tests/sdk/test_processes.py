"""Service instances as separate processes: sharing, crashes, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client

from botbus import subjects
from tests.sdk.conftest import REPO, Gateway, Spawn, gather_replies
from tests.support.builders import make_command
from tests.support.outbox import StreamReader, texts

# Each test starts service processes (seconds of imports each): the slow set.
pytestmark = pytest.mark.slow

STARTED = "service echo 1.0.0 started"


async def test_two_instances_share_200_commands_none_twice_none_lost(
    spawn: Spawn, gateway: Gateway, outbound: StreamReader, topology: Client
) -> None:
    first, second = spawn(), spawn()
    await first.wait_log(STARTED)
    await second.wait_log(STARTED)
    commands = [make_command(f"message {i}") for i in range(200)]
    for cmd in commands:
        await gateway.command(cmd)

    actions = await outbound.actions(200, timeout=30)

    assert sorted(a.correlation_id or "" for a in actions) == sorted(
        c.correlation_id for c in commands
    )
    assert sorted(texts(actions)) == sorted(c.args for c in commands)
    # Real micro stats: each instance handled a share, and 200 in total (none twice).
    # Counters are updated just after the ack, so poll briefly for the last ones.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        stats = await gather_replies(topology, f"{subjects.SRV_STATS}.echo", expected=2)
        handled = [sum(e["num_requests"] for e in s["endpoints"]) for s in stats]
        if sum(handled) >= 200 or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert len(handled) == 2 and all(n > 0 for n in handled), handled
    assert sum(handled) == 200


async def test_sigkill_mid_stream_loses_nothing(
    spawn: Spawn, gateway: Gateway, outbound: StreamReader
) -> None:

    victim = spawn("redelivery_echo")
    survivor = spawn("redelivery_echo")
    await victim.wait_log(STARTED)
    await survivor.wait_log(STARTED)
    commands = [make_command(f"n{i}") for i in range(100)]
    # Slow commands pin work on both instances so the kill surely hits in-flight work.
    slow = [make_command("0.5", command="slow") for _ in range(16)]
    for cmd in slow + commands:
        await gateway.command(cmd)
    await victim.wait_log("slow handler started")
    victim.signal(signal.SIGKILL)

    actions = await outbound.actions(116, timeout=30)

    expected = {c.correlation_id for c in slow + commands}
    assert {a.correlation_id for a in actions} == expected
    assert len(actions) == 116


async def test_sigterm_drains_in_flight_work_and_exits_0(
    spawn: Spawn, gateway: Gateway, outbound: StreamReader, topology: Client
) -> None:
    proc = spawn("redelivery_echo")
    await proc.wait_log(STARTED)
    cmd = make_command("1.5", command="slow")
    await gateway.command(cmd)
    await proc.wait_log("slow handler started")

    proc.signal(signal.SIGTERM)
    code = await proc.wait(timeout=20)

    assert code == 0
    [action] = await outbound.actions(1, timeout=5)
    assert action.correlation_id == cmd.correlation_id
    assert texts([action]) == ["done after 1.5s"]
    info = await topology.jetstream().consumer_info(
        subjects.STREAM_INBOUND, subjects.consumer_commands("echo")
    )
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert "draining" in proc.log()


async def test_commands_wait_in_the_stream_while_no_instance_runs(
    spawn: Spawn, gateway: Gateway, outbound: StreamReader
) -> None:
    first = spawn()
    await first.wait_log(STARTED)
    first.signal(signal.SIGTERM)
    assert await first.wait() == 0
    cmd = make_command("are you there?")
    await gateway.command(cmd)
    assert await outbound.actions(1, timeout=1) == []

    later = spawn()
    await later.wait_log(STARTED)

    [action] = await outbound.actions(1, timeout=10)
    assert action.correlation_id == cmd.correlation_id


async def test_service_waits_for_the_streams_with_a_clear_log_line(
    spawn: Spawn, admin_nc: Client
) -> None:
    from botbus.topology import ensure_topology

    proc = spawn()
    await proc.wait_log("waiting for stream BOTBUS_IN (the gateway makes it)")
    await ensure_topology(admin_nc.jetstream())
    await proc.wait_log(STARTED)


async def test_botbus_service_command_runs_a_service_by_name(
    spawn: Spawn, gateway: Gateway, outbound: StreamReader
) -> None:
    proc = spawn(f"{Path(sys.executable).parent / 'botbus'} service echo")
    await proc.wait_log(STARTED)
    cmd = make_command("via the cli")
    await gateway.command(cmd)
    assert texts(await outbound.actions(1)) == ["via the cli"]
    proc.signal(signal.SIGINT)
    assert await proc.wait() == 0


def test_unknown_service_name_is_a_clear_error() -> None:
    result = subprocess.run(
        [Path(sys.executable).parent / "botbus", "service", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "no service 'nope'" in result.stderr


def test_missing_nats_url_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "BOTBUS_"))}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "services.echo"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NATS_URL" in lines[0], result.stderr
