"""The echo service end to end, in process, against a real nats-server."""

from __future__ import annotations

import json

from nats.aio.client import Client

from botbus import subjects
from botbus.models import SendText
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings
from services.echo.service import service as echo_service
from tests.sdk.conftest import Gateway
from tests.support.builders import make_command
from tests.support.outbox import StreamReader, texts
from tests.support.waiting import eventually


async def test_command_reaches_echo_and_reply_is_correlated(
    nats_server: NatsServer, settings: Settings, gateway: Gateway, outbound: StreamReader
) -> None:
    async with ServiceApp(echo_service, settings, url=nats_server.url):
        cmd = make_command("hola mundo", chat_id=77)
        await gateway.command(cmd)
        [action] = await outbound.actions(1)
    assert isinstance(action, SendText)
    assert action.text == "hola mundo"
    assert action.chat_id == 77
    assert action.correlation_id == cmd.correlation_id
    assert action.service == "echo"
    assert action.idempotency_key == f"echo:{cmd.correlation_id}:1"


async def test_echo_without_text_gets_usage_in_users_language(
    nats_server: NatsServer, settings: Settings, gateway: Gateway, outbound: StreamReader
) -> None:
    async with ServiceApp(echo_service, settings, url=nats_server.url) as app:
        await gateway.command(make_command("", language="es"))
        await gateway.command(make_command("  ", language="en"))
        replies = texts(await outbound.actions(2))
        [stats] = [c for c in app.stats if c.name == "echo"]
        await eventually(lambda: stats.num_requests == 2)
    assert sorted(replies) == ["Usage: /echo TEXT", "Uso: /echo TEXTO"]
    assert stats.num_errors == 0  # a usage message is not an error of the service


async def test_ping_names_the_instance(
    nats_server: NatsServer, settings: Settings, gateway: Gateway, outbound: StreamReader
) -> None:
    async with ServiceApp(echo_service, settings, url=nats_server.url) as app:
        await gateway.command(make_command(command="ping"))
        [reply] = texts(await outbound.actions(1))
    assert reply.startswith(f"pong from echo instance {app.instance_id} (")
    assert reply.endswith(" ms)")


async def test_srv_info_lists_echo_commands_in_both_languages(
    nats_server: NatsServer, settings: Settings, topology: Client
) -> None:
    async with ServiceApp(echo_service, settings, url=nats_server.url) as app:
        reply = await topology.request(f"{subjects.SRV_INFO}.echo", b"", timeout=5)
        info = json.loads(reply.data)
        ping = json.loads((await topology.request(subjects.SRV_PING, b"", timeout=5)).data)
    assert info["name"] == "echo" and info["id"] == app.instance_id
    assert ping["id"] == app.instance_id
    meta = info["metadata"]
    assert meta["botbus.listens"] == "false"
    assert meta["botbus.instance"] == app.instance_id
    commands = {c["command"]: c for c in json.loads(meta["botbus.commands"])}
    assert commands["echo"]["description"] == {"en": "Repeat TEXT", "es": "Repite TEXTO"}
    assert set(commands) == {"echo", "ping"}
    assert {e["name"] for e in info["endpoints"]} == {"echo", "ping"}
