"""Flood limits (429 + retry_after) and webhook delivery with redelivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from telegram.error import RetryAfter

from botbus.sandbox import Limits
from botbus.sandbox._limits import RateLimiter
from tests.sandbox.conftest import USER, World


async def test_chat_burst_then_429_then_honoured_retry_passes(world: World) -> None:
    await world.client.set_limits(enabled=True, chat_per_second=1, chat_burst=2)
    await world.user_says("hi")
    await world.ptb.send_message(USER, "1")
    await world.ptb.send_message(USER, "2")
    with pytest.raises(RetryAfter) as refused:
        await world.ptb.send_message(USER, "3")
    retry_after = refused.value.retry_after
    seconds = retry_after if isinstance(retry_after, int) else retry_after.total_seconds()
    assert seconds == 1
    await asyncio.sleep(seconds)
    assert (await world.ptb.send_message(USER, "3")).text == "3"
    stats = await world.client.stats(world.bot.id)
    assert stats["too_many_requests"] == 1
    assert stats["methods"]["sendMessage"] == 4


async def test_global_limit_spans_chats_but_other_bots_are_free(world: World) -> None:
    await world.client.set_limits(enabled=True, global_per_second=3, chat_burst=10)
    for user in (1, 2, 3, 4):
        await world.user_says("hi", user=user)
    for user in (1, 2, 3):
        await world.ptb.send_message(user, "ok")
    with pytest.raises(RetryAfter):
        await world.ptb.send_message(4, "one too many")


def test_group_limit_is_per_minute() -> None:
    limiter = RateLimiter(Limits(group_per_minute=20, chat_burst=100, chat_per_second=100))
    for i in range(20):
        assert limiter.check(-5, now=float(i)) is None
    retry = limiter.check(-5, now=20.0)
    assert retry == 40  # the first of the 20 leaves the minute window at t=60
    assert limiter.check(-5, now=60.0) is None
    assert limiter.check(5, now=20.0) is None  # private chats are not groups


def test_disabled_limits_never_refuse() -> None:
    limiter = RateLimiter(Limits(enabled=False))
    assert all(limiter.check(1, now=0.0) is None for _ in range(100))


def test_bad_limit_values_are_refused_with_the_name() -> None:
    limits = Limits()
    with pytest.raises(ValueError, match="chat_per_second"):
        limits.update(chat_per_second=0)
    with pytest.raises(ValueError, match="unknown limit"):
        limits.update(per_fortnight=3)


async def test_injected_fault_fails_next_call_only(world: World) -> None:
    await world.user_says("hi")
    await world.client.fail_next(world.bot.id, method="sendMessage", error_code=429, retry_after=7)
    with pytest.raises(RetryAfter) as refused:
        await world.ptb.send_message(USER, "x")
    assert refused.value.retry_after in (7, __import__("datetime").timedelta(seconds=7))
    assert (await world.ptb.send_message(USER, "x")).text == "x"


class Receiver:
    """A webhook receiver that answers 500 to the first ``fail`` deliveries."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls: list[tuple[str | None, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self._changed = asyncio.Condition()

    async def wait_calls(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` deliveries arrived."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.calls) >= count), timeout
            )

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        self.arrived.set()
        async with self._changed:
            self._changed.notify_all()
        if len(self.calls) <= self.fail:
            return web.Response(status=500, text="boom")
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    handler = Receiver(fail=1)
    app = web.Application()
    app.router.add_post("/hook", handler.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield handler, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


async def test_webhook_delivers_with_secret_and_redelivers_after_500(
    world: World, receiver: tuple[Receiver, str]
) -> None:
    handler, url = receiver
    assert await world.ptb.set_webhook(url, secret_token="s3cret-token")
    first = await world.user_says("one")
    second = await world.user_says("two")
    await handler.wait_calls(3)
    secrets = {secret for secret, _ in handler.calls}
    assert secrets == {"s3cret-token"}
    # the failed first update comes again, and order is kept
    assert [body["update_id"] for _, body in handler.calls[:3]] == [first, first, second]
    info = await world.ptb.get_webhook_info()
    assert info.url == url
    assert info.last_error_message is not None and "500" in info.last_error_message
    async with asyncio.timeout(5):
        # the backlog is only observable through the API, so poll it (bounded by the timeout)
        while (await world.ptb.get_webhook_info()).pending_update_count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_get_updates_conflicts_while_webhook_is_set(
    world: World, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    await world.ptb.set_webhook(url)
    from telegram.error import Conflict

    with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
        await world.ptb.get_updates()
    assert await world.ptb.delete_webhook()
    assert await world.ptb.get_updates() == ()
    assert (await world.ptb.get_webhook_info()).url == ""


async def test_webhook_drop_pending_updates(world: World, receiver: tuple[Receiver, str]) -> None:
    handler, url = receiver
    await world.user_says("old news")
    await world.ptb.set_webhook(url, drop_pending_updates=True)
    fresh = await world.user_says("fresh")
    await asyncio.wait_for(handler.arrived.wait(), 5)
    assert handler.calls[0][1]["update_id"] == fresh
