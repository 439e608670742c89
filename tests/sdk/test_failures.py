"""Bad input and failing handlers: bounded retries, dead letters, no crash."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from botbus import subjects
from botbus.models import InboundCommand, encode
from botbus.natsserver import NatsServer
from botbus.service import Context, Refuse, Service, ServiceApp
from botbus.settings import Settings
from botbus.topology import ensure_topology
from tests.conftest import connect_as
from tests.sdk.conftest import Gateway
from tests.support.builders import make_command
from tests.support.outbox import StreamReader, texts
from tests.support.waiting import eventually

SORRY_EN = "Sorry, something went wrong and I could not answer. Please try again later."


def flaky_service(fail_times: int = 1000) -> tuple[Service, list[str]]:
    """An "echo" whose /boom fails ``fail_times`` times; /echo works."""
    svc = Service(
        "echo",
        "1.0.0",
        {"en": "test"},
        max_deliveries=3,
        retry_delays=(0.05,),
    )
    attempts: list[str] = []

    @svc.command("boom", en="Fail")
    async def boom(ctx: Context, cmd: InboundCommand) -> None:
        attempts.append(cmd.correlation_id)
        if len(attempts) <= fail_times:
            raise RuntimeError("database on fire")
        await ctx.reply("recovered")

    @svc.command("echo", en="Repeat")
    async def echo(ctx: Context, cmd: InboundCommand) -> str:
        return cmd.args

    @svc.command("refuse", en="Refuse")
    async def refuse(ctx: Context, cmd: InboundCommand) -> Refuse:
        return Refuse(ctx.t(en="No way.", es="Ni hablar."))

    @svc.command("secret", en="Admins only", admin_only=True)
    async def secret(ctx: Context, cmd: InboundCommand) -> str:
        return "the secret"

    return svc, attempts


async def test_failing_handler_is_retried_then_dead_lettered_and_user_told(
    nats_server: NatsServer,
    settings: Settings,
    gateway: Gateway,
    outbound: StreamReader,
    dlq: StreamReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc, attempts = flaky_service()
    bad = make_command(command="boom")
    good = make_command("still here")
    with caplog.at_level(logging.INFO):
        async with ServiceApp(svc, settings, url=nats_server.url) as app:
            await gateway.command(bad)
            await gateway.command(good)
            actions = await outbound.actions(2)
            [record] = await dlq.dead_letters(1)
            [stats] = [c for c in app.stats if c.name == "boom"]
            await eventually(lambda: stats.num_requests == 3)

    assert attempts == [bad.correlation_id] * 3  # bounded: max_deliveries=3
    by_id = {a.correlation_id: a for a in actions}
    assert texts([by_id[good.correlation_id]]) == ["still here"]
    assert texts([by_id[bad.correlation_id]]) == [SORRY_EN]
    assert record.deliveries == 3
    assert record.correlation_id == bad.correlation_id
    assert "database on fire" in record.error
    assert json.loads(record.payload)["command"] == "boom"
    assert stats.num_requests == 3 and stats.num_errors == 3
    dead = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(dead) == 1
    assert "after 3 delivery(ies)" in dead[0].getMessage()
    assert getattr(dead[0], "correlation_id", None) == bad.correlation_id


async def test_transient_failure_is_retried_and_answered(
    nats_server: NatsServer, settings: Settings, gateway: Gateway, outbound: StreamReader
) -> None:
    svc, attempts = flaky_service(fail_times=1)
    async with ServiceApp(svc, settings, url=nats_server.url):
        await gateway.command(make_command(command="boom"))
        replies = texts(await outbound.actions(1))
    assert replies == ["recovered"]
    assert len(attempts) == 2


async def test_malformed_payload_is_dead_lettered_at_once_and_next_command_answered(
    nats_server: NatsServer,
    settings: Settings,
    gateway: Gateway,
    outbound: StreamReader,
    dlq: StreamReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc, _ = flaky_service()
    junk_subject = subjects.inbound_command("echo", "echo")
    # Decodable enough to know the chat: the user is told; junk: nobody to tell.
    bad_field = json.loads(encode(make_command(chat_id=5, language="es")))
    bad_field["user"]["id"] = "not a number"
    good = make_command("next one")
    with caplog.at_level(logging.INFO):
        async with ServiceApp(svc, settings, url=nats_server.url):
            await gateway.raw(junk_subject, b"{not json", msg_id="junk-1")
            await gateway.raw(junk_subject, json.dumps(bad_field).encode(), msg_id="junk-2")
            await gateway.command(good)
            records = await dlq.dead_letters(2)
            actions = await outbound.actions(2)

    assert [r.deliveries for r in records] == [1, 1]
    assert "not valid JSON" in records[0].error
    assert "user.id" in records[1].error
    assert records[1].correlation_id == bad_field["correlation_id"]
    by_chat = {a.chat_id: texts([a]) for a in actions}
    assert by_chat[good.chat.id] == ["next one"]
    assert by_chat[5] == ["Lo siento, algo salió mal y no pude responder. Inténtalo más tarde."]
    lines = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert any("not valid JSON" in line for line in lines)


async def test_refusal_is_a_reply_not_a_retry_nor_an_error(
    nats_server: NatsServer, settings: Settings, gateway: Gateway, outbound: StreamReader
) -> None:
    svc, _ = flaky_service()
    async with ServiceApp(svc, settings, url=nats_server.url) as app:
        await gateway.command(make_command(command="refuse", language="es"))
        await gateway.command(make_command(command="secret"))
        await gateway.command(make_command(command="nope"))
        replies = sorted(texts(await outbound.actions(3)))
        await outbound.actions(1, timeout=0.5)  # nothing more (no retries)
        counters = {c.name: c for c in app.stats}
        await eventually(lambda: counters["refuse"].num_requests == 1)
    secret = make_command(command="secret")
    assert replies == [
        "/nope is not a command of echo.",
        "/secret is for the bot's admins only. To become one, the bot's operator adds your "
        f"user id {secret.user.id} to BOTBUS_ADMIN_IDS and restarts the bot.",
        "Ni hablar.",
    ]
    # Refusals are answers, not errors: `botbus status` counts only failures.
    assert counters["refuse"].num_errors == 0 and counters["refuse"].num_requests == 1


@pytest.mark.slow  # restarts the broker
async def test_consume_loop_survives_a_nats_restart(tmp_path: Path, settings: Settings) -> None:
    data = tmp_path / "restart"
    server = NatsServer(data, settings)
    await server.start()
    port = server.port
    svc, _ = flaky_service()
    try:
        admin = await connect_as(server, settings, "admin")
        await ensure_topology(admin.jetstream())
        await admin.close()
        async with ServiceApp(svc, settings, url=server.url):
            await server.stop()
            server = NatsServer(data, settings, port=port)
            await server.start()
            gw = await connect_as(server, settings, "gateway")
            admin = await connect_as(server, settings, "admin")
            reader = StreamReader(
                admin.jetstream(), subjects.STREAM_OUTBOUND, subjects.outbound_of("echo")
            )
            cmd = make_command("after restart")
            await Gateway(gw).command(cmd)
            actions = await reader.actions(1, timeout=20)
            await reader.close()
            await gw.close()
            await admin.close()
        assert [a.correlation_id for a in actions] == [cmd.correlation_id]
    finally:
        await server.stop()
