"""The contract pieces every component relies on."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig

from botbus import subjects, topology
from botbus.errors import ConfigError, PayloadError
from botbus.models import (
    InboundCommand,
    SendText,
    decode_action,
    decode_inbound,
    encode,
)
from botbus.settings import load_settings
from tests.support.waiting import eventually


def make_command(**overrides: object) -> InboundCommand:
    fields: dict[str, object] = {
        "correlation_id": "1:7",
        "bot_id": 1,
        "update_id": 7,
        "chat": {"id": 10, "type": "private"},
        "user": {"id": 10, "first_name": "Ana", "language_code": "es"},
        "message_id": 3,
        "service": "echo",
        "command": "echo",
        "args": "hola",
    }
    fields.update(overrides)
    return InboundCommand.model_validate(fields)


def test_inbound_round_trip() -> None:
    cmd = make_command()
    assert decode_inbound(encode(cmd)) == cmd


def test_invalid_payload_names_the_field() -> None:
    bad = encode(make_command()).replace(b'"chat":{"id":10', b'"chat":{"id":"ten"')
    with pytest.raises(PayloadError) as info:
        decode_inbound(bad, subject="botbus.in.cmd.echo.echo")
    assert info.value.field == "command.chat.id"
    assert "chat.id" in str(info.value)


def test_junk_is_a_clear_payload_error() -> None:
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode_action(b"{nope")


def test_callback_data_over_64_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="callback_data"):
        SendText.model_validate(
            {
                "service": "games",
                "chat_id": 1,
                "idempotency_key": "k",
                "text": "board",
                "keyboard": {"rows": [[{"text": "x", "callback_data": "é" * 33}]]},
            }
        )


def test_subject_tokens_are_checked() -> None:
    assert subjects.inbound_command("echo", "ping") == "botbus.in.cmd.echo.ping"
    with pytest.raises(ValueError, match="invalid service name"):
        subjects.outbound("Echo.>", "interactive")
    assert subjects.outbound("echo", "bulk") == "botbus.out.echo.bulk"
    with pytest.raises(ValueError, match="priority must be one of"):
        subjects.outbound("echo", "urgent")


def test_malformed_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="BOTBUS_WEBHOOK_LISTEN"):
        load_settings(_env_file=None, BOTBUS_WEBHOOK_LISTEN="nope")


async def test_embedded_nats_server_answers(admin_nc: Client) -> None:
    sub = await admin_nc.subscribe("t.ping")
    await admin_nc.publish("t.ping", b"hi")
    msg = await sub.next_msg(timeout=2)
    assert msg.data == b"hi"


async def test_buckets_allow_direct_gets(admin_nc: Client) -> None:
    js = admin_nc.jetstream()
    fresh = await topology.open_bucket(js, KeyValueConfig(bucket="t_fresh", history=1))
    await fresh.put("k", b"v")
    assert (await js.stream_info("KV_t_fresh")).config.allow_direct
    assert (await fresh.get("k")).value == b"v"
    # A bucket made before direct gets were used is switched over, its data kept.
    old = await js.create_key_value(KeyValueConfig(bucket="t_old", history=1))
    await old.put("k", b"kept")
    assert not (await js.stream_info("KV_t_old")).config.allow_direct
    reopened = await topology.open_bucket(js, KeyValueConfig(bucket="t_old", history=1))
    assert (await js.stream_info("KV_t_old")).config.allow_direct
    assert (await reopened.get("k")).value == b"kept"


async def test_waiting_for_a_stream_warns_only_after_a_grace(
    admin_nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Services start beside the gateway: a missing stream is normal at first.
    caplog.set_level(logging.INFO, logger="botbus.topology")
    js = admin_nc.jetstream()
    now = [1000.0]  # the waiting's clock, moved by hand

    def waiting(level: int) -> bool:
        return any(
            r.levelno == level and "waiting for stream t_late" in r.getMessage()
            for r in caplog.records
        )

    waiter = asyncio.create_task(topology.wait_for_streams(js, ["t_late"], clock=lambda: now[0]))
    await eventually(lambda: waiting(logging.INFO), what="an INFO line")
    assert not waiting(logging.WARNING)
    now[0] += topology.STREAM_WAIT_GRACE
    await eventually(lambda: waiting(logging.WARNING), what="a WARNING after the grace")
    await js.add_stream(name="t_late", subjects=["t.late"])
    await asyncio.wait_for(waiter, timeout=10)


def test_names_with_a_trailing_newline_are_refused() -> None:
    """``$`` matches before a final newline: every name check must reject "name\\n"."""
    from botbus.auth import check_service_name
    from botbus.i18n import Catalog
    from botbus.provision import Refused, check_name, check_subjects
    from botbus.service import Service

    assert subjects.is_valid_name("start") and not subjects.is_valid_name("start\n")
    with pytest.raises(ConfigError):
        check_service_name("evil\n")
    with pytest.raises(Refused):
        check_name("evil", "svc_evil_x\n")
    with pytest.raises(Refused):
        check_subjects("evil", ["evil.a\n.b"])
    with pytest.raises(ConfigError):
        Catalog.parse("t", {"en\n": 'x = "y"'})
    with pytest.raises(ValueError, match="suffix"):
        Service("evil", "1.0.0", description={"en": "x"}).stream("x\n", subjects=["evil.x"])
