"""Command claims are bound to identities and never displace a live owner.

The impostor of issue 13: a client logged in as ``echo`` answered ``$SRV.INFO``
as a made-up service claiming ``/subscribe``, took the command from alerts,
and the claim outlived the impostor.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner, Result
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, KeyValueConfig
from nats.js.errors import NotFoundError
from nats.micro import add_service
from nats.micro.service import Service as MicroService

from botbus import subjects
from botbus.cli import cli
from botbus.connect import connect_options
from botbus.gateway.registry import (
    MAX_COMMANDS_PER_SERVICE,
    MAX_UNVERIFIED,
    META_COMMANDS,
    Registry,
)
from botbus.natsserver import NatsServer
from botbus.settings import Settings
from botbus.status import MAX_REPLIES, _gather
from botbus.topology import ensure_topology

Advertise = Callable[..., Awaitable[MicroService]]


@pytest.fixture
async def gateway_nc(nats_server: NatsServer, settings: Settings) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url, **connect_options(settings, "gateway"))
    yield nc
    await nc.close()


@pytest.fixture
async def registry(gateway_nc: Client) -> Registry:
    kv = await gateway_nc.jetstream().create_key_value(
        KeyValueConfig(bucket=subjects.KV_GATEWAY_REGISTRY)
    )
    reg = Registry(gateway_nc, kv, poll_interval=0.1, gather_window=0.2, absent_grace=0.5)
    await reg.load()
    return reg


@pytest.fixture
async def advertise(nats_server: NatsServer, settings: Settings) -> AsyncIterator[Advertise]:
    """Advertise ``name`` with ``commands`` over a connection with ``identity``."""
    opened: list[tuple[Client, MicroService]] = []

    async def start(identity: str, name: str, *commands: str) -> MicroService:
        nc = await nats.connect(
            nats_server.url,
            **connect_options(settings, identity),
            error_cb=_ignore,  # the impostor's denied subscriptions are expected
        )
        spec = [{"command": c, "description": {"en": c}} for c in commands]
        micro = await add_service(
            nc, name=name, version="1.0.0", metadata={META_COMMANDS: json.dumps(spec)}
        )
        opened.append((nc, micro))
        return micro

    yield start
    for nc, micro in opened:
        if not nc.is_closed:
            await micro.stop()
            await nc.close()


Botbus = Callable[..., Awaitable[Result]]


@pytest.fixture
def botbus(nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Botbus:
    """Run a ``botbus`` CLI command as the operator would on this machine."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOTBUS_DATA_DIR", str(tmp_path / "data"))  # the broker's authority
    monkeypatch.setenv("NATS_URL", nats_server.url)
    runner = CliRunner()

    async def run(*args: str) -> Result:
        # The commands run their own event loop: off this one.
        return await asyncio.to_thread(runner.invoke, cli, list(args))

    return run


async def _ignore(exc: Exception) -> None:
    return None


async def rounds_until(registry: Registry, check: Callable[[], bool], rounds: int = 50) -> None:
    """Run discovery rounds until ``check()`` holds (a new service answers within a few)."""
    for _ in range(rounds):
        await registry.refresh()
        if check():
            return
    raise AssertionError("the registry never reached the expected state")


async def test_an_impostor_cannot_take_a_command_under_a_made_up_name(
    registry: Registry, advertise: Advertise
) -> None:
    await advertise("alerts", "alerts", "subscribe", "channels")
    await rounds_until(registry, lambda: registry.knows("alerts"))
    assert registry.owner("subscribe")[0] == "alerts"  # type: ignore[index]

    # Logged in as echo, answering $SRV.INFO as "aaa" (sorts before "alerts").
    impostor = await advertise("echo", "aaa", "subscribe")
    await rounds_until(registry, lambda: "aaa" in registry.conflicts.unverified)
    assert registry.owner("subscribe")[0] == "alerts"  # type: ignore[index]
    assert not registry.knows("aaa")
    assert "aaa" in registry.conflicts.unverified

    await impostor.stop()
    await registry.refresh()
    assert registry.owner("subscribe")[0] == "alerts"  # type: ignore[index]


@pytest.mark.slow  # 2.5 s: registry rounds for two services, then botbus status
async def test_a_real_service_claiming_a_live_owners_command_does_not_get_it(
    registry: Registry, advertise: Advertise, botbus: Botbus
) -> None:
    await advertise("alerts", "alerts", "subscribe")
    await rounds_until(registry, lambda: registry.knows("alerts"))
    # echo, under its own name, claims /subscribe too: echo's other commands work,
    # /subscribe stays with alerts, and the conflict is recorded for botbus status.
    await advertise("echo", "echo", "echo", "subscribe")
    await rounds_until(registry, lambda: registry.knows("echo"))
    assert registry.owner("subscribe")[0] == "alerts"  # type: ignore[index]
    assert registry.owner("echo")[0] == "echo"  # type: ignore[index]
    assert registry.conflicts.commands == {"subscribe": ["echo"]}

    shown = await botbus("status")
    assert shown.exit_code == 0, shown.output
    assert "conflict: /subscribe is also claimed by echo (not routed)" in shown.output
    as_json = await botbus("status", "--json")
    assert json.loads(as_json.output)["conflicts"] == {"subscribe": ["echo"]}


async def test_a_down_owner_keeps_its_command_until_it_is_removed(
    registry: Registry, advertise: Advertise, botbus: Botbus
) -> None:
    owner = await advertise("alerts", "alerts", "subscribe")
    await rounds_until(registry, lambda: registry.knows("alerts"))
    await advertise("echo", "echo", "subscribe")
    await rounds_until(registry, lambda: registry.knows("echo"))
    assert registry.owner("subscribe")[0] == "alerts"  # type: ignore[index]

    # A crash or a redeploy of the owner must not hand its command to another claimant:
    # while it is down its requests wait for it (the grace is 0.5 s here).
    await owner.stop()
    await rounds_until(registry, lambda: not registry.is_live("alerts"), 100)
    await registry.refresh()
    assert registry.owner("subscribe")[0] == "alerts"  # type: ignore[index]
    assert registry.conflicts.commands == {"subscribe": ["echo"]}

    # Removed for good, the owner's command goes to the remaining claimant.
    removed = await botbus("registry", "rm", "alerts")
    assert removed.exit_code == 0, removed.output
    await rounds_until(registry, lambda: registry.owner("subscribe")[0] == "echo", 100)  # type: ignore[index]
    assert registry.conflicts.commands == {}


async def test_registry_rm_forgets_a_service_gone_for_good(
    registry: Registry, advertise: Advertise, botbus: Botbus
) -> None:
    gone = await advertise("weather", "weather", "forecast")
    await rounds_until(registry, lambda: registry.knows("weather"))
    await gone.stop()

    listed = await botbus("registry", "ls")
    assert listed.exit_code == 0 and "/forecast" in listed.output
    removed = await botbus("registry", "rm", "weather")
    assert removed.exit_code == 0, removed.output
    await registry.refresh()
    assert not registry.knows("weather") and registry.owner("forecast") is None

    again = await botbus("registry", "rm", "weather")
    assert again.exit_code == 1 and "no service 'weather'" in again.output


async def test_registry_rm_refuses_a_running_service_unless_forced(
    registry: Registry, advertise: Advertise, botbus: Botbus
) -> None:
    """Removing a live owner would free its commands for any other claimant."""
    await advertise("echo", "echo", "echo")
    await rounds_until(registry, lambda: registry.knows("echo"))

    refused = await botbus("registry", "rm", "echo")
    assert refused.exit_code == 1
    assert "echo is running (1 instance(s)): stop it first" in refused.output
    await registry.refresh()
    assert registry.owner("echo")[0] == "echo"  # type: ignore[index]

    forced = await botbus("registry", "rm", "echo", "--force")
    assert forced.exit_code == 0, forced.output
    assert "it will register again" in forced.output


async def test_no_service_can_claim_a_command_built_into_the_gateway(
    registry: Registry, advertise: Advertise
) -> None:
    """/help, /start, /language and /forgetme are the gateway's: a claim is a conflict."""
    await advertise("echo", "echo", "echo", "help", "forgetme")
    await rounds_until(registry, lambda: registry.knows("echo"))
    assert registry.owner("echo")[0] == "echo"  # type: ignore[index]
    assert registry.owner("help") is None and registry.owner("forgetme") is None
    assert [spec.command for _, spec in registry.live_commands()] == ["echo"]
    assert registry.conflicts.commands == {"forgetme": ["echo"], "help": ["echo"]}


def _forged_info(name: str) -> bytes:
    """A $SRV.INFO reply claiming /start under ``name``, as anyone can write one."""
    commands = json.dumps([{"command": "start"}])
    info = {"name": name, "id": secrets.token_hex(8), "version": "1", "metadata": {}}
    info["metadata"] = {META_COMMANDS: commands}
    return json.dumps(info).encode()


async def _conflicts_record(registry_nc: Client) -> bytes:
    kv = await registry_nc.jetstream().key_value(subjects.KV_GATEWAY_REGISTRY)
    return (await kv.get(subjects.KV_REGISTRY_CONFLICTS)).value or b""


async def test_replies_pushed_from_a_stream_into_the_round_inbox_are_not_claims(
    registry: Registry,
    advertise: Advertise,
    gateway_nc: Client,
    nats_server: NatsServer,
    settings: Settings,
) -> None:
    """evil makes a push consumer of its own stream deliver stored forged replies to the
    inbox the gateway asked on: they arrive under the stream's subject and are ignored."""
    await advertise("alerts", "alerts", "subscribe")
    await rounds_until(registry, lambda: registry.knows("alerts"))
    evil = await nats.connect(nats_server.url, **connect_options(settings, "evil"))
    try:
        made = await evil.request(
            "botbus.ctl.provision.evil",
            json.dumps({"kind": "stream", "name": "svc_evil", "subjects": ["evil.>"]}).encode(),
            timeout=10,
        )
        assert json.loads(made.data)["ok"], made.data
        js = evil.jetstream()
        for i in range(300):
            await js.publish("evil.claims", _forged_info(f"q{i:03d}"))
        pushed: list[str] = []

        async def push_into_the_inbox(msg: Msg) -> None:
            name = f"c{len(pushed)}"
            config = {"name": name, "deliver_subject": msg.reply, "ack_policy": "none"}
            await evil.request(
                f"$JS.API.CONSUMER.CREATE.svc_evil.{name}",
                json.dumps({"stream_name": "svc_evil", "config": config}).encode(),
                timeout=5,
            )
            pushed.append(name)

        await evil.subscribe(subjects.SRV_INFO, cb=push_into_the_inbox)
        await evil.flush()
        await rounds_until(registry, lambda: len(pushed) >= 3)
        await registry.refresh()
    finally:
        await evil.close()
    assert registry.conflicts.unverified == {}
    assert registry.owner("start") is None and registry.is_live("alerts")
    assert b'"q0' not in await _conflicts_record(gateway_nc)


async def test_a_flood_of_forged_replies_stays_bounded(
    registry: Registry, advertise: Advertise, admin_nc: Client
) -> None:
    """Thousands of claims in one round cost a bounded number of verifications and a
    small conflicts record, and a live service's own answer still counts."""
    await advertise("alerts", "alerts", "subscribe")
    await rounds_until(registry, lambda: registry.knows("alerts"))
    rounds: list[int] = []

    async def flood(msg: Msg) -> None:
        for i in range(1000):
            await admin_nc.publish(msg.reply, _forged_info(f"r{len(rounds)}x{i:04d}"))
        rounds.append(1)

    await admin_nc.subscribe(subjects.SRV_INFO, cb=flood)
    await admin_nc.flush()
    await rounds_until(registry, lambda: len(rounds) >= 3)
    # The flood goes on every round. On a loaded machine the live service's answer
    # may come after one round's gather window; it still counts within a few rounds.
    await rounds_until(
        registry,
        lambda: registry.is_live("alerts") and registry.instances("alerts") == 1,
        rounds=5,
    )
    assert 0 < len(registry.conflicts.unverified) <= MAX_UNVERIFIED
    assert len(await _conflicts_record(admin_nc)) < 64 * 1024
    assert registry.owner("start") is None


async def test_claims_past_the_limit_per_service_are_refused_and_shown(
    registry: Registry, advertise: Advertise, botbus: Botbus
) -> None:
    """A service claiming many commands would crowd the others out of the menu."""
    claims = [f"c{i:02d}" for i in range(MAX_COMMANDS_PER_SERVICE + 5)]
    await advertise("echo", "echo", *claims)
    await rounds_until(registry, lambda: registry.knows("echo"))
    assert [s.command for _, s in registry.live_commands()] == claims[:MAX_COMMANDS_PER_SERVICE]
    assert registry.owner(claims[-1]) is None
    assert registry.conflicts.excess == {"echo": claims[MAX_COMMANDS_PER_SERVICE:]}

    shown = await botbus("status")
    assert shown.exit_code == 0, shown.output
    assert "conflict: echo claims 5 command(s) past the limit per service (not routed): " in (
        shown.output
    )


async def test_registry_rm_deletes_the_consumers_that_would_hold_the_inbound_stream(
    registry: Registry, advertise: Advertise, botbus: Botbus, admin_nc: Client
) -> None:
    """The inbound stream keeps a message until every consumer took it: a service gone
    for good would otherwise hold its share (every message, if it listened) forever."""
    js = admin_nc.jetstream()
    await ensure_topology(js)
    for consumer, filter_subject in (
        (subjects.consumer_commands("weather"), subjects.inbound_commands_of("weather")),
        (subjects.consumer_messages("weather"), subjects.INBOUND_MESSAGES),
    ):
        await js.add_consumer(
            subjects.STREAM_INBOUND,
            ConsumerConfig(durable_name=consumer, filter_subject=filter_subject),
        )
    gone = await advertise("weather", "weather", "forecast")
    await rounds_until(registry, lambda: registry.knows("weather"))
    await gone.stop()

    removed = await botbus("registry", "rm", "weather")
    assert removed.exit_code == 0, removed.output
    for consumer in (subjects.consumer_commands("weather"), subjects.consumer_messages("weather")):
        with pytest.raises(NotFoundError):
            await js.consumer_info(subjects.STREAM_INBOUND, consumer)


async def test_botbus_status_reads_a_bounded_number_of_replies(
    admin_nc: Client, nats_server: NatsServer, settings: Settings
) -> None:
    """A flood of $SRV.INFO replies (forged or not) cannot bloat `botbus status`."""

    async def flood(msg: Msg) -> None:
        for i in range(MAX_REPLIES + 500):
            await admin_nc.publish(msg.reply, json.dumps({"name": f"x{i}"}).encode())

    await admin_nc.subscribe(subjects.SRV_INFO, cb=flood)
    await admin_nc.flush()
    asker = await nats.connect(nats_server.url, **connect_options(settings, "admin"))
    try:
        replies = await _gather(asker, subjects.SRV_INFO)
    finally:
        await asker.close()
    assert len(replies) == MAX_REPLIES
