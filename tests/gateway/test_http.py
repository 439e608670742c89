"""AiohttpRequest: a PTB Bot on the aiohttp transport against the real sandbox over HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import telegram
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from botbus.gateway.http import AiohttpRequest
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from tests.sandbox.conftest import png

USER = 4242
WAIT = 10.0  # seconds a test waits for something that should take milliseconds
FAKE_TOKEN = "123456789:AAE-secret-part-of-the-token-xyz"


def make_bot(
    token: str,
    base_url: str,
    *,
    request: AiohttpRequest | None = None,
    updates: AiohttpRequest | None = None,
    file_url: str | None = None,
) -> telegram.Bot:
    """A PTB Bot whose every call goes through AiohttpRequest."""
    return telegram.Bot(
        token,
        base_url=base_url,
        base_file_url=file_url or base_url.replace("/bot", "/file/bot"),
        request=request or AiohttpRequest(),
        get_updates_request=updates or AiohttpRequest(),
    )


@pytest.fixture
def registered(sandbox: SandboxServer) -> SandboxBot:
    """A bot registered in the sandbox."""
    return sandbox.add_bot(username="aiohttp_bot")


@pytest.fixture
async def ptb(sandbox: SandboxServer, registered: SandboxBot) -> AsyncIterator[telegram.Bot]:
    """An initialised PTB Bot on AiohttpRequest, pointed at the sandbox."""
    bot = make_bot(registered.token, sandbox.api_url, file_url=sandbox.file_url)
    async with bot:
        yield bot


@pytest.fixture
async def chat(sandbox_client: SandboxClient, registered: SandboxBot) -> int:
    """A private chat with USER (the user wrote first, as Telegram requires)."""
    await sandbox_client.send_text(registered.id, "hello", user=USER)
    return USER


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A server that accepts connections, reads, and never answers; yields its API URL."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/bot"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def fake_api(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A tiny aiohttp app answering every Bot API call with ``handler``; yields its API URL."""
    app = web.Application()
    app.router.add_route("*", "/bot{token}/{method}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/bot"
    finally:
        await runner.cleanup()


def assert_no_token(exc: BaseException, token: str) -> None:
    """Neither the error nor what a traceback prints with it may show the bot token."""
    seen: BaseException | None = exc
    while seen is not None:
        assert token not in str(seen) and token not in repr(seen), repr(seen)
        # the chain a traceback prints: the cause, else the context unless suppressed
        if seen.__cause__ is not None:
            seen = seen.__cause__
        elif not seen.__suppress_context__:
            seen = seen.__context__
        else:
            seen = None


async def test_initialize_fetches_get_me(
    sandbox: SandboxServer, registered: SandboxBot, sandbox_client: SandboxClient
) -> None:
    async with make_bot(registered.token, sandbox.api_url) as bot:
        assert bot.username == "aiohttp_bot"
        assert bot.id == registered.id
    stats = await sandbox_client.stats(registered.id)
    assert stats["methods"]["getMe"] == 1


async def test_send_message_with_keyboard_and_parse_mode(
    ptb: telegram.Bot, chat: int, registered: SandboxBot, sandbox_client: SandboxClient
) -> None:
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Yes ✅", callback_data="yes"),
                InlineKeyboardButton("No", url="https://example.org"),
            ]
        ]
    )
    sent = await ptb.send_message(
        chat, "<b>Pick</b> one — ünïcode & co", parse_mode="HTML", reply_markup=keyboard
    )
    assert sent.text == "Pick one — ünïcode & co"
    assert sent.entities[0].type == "bold"
    assert sent.reply_markup == keyboard
    (event,) = await sandbox_client.wait_for(registered.id, chat, kind="message", timeout=WAIT)
    assert event["message"]["text"] == "Pick one — ünïcode & co"
    buttons = event["message"]["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["Yes ✅", "No"]


async def test_send_photo_uploads_png_bytes_and_get_file_downloads_them(
    ptb: telegram.Bot, chat: int, registered: SandboxBot, sandbox_client: SandboxClient
) -> None:
    image = png(64, 32)
    sent = await ptb.send_photo(chat, image, caption="<i>tiny</i>", parse_mode="HTML")
    largest = sent.photo[-1]
    assert (largest.width, largest.height) == (64, 32)
    assert sent.caption == "tiny" and sent.caption_entities[0].type == "italic"
    assert await sandbox_client.file(registered.id, largest.file_id) == image
    telegram_file = await ptb.get_file(largest.file_id)
    assert bytes(await telegram_file.download_as_bytearray()) == image


async def test_bad_upload_is_a_bad_request(ptb: telegram.Bot, chat: int) -> None:
    with pytest.raises(BadRequest, match=r"(?i)image|photo"):
        await ptb.send_photo(chat, b"definitely not an image")


async def test_bad_request_carries_telegrams_description(ptb: telegram.Bot, chat: int) -> None:
    with pytest.raises(BadRequest) as refused:
        await ptb.send_message(chat + 1, "nobody is there")
    assert refused.value.message == "Chat not found"  # PTB strips "Bad Request: "


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_forced_429_surfaces_as_retry_after(
    ptb: telegram.Bot, chat: int, registered: SandboxBot, sandbox_client: SandboxClient
) -> None:
    await sandbox_client.fail_next(
        registered.id, method="sendMessage", error_code=429, retry_after=7
    )
    with pytest.raises(RetryAfter) as refused:
        await ptb.send_message(chat, "too soon")
    retry_after = refused.value.retry_after
    seconds = retry_after if isinstance(retry_after, int) else retry_after.total_seconds()
    assert seconds == 7
    assert (await ptb.send_message(chat, "now it passes")).text == "now it passes"


async def test_long_poll_outlives_the_default_read_timeout(
    sandbox: SandboxServer, registered: SandboxBot, sandbox_client: SandboxClient
) -> None:
    updates = AiohttpRequest(read_timeout=0.3)
    async with make_bot(registered.token, sandbox.api_url, updates=updates) as bot:
        # An empty poll lasts its 1 s timeout, more than the 0.3 s default read timeout:
        # the per-call read timeout (PTB sends read_timeout + timeout) must be honoured.
        assert await bot.get_updates(timeout=1, read_timeout=5) == ()
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        await sandbox_client.send_text(registered.id, "wake up", user=USER)
        (update,) = await asyncio.wait_for(poll, WAIT)
    assert update.message is not None and update.message.text == "wake up"


async def test_poller_style_post_with_explicit_read_timeout(
    sandbox: SandboxServer, registered: SandboxBot, sandbox_client: SandboxClient
) -> None:
    request = AiohttpRequest(read_timeout=0.3)
    await request.initialize()
    try:
        poll = asyncio.create_task(
            request.post(
                f"{sandbox.api_url}{registered.token}/getUpdates?timeout=30", read_timeout=40
            )
        )
        await sandbox_client.send_text(registered.id, "ping", user=USER)
        result = await asyncio.wait_for(poll, WAIT)
    finally:
        await request.shutdown()
    assert isinstance(result, list) and result[0]["message"]["text"] == "ping"


async def test_closed_port_is_a_network_error_without_the_token() -> None:
    request, updates = AiohttpRequest(), AiohttpRequest()
    bot = make_bot(
        FAKE_TOKEN, f"http://127.0.0.1:{free_port()}/bot", request=request, updates=updates
    )
    with pytest.raises(NetworkError) as failed:
        await asyncio.wait_for(bot.initialize(), WAIT)
    # Bot.initialize() opened both transports before getMe failed; Bot.shutdown() would skip them
    await request.shutdown()
    await updates.shutdown()
    assert not isinstance(failed.value, TimedOut)
    assert "cannot connect" in failed.value.message and "getMe" in failed.value.message
    assert_no_token(failed.value, FAKE_TOKEN)


async def test_connect_timeout_is_timed_out_without_the_token() -> None:
    # A listener whose accept queue is full drops further SYNs: connecting hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            request = AiohttpRequest(connect_timeout=0.3)
            bot = make_bot(FAKE_TOKEN, f"http://127.0.0.1:{port}/bot", request=request)
            with pytest.raises(TimedOut) as failed:
                await asyncio.wait_for(bot.get_me(), WAIT)
            await request.shutdown()
        finally:
            for filler in fillers:
                filler.close()
    assert "could not connect within 0.3 s" in failed.value.message
    assert_no_token(failed.value, FAKE_TOKEN)


async def test_silent_server_times_out_after_the_read_timeout() -> None:
    async with silent_server() as api_url:
        bot = make_bot(FAKE_TOKEN, api_url, request=AiohttpRequest(read_timeout=0.3))
        with pytest.raises(TimedOut) as failed:
            await asyncio.wait_for(bot.get_me(), WAIT)
        assert "read timeout of 0.3 s" in failed.value.message
        assert_no_token(failed.value, FAKE_TOKEN)
        # a per-call read timeout overrides the default one
        with pytest.raises(TimedOut, match=r"read timeout of 0\.2 s"):
            await asyncio.wait_for(bot.get_me(read_timeout=0.2), WAIT)
        await bot.request.shutdown()  # never initialised: Bot.shutdown() skips it


async def test_full_pool_times_out_and_says_the_request_was_not_sent() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()
    calls: list[str] = []

    async def held(request: web.Request) -> web.Response:
        calls.append(request.match_info["method"])
        arrived.set()
        await release.wait()
        return web.json_response({"ok": True, "result": True})

    request = AiohttpRequest(connection_pool_size=1, pool_timeout=0.2)
    async with fake_api(held) as api_url:
        bot = make_bot(FAKE_TOKEN, api_url, request=request)
        slow = asyncio.create_task(bot.log_out())
        await asyncio.wait_for(arrived.wait(), WAIT)  # it holds the only connection
        with pytest.raises(TimedOut, match=r"Pool timeout.*NOT sent"):
            await bot.close()
        release.set()
        assert await asyncio.wait_for(slow, WAIT) is True
        assert await bot.close() is True  # the connection is free again
        await bot.request.shutdown()  # never initialised: Bot.shutdown() skips it
    assert calls == ["logOut", "close"]  # the refused call never reached the server


async def test_shutdown_is_idempotent_and_initialize_reopens(
    sandbox: SandboxServer, registered: SandboxBot, chat: int
) -> None:
    request = AiohttpRequest()
    bot = make_bot(registered.token, sandbox.api_url, request=request)
    async with bot:
        assert (await bot.send_message(chat, "one")).text == "one"
    await request.shutdown()  # again: harmless
    with pytest.raises(NetworkError, match="shut down"):
        await bot.send_message(chat, "after shutdown")
    async with bot:
        assert (await bot.send_message(chat, "two")).text == "two"


async def test_calls_reuse_one_keep_alive_connection() -> None:
    peers: list[object] = []

    async def get_me(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        me = {"id": 1, "is_bot": True, "first_name": "k", "username": "keepalive_bot"}
        return web.json_response({"ok": True, "result": me})

    async with fake_api(get_me) as api_url, make_bot(FAKE_TOKEN, api_url) as bot:
        for _ in range(5):
            await bot.get_me()
    assert len(peers) == 6 and len(set(peers)) == 1


async def test_request_body_is_the_form_ptb_sends() -> None:
    seen: dict[str, str] = {}

    async def echo_form(request: web.Request) -> web.Response:
        seen["content_type"] = request.content_type
        seen["user_agent"] = request.headers["User-Agent"]
        seen.update({k: str(v) for k, v in (await request.post()).items()})
        message = {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"}, "text": "x"}
        return web.json_response({"ok": True, "result": message})

    async with fake_api(echo_form) as api_url:
        bot = make_bot(FAKE_TOKEN, api_url)
        await bot.send_message(
            5,
            "x",
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("b", callback_data="d")]]),
        )
        await bot.request.shutdown()  # never initialised: Bot.shutdown() skips it
    assert seen["content_type"] == "application/x-www-form-urlencoded"
    assert seen["user_agent"].startswith("python-telegram-bot")
    assert seen["chat_id"] == "5" and seen["text"] == "x"
    assert '"callback_data": "d"' in seen["reply_markup"]


def test_bad_pool_size_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="connection_pool_size must be at least 1"):
        AiohttpRequest(connection_pool_size=0)
