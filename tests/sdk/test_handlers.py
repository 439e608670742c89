"""Every kind of handler: plain messages, callbacks, events, lifecycle hooks."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client

from botbus import subjects
from botbus.models import (
    AnswerCallback,
    DeliveryEvent,
    ForgetUser,
    InboundCallback,
    InboundMessage,
    SendText,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.service import App, Context, Service, ServiceApp
from botbus.settings import Settings
from tests.sdk.conftest import Gateway, gather_replies
from tests.support.builders import make_command, make_message
from tests.support.outbox import StreamReader


def games_service(seen: dict[str, list[object]]) -> Service:
    """A service (connecting as the "games" user) with every handler kind."""
    svc = Service("games", "2.1.0", {"en": "Games", "es": "Juegos"})

    @svc.command("play", en="Play", es="Jugar")
    async def play(ctx: Context, cmd: object) -> None:
        await ctx.reply("pick", keyboard=[[ctx.button("Rock", "rps:rock")]])

    @svc.on_message
    async def message(ctx: Context, msg: InboundMessage) -> None:
        seen["message"].append(msg.text)

    @svc.on_callback
    async def pressed(ctx: Context, cb: InboundCallback) -> None:
        seen["callback"].append(cb.data)
        await ctx.answer_callback(ctx.t(en="You chose rock", es="Elegiste piedra"))

    @svc.on_forget
    async def forget(ctx: Context, ev: ForgetUser) -> None:
        kv = await ctx.kv()
        await kv.delete(f"score.{ev.user_id}")
        seen["forget"].append(ev.user_id)

    @svc.on_delivery
    async def refused(ctx: Context, ev: DeliveryEvent) -> None:
        seen["delivery"].append(ev.description)

    @svc.on_startup
    async def startup(app: App) -> None:
        kv = await app.kv()
        await kv.put("score.42", b"3")
        seen["startup"].append(app.instance_id)

    @svc.on_shutdown
    async def shutdown(app: App) -> None:
        seen["shutdown"].append(app.instance_id)

    return svc


async def wait_for(check: object, timeout: float = 10.0) -> None:
    """Wait until ``check()`` is truthy."""
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_each_handler_kind_gets_its_traffic(
    nats_server: NatsServer, settings: Settings, gateway: Gateway, topology: Client
) -> None:
    seen: dict[str, list[object]] = {
        k: [] for k in ("message", "callback", "forget", "delivery", "startup", "shutdown")
    }
    reader = StreamReader(
        topology.jetstream(), subjects.STREAM_OUTBOUND, subjects.outbound_of("games")
    )
    async with ServiceApp(games_service(seen), settings, url=nats_server.url) as app:
        assert seen["startup"] == [app.instance_id]
        await gateway.command(make_command(service="games", command="play"))
        [keyboard_msg] = await reader.actions(1)
        msg = make_message("hello there")
        await gateway.js.publish(subjects.INBOUND_MESSAGES, encode(msg))
        callback = InboundCallback(
            correlation_id="1:cb",
            bot_id=1,
            update_id=5,
            chat={"id": 42},
            user={"id": 42},
            language="es",
            callback_query_id="q1",
            service="games",
            data="rps:rock",
        )
        await gateway.js.publish(subjects.inbound_callback("games"), encode(callback))
        await gateway.js.publish(
            subjects.EVENT_FORGET, encode(ForgetUser(user_id=42, correlation_id="1:f"))
        )
        await gateway.js.publish(
            subjects.delivery_event("games"),
            encode(
                DeliveryEvent(
                    service="games",
                    chat_id=42,
                    idempotency_key="k",
                    error_code=403,
                    description="bot was blocked by the user",
                )
            ),
        )
        await wait_for(lambda: all(seen[k] for k in ("message", "callback", "forget", "delivery")))
        [answer] = await reader.actions(1)
        kv = await app.kv()
        with pytest.raises(Exception, match="not found"):
            await kv.get("score.42")
        info = (await gather_replies(topology, f"{subjects.SRV_INFO}.games", 1))[0]
    await reader.close()

    assert seen["message"] == ["hello there"]
    assert seen["callback"] == ["rps:rock"]
    assert seen["forget"] == [42]
    assert seen["delivery"] == ["bot was blocked by the user"]
    assert seen["shutdown"] == [app.instance_id]
    assert isinstance(keyboard_msg, SendText) and keyboard_msg.keyboard is not None
    assert keyboard_msg.keyboard.rows[0][0].callback_data == "games:rps:rock"
    assert isinstance(answer, AnswerCallback)
    assert answer.callback_query_id == "q1" and answer.text == "Elegiste piedra"
    assert info["metadata"]["botbus.listens"] == "true"
    assert info["version"] == "2.1.0"
    assert json.loads(info["metadata"]["botbus.description"]) == {"en": "Games", "es": "Juegos"}


def test_button_data_over_64_bytes_is_refused_with_advice(settings: Settings) -> None:
    svc = Service("games", "1.0.0", {"en": "Games"})
    app = ServiceApp(svc, settings)
    ctx = Context(app, make_command(service="games"), key_base="k", deliveries=1)
    assert ctx.button("ok", "x").callback_data == "games:x"
    with pytest.raises(ValueError, match="shorten"):
        ctx.button("too long", "x" * 60)
