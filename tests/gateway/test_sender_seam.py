"""The outbound seam: the scheduler slots in where DirectSender is."""

from __future__ import annotations

import time

from botbus.gateway import Gateway
from botbus.gateway.scheduler import OutboundScheduler
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient
from botbus.settings import Settings

from .conftest import connect_admin
from .factories import message_texts, publish_reply


async def test_scheduler_as_sender_delivers_and_honours_429(
    gw_settings: Settings, nats_server: NatsServer, user: SandboxClient, bot: SandboxBot
) -> None:
    sent = await user.send_text(bot.id, "hello", user={"id": 8101, "first_name": "S"})
    chat = int(sent["chat_id"])
    await user.fail_next(bot.id, method="sendMessage", error_code=429, retry_after=1, chat_id=chat)
    async with Gateway(gw_settings, sender=OutboundScheduler(), poll_timeout=5) as gateway:
        nc = await connect_admin(nats_server, gw_settings)
        try:
            started = time.monotonic()
            await publish_reply(nc, chat, "x" * 5000)
            events = await user.wait_for(bot.id, chat, count=2, kind="message", timeout=10)
            waited = time.monotonic() - started
        finally:
            await nc.close()
    assert [len(t) for t in message_texts(events)] == [4096, 904]
    assert waited >= 0.9
    assert gateway.metrics.actions.labels("sent")._value.get() == 2
