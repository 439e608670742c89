"""Pure pieces of the gateway: splitting, flood control, update parsing."""

from __future__ import annotations

import aiohttp
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects
from botbus.gateway import Gateway
from botbus.gateway.calls import split_text
from botbus.gateway.normalize import Ignored, parse_command, parse_update
from botbus.gateway.users import FloodControl
from botbus.models import InboundMessage, decode_as
from botbus.natsserver import NatsServer
from botbus.settings import Settings

from .conftest import connect_admin


def test_split_prefers_line_then_word_boundaries() -> None:
    text = ("a" * 3000 + "\n") + ("b" * 3000)
    assert split_text(text) == ["a" * 3000, "b" * 3000]
    words = " ".join(["word"] * 1000)  # 4999 characters, no line break
    parts = split_text(words)
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert " ".join(parts) == words
    assert split_text("short") == ["short"]


def test_flood_control_warns_once_then_drops_then_recovers() -> None:
    flood = FloodControl(rate=1.0, burst=3)
    verdicts = [flood.check(1, now=100.0) for _ in range(6)]
    assert verdicts == ["pass", "pass", "pass", "warn", "drop", "drop"]
    assert flood.check(2, now=100.0) == "pass"  # other users are not affected
    assert flood.check(1, now=101.0) == "pass"  # one token back after a second
    assert flood.check(1, now=101.0) == "drop"  # still flooding: no second warning
    assert flood.check(1, now=110.0) == "pass"  # calmed down
    with pytest.raises(ValueError, match="rate > 0"):
        FloodControl(rate=0)


def test_commands_for_other_bots_are_not_ours() -> None:
    assert parse_command("/Echo@MyBot  hi there", "mybot") == ("echo", "hi there")
    assert parse_command("/echo@otherbot hi", "mybot") is None
    assert parse_command("/echo\nline two", "mybot") == ("echo", "line two")
    assert parse_command("not /a command", "mybot") is None


def test_unrouted_update_kinds_are_ignored_with_a_reason() -> None:
    joined = {
        "update_id": 5,
        "message": {
            "message_id": 1,
            "chat": {"id": -5, "type": "group"},
            "from": {"id": 1, "first_name": "A"},
            "new_chat_members": [{"id": 2, "first_name": "B"}],
        },
    }
    result = parse_update(joined, "mybot")
    assert isinstance(result, Ignored) and "without text" in result.reason
    assert isinstance(parse_update({"update_id": 6, "my_chat_member": {}}, "mybot"), Ignored)


async def test_edited_message_fans_out_marked_edited(
    gateway: Gateway, nats_server: NatsServer, gw_settings: Settings
) -> None:
    nc = await connect_admin(nats_server, gw_settings)
    try:
        psub = await nc.jetstream().pull_subscribe(
            subjects.INBOUND_MESSAGES,
            durable="test_edits",
            stream=subjects.STREAM_INBOUND,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
        )
        edited = {
            "update_id": 77,
            "edited_message": {
                "message_id": 3,
                "chat": {"id": 9, "type": "private"},
                "from": {"id": 9, "first_name": "E"},
                "text": "fixed typo",
            },
        }
        assert gateway.ingest is not None
        await gateway.ingest.handle([edited])
        [msg] = await psub.fetch(1, timeout=5)
    finally:
        await nc.close()
    inbound = decode_as(InboundMessage, msg.data)
    assert inbound.edited and inbound.text == "fixed typo"


async def test_health_and_metrics_endpoints(gateway: Gateway) -> None:
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["nats_connected"] is True
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert "botbus_updates_received" in await resp.text()
