"""The scheduler driving python-telegram-bot against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from telegram import Bot, Message

from botbus.gateway.scheduler import Budget, OutboundJob, OutboundScheduler, Outcome
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

WAIT = 30.0  # seconds: upper bound for a whole batch of outcomes


@pytest.fixture
async def bot(sandbox: SandboxServer) -> AsyncIterator[tuple[SandboxBot, Bot]]:
    """A bot registered in the sandbox and a PTB Bot pointed at it."""
    registered = sandbox.add_bot()
    ptb = Bot(registered.token, base_url=sandbox.api_url)
    await ptb.initialize()
    try:
        yield registered, ptb
    finally:
        await ptb.shutdown()


async def make_users(client: SandboxClient, bot_id: int, user_ids: range) -> None:
    """Each user writes to the bot once, so a private chat exists to send to."""
    await asyncio.gather(*(client.send_text(bot_id, "/start", user=uid) for uid in user_ids))


def sender(ptb: Bot) -> Callable[[int, str], OutboundJob]:
    """Factory of bulk jobs that send ``text`` to a chat with PTB."""

    def job(chat_id: int, text: str) -> OutboundJob:
        async def send() -> Message:
            return await ptb.send_message(chat_id, text)

        return OutboundJob(chat_id, chat_id < 0, "bulk", send, key=text)

    return job


@pytest.mark.slow  # 4 s: a broadcast paced by real limits
async def test_broadcast_within_tightened_limits_gets_no_429(
    sandbox: SandboxServer,
    sandbox_client: SandboxClient,
    bot: tuple[SandboxBot, Bot],
) -> None:
    registered, ptb = bot
    # Telegram's limits scaled down so the test is short yet limits really bind.
    await sandbox_client.set_limits(global_per_second=20, chat_per_second=2, chat_burst=2)
    users = range(5001, 5041)
    await make_users(sandbox_client, registered.id, users)
    job = sender(ptb)
    budget = Budget(global_per_second=20, per_chat_per_second=2, per_chat_burst=2)
    async with OutboundScheduler(budget) as scheduler:
        futures = [scheduler.submit(job(uid, f"news for {uid}")) for uid in users]
        # Six messages to one chat: the per-chat burst and rate bind too.
        burst = [scheduler.submit(job(5001, f"part {i}")) for i in range(6)]
        results: list[Outcome] = await asyncio.wait_for(asyncio.gather(*futures, *burst), WAIT)
    assert {r.status for r in results} == {"sent"}
    stats = await sandbox_client.stats(registered.id)
    assert stats["too_many_requests"] == 0
    events = await sandbox_client.messages(registered.id, 5001)
    texts = [e["message"]["text"] for e in events if e.get("kind") == "message"]
    assert texts[-6:] == [f"part {i}" for i in range(6)]


async def test_forced_429_on_one_chat_does_not_delay_the_others(
    sandbox: SandboxServer,
    sandbox_client: SandboxClient,
    bot: tuple[SandboxBot, Bot],
) -> None:
    registered, ptb = bot
    users = range(6001, 6011)
    await make_users(sandbox_client, registered.id, users)
    await sandbox_client.fail_next(
        registered.id, method="sendMessage", error_code=429, retry_after=1, chat_id=6001
    )
    job = sender(ptb)
    loop = asyncio.get_running_loop()
    async with OutboundScheduler() as scheduler:
        started = loop.time()
        limited = scheduler.submit(job(6001, "limited"))
        others = [scheduler.submit(job(uid, f"hello {uid}")) for uid in users[1:]]
        done = await asyncio.wait_for(asyncio.gather(*others), WAIT)
        others_took = loop.time() - started
        assert not limited.done(), "the paused chat must wait for its retry_after"
        outcome = await asyncio.wait_for(limited, WAIT)
        limited_took = loop.time() - started
        snapshot = scheduler.snapshot()
    assert {r.status for r in done} == {"sent"}
    assert outcome.status == "sent"
    assert others_took < 1.0 <= limited_took
    assert snapshot.rate_limited_total == 1 and snapshot.retries_total == 1
    stats = await sandbox_client.stats(registered.id)
    assert stats["too_many_requests"] == 1
