"""Bad input never kills the gateway; buttons reach the service they name."""

from __future__ import annotations

from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects
from botbus.gateway import Gateway
from botbus.models import InboundCallback, InlineButton, InlineKeyboard, SendText, decode_as, encode
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient
from botbus.settings import Settings

from .conftest import MiniService, connect_admin, wait_until_live
from .factories import message_texts, publish_reply

GOOD = {
    "update_id": 900,
    "message": {
        "message_id": 1,
        "date": 0,
        "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "is_bot": False, "first_name": "Ok"},
        "text": "fine",
    },
}

MALFORMED: list[object] = [
    None,
    "string",
    [],
    {},
    {"update_id": "nine"},
    {"update_id": 901, "message": "not an object"},
    {"update_id": 902, "message": {"message_id": 1, "chat": {"id": "x"}, "text": "hi"}},
    {
        "update_id": 903,
        "message": {
            "message_id": 1,
            "chat": {"id": 5, "type": "moon"},
            "from": {"id": 5},
            "text": "hi",
        },
    },
    {"update_id": 904, "callback_query": {"from": {"id": 5}}},
    {
        "update_id": 905,
        "message": {
            "message_id": 1,
            "chat": {"id": 5, "type": "private"},
            "from": {"id": 5},
            "text": "x" * 10_000,
        },
    },
    {"update_id": 906, "poll": {"id": "1"}},
]


async def test_malformed_updates_are_skipped_and_the_rest_published(
    gateway: Gateway, nats_server: NatsServer, gw_settings: Settings
) -> None:
    nc = await connect_admin(nats_server, gw_settings)
    js = nc.jetstream()
    await js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(durable_name="test_all", ack_policy=AckPolicy.EXPLICIT),
    )
    try:
        assert gateway.ingest is not None
        await gateway.ingest.handle([*MALFORMED, GOOD])
        state = (await js.stream_info(subjects.STREAM_INBOUND)).state
    finally:
        await nc.close()
    # The good update and the over-long one (cut to 4096 characters) made it.
    assert state.messages == 2
    assert gateway.metrics.updates_malformed._value.get() == 9
    assert gateway.health()["tasks_running"]


async def test_button_press_goes_to_the_named_service(
    gateway: Gateway,
    echo: MiniService,
    user: SandboxClient,
    bot: SandboxBot,
    nats_server: NatsServer,
    gw_settings: Settings,
) -> None:
    await wait_until_live(gateway, "echo")
    sent = await user.send_text(bot.id, "hi", user={"id": 9100, "first_name": "B"})
    chat = int(sent["chat_id"])
    nc = await connect_admin(nats_server, gw_settings)
    try:
        psub = await nc.jetstream().pull_subscribe(
            subjects.inbound_callback("echo"), durable="test_cb", stream=subjects.STREAM_INBOUND
        )
        keyboard = {"rows": [[{"text": "Go", "callback_data": "echo:go"}]]}
        await publish_reply(nc, chat, "pick one", keyboard=keyboard)
        [message] = await user.wait_for(bot.id, chat, kind="message", timeout=10)
        message_id = message["message"]["message_id"]
        await user.press(bot.id, chat_id=chat, message_id=message_id, user=9100, label="Go")
        [msg] = await psub.fetch(1, timeout=5)
        callback = decode_as(InboundCallback, msg.data)
        assert callback.service == "echo" and callback.data == "go"
        # A button of a service the gateway does not know (removed, or never seen).
        stale = SendText(
            service="gone",
            chat_id=chat,
            idempotency_key="stale-1",
            text="old",
            keyboard=InlineKeyboard(rows=[[InlineButton(text="Stale", callback_data="gone:1")]]),
        )
        await nc.jetstream().publish(subjects.outbound("gone", "interactive"), encode(stale))
        [old] = await user.wait_for(bot.id, chat, kind="message", after=message["seq"], timeout=10)
        old_id = old["message"]["message_id"]
        await user.press(bot.id, chat_id=chat, message_id=old_id, user=9100, label="Stale")
        [answer] = await user.wait_for(
            bot.id, chat, kind="callback_answer", after=old["seq"], timeout=10
        )
    finally:
        await nc.close()
    assert answer["text"] == "This button no longer works."
    assert message_texts([message, old]) == ["pick one", "old"]
