"""Payloads evolve without lock-step upgrades: read tolerantly, write strictly.

A newer part adds a field (and says so in ``schema_version``); an older part
that does not know the field still does its job, in both directions.
"""

from __future__ import annotations

import json

import nats
import pytest

from botbus import subjects
from botbus.connect import connect_options
from botbus.gateway import Gateway
from botbus.models import InboundCommand, SendText, decode_action, encode
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient
from botbus.settings import Settings
from botbus.testing import ServiceHarness
from services.echo.service import service as echo


def newer(payload: bytes, **added: object) -> bytes:
    """``payload`` as a newer version of botbus would write it: version 2, new fields."""
    data = json.loads(payload)
    data.update(schema_version=2, **added)
    return json.dumps(data).encode()


def test_a_producer_cannot_write_a_field_the_model_does_not_have() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        SendText(service="echo", chat_id=1, idempotency_key="k", text="hi", effect="confetti")


def test_a_consumer_reads_a_newer_payload_and_keeps_what_it_knows() -> None:
    action = SendText(service="echo", chat_id=1, idempotency_key="k", text="hi")
    read = decode_action(newer(encode(action), effect="confetti", nested={"a": 1}))
    assert isinstance(read, SendText)
    assert read.text == "hi" and read.chat_id == 1 and read.schema_version == 2


async def test_an_older_service_answers_a_newer_gateway() -> None:
    """A command as a newer gateway publishes it (extra fields, version 2)."""
    async with ServiceHarness(echo) as bus:
        command = InboundCommand.model_validate(
            {
                "correlation_id": "1:9001",
                "bot_id": 1,
                "update_id": 9001,
                "chat": {"id": 42, "type": "private"},
                "user": {"id": 42, "first_name": "Ana"},
                "message_id": 9001,
                "service": "echo",
                "command": "echo",
                "args": "from the future",
            }
        )
        data = json.loads(encode(command))
        data["chat"]["is_forum"] = False  # nested fields a newer gateway adds
        data["user"]["is_premium"] = True
        await bus.send_raw(
            subjects.inbound_command("echo", "echo"),
            newer(json.dumps(data).encode(), reactions_enabled=True),
        )
        reply = await bus.reply()
    assert reply.text == "from the future"


async def test_a_newer_service_is_delivered_by_an_older_gateway(
    gateway: Gateway,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    """An action as a newer service writes it (a field this gateway does not know)."""
    sent = await user.send_text(bot.id, "hello", user={"id": 8101, "first_name": "U"})
    chat = int(sent["chat_id"])
    action = SendText(service="echo", chat_id=chat, idempotency_key="v2-1", text="new and fine")
    nc = await nats.connect(nats_server.url, **connect_options(gw_settings, "admin"))
    try:
        await nc.jetstream().publish(
            subjects.outbound("echo", "interactive"),
            newer(encode(action), effect_id="5104841245755180586"),
            headers={"Nats-Msg-Id": action.idempotency_key},
        )
        events = await user.wait_for(bot.id, chat, kind="message", timeout=10)
    finally:
        await nc.close()
    assert [e["message"]["text"] for e in events] == ["new and fine"]
