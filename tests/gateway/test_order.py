"""Per-chat order across the two lanes: a reply never overtakes an earlier bulk message
to its chat, however deep in the backlog that message waits, while replies to other
chats still go ahead of the broadcast.

The bulk consumer's fetch window (``DEFAULT_MAX_ACK_PENDING``, 20,000 in
production) is cut to 20 actions here, so a 200-chat broadcast is a backlog
mostly still in the stream, as a broadcast of a million would be in production.
"""

from __future__ import annotations

import time

import pytest

from botbus.gateway import Gateway, outbound
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings

from .conftest import connect_admin
from .factories import message_texts, publish_reply
from .test_broadcast import make_chats, publish_bulk, sent_messages, subscribers

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

WINDOW = 20  # bulk actions the gateway holds at once in this test
RATE = 40  # msg/s: a 200-chat broadcast lasts about 5 s
REPLY_WAIT = 10.0  # seconds: generous bound for a reply to show up


@pytest.fixture
def order_settings(gw_settings: Settings) -> Settings:
    """The test gateway with a slow enough budget for the broadcast to be under way."""
    return gw_settings.model_copy(update={"rate_global": RATE})


async def test_reply_waits_only_for_the_earlier_bulk_message_to_its_chat(
    monkeypatch: pytest.MonkeyPatch,
    nats_server: NatsServer,
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
    order_settings: Settings,
) -> None:
    monkeypatch.setattr(outbound, "DEFAULT_MAX_ACK_PENDING", WINDOW)
    chats = subscribers(200)
    deep = chats[150]  # its bulk message is far behind the fetch window
    bystander = 7_000_001  # gets no bulk message at all
    make_chats(quiet_sandbox, bot, [*chats, bystander])
    async with Gateway(order_settings, poll_timeout=5) as gateway:
        admin = await connect_admin(nats_server, order_settings)
        try:
            await publish_bulk(admin, chats, "digest")
            started = time.monotonic()
            await publish_reply(admin, deep, "reply to deep")
            await publish_reply(admin, bystander, "reply to bystander")
            events = await user.wait_for(bot.id, deep, count=2, kind="message", timeout=REPLY_WAIT)
            deep_took = time.monotonic() - started
            sent_then = sent_messages(gateway)
            [other] = await user.wait_for(bot.id, bystander, kind="message", timeout=REPLY_WAIT)
        finally:
            await admin.close()
    assert message_texts(events) == [f"digest for {deep}", "reply to deep"]
    assert message_texts([other]) == ["reply to bystander"]
    # Both replies went ahead of the broadcast: most of it was still to be sent.
    assert sent_then < len(chats) // 2, (sent_then, deep_took)


@pytest.mark.slow  # 3 s: its own gateway, bulk then reply to one chat
async def test_reply_stored_right_after_a_bulk_message_comes_second(
    nats_server: NatsServer,
    quiet_sandbox: SandboxServer,
    bot: SandboxBot,
    user: SandboxClient,
    gw_settings: Settings,
) -> None:
    chats = subscribers(30)
    make_chats(quiet_sandbox, bot, chats)
    async with Gateway(gw_settings, poll_timeout=5):
        admin = await connect_admin(nats_server, gw_settings)
        try:
            for chat in chats:  # an idle gateway; each pair stored back to back
                await publish_bulk(admin, [chat], "alert")
                await publish_reply(admin, chat, f"reply {chat}")
            received = {
                chat: message_texts(
                    await user.wait_for(bot.id, chat, count=2, kind="message", timeout=REPLY_WAIT)
                )
                for chat in chats
            }
        finally:
            await admin.close()
    assert all(texts == [f"alert for {c}", f"reply {c}"] for c, texts in received.items())
