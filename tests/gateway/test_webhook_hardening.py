"""The webhook faces the internet: slow clients, floods, garbage and late redeliveries.

The listener's limits are tested on :class:`WebhookServer` with a small app
and small limits; bad bodies and redeliveries on a running gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import uvloop
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects
from botbus.gateway import Gateway
from botbus.gateway.webhook import WebhookServer
from botbus.natsserver import NatsServer
from botbus.settings import Settings

from .conftest import connect_admin
from .test_webhook import SECRET, hook_gateway, hook_settings, update

__all__ = ["hook_gateway", "hook_settings"]  # fixtures used below

CUT_WAIT = 5.0  # seconds: a bound against a hang, far above the limits under test


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


# `botbus gateway` runs on uvloop, whose transports differ from asyncio's: both.
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def on_loop(loop: str, body: Callable[[WebhookServer, int], Awaitable[None]]) -> None:
    """Run ``body`` against a small guarded server, on the named event loop."""

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hello)
        server = WebhookServer(app, read_timeout=0.5, max_connections=3)
        port = await server.start("127.0.0.1", 0)
        try:
            await body(server, port)
        finally:
            await server.stop()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())


async def cut_off(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (EOF or reset)."""
    async with asyncio.timeout(CUT_WAIT):
        try:
            while await reader.read(1024):
                pass
        except ConnectionError:
            pass
    return True


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """One keep-alive request on an open connection; the answer's status."""
    writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    await writer.drain()
    async with asyncio.timeout(CUT_WAIT):
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
    return status


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_trickling_headers_or_body_is_cut_off(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    on_loop(loop, trickle)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def trickle(server: WebhookServer, port: int) -> None:
    slow_headers = await asyncio.open_connection("127.0.0.1", port)
    slow_headers[1].write(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # never ends the headers
    slow_body = await asyncio.open_connection("127.0.0.1", port)
    slow_body[1].write(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    silent = await asyncio.open_connection("127.0.0.1", port)  # connects, says nothing
    for reader, writer in (slow_headers, slow_body, silent):
        await writer.drain()
        assert await cut_off(reader)
        writer.close()
    assert server.connections.timed_out == 3
    assert not server.connections.open  # nothing held once they are gone


@pytest.mark.parametrize("loop", LOOPS)
def test_connections_over_the_cap_are_refused_and_the_rest_still_served(loop: str) -> None:
    on_loop(loop, over_the_cap)


async def over_the_cap(server: WebhookServer, port: int) -> None:
    server.connections.read_timeout = 30.0  # the held ones must outlive this test
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    for reader, writer in held:  # answered, so the server surely counts them, kept alive
        assert await roundtrip(reader, writer) == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await cut_off(reader)
    writer.close()
    assert server.connections.refused == 1
    # A connection within the cap is still served.
    assert await roundtrip(*held[0]) == 200
    for _, w in held:
        w.close()


BAD_BODIES = {
    "deeply nested JSON": b"[" * 100_000 + b"]" * 100_000,
    "nested just under the parser's limit": b'{"a":' * 900 + b"1" + b"}" * 900,
    "garbage": b"\xff\xfe\x00GET / HTTP/1.0",
    "a JSON list": b"[1, 2, 3]",
    "a JSON string": b'"update"',
    "empty": b"",
}


async def test_a_malformed_body_gets_400_and_no_traceback(
    hook_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{hook_gateway.webhook_port}/telegram/hook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as http:
        for what, body in BAD_BODIES.items():
            async with http.post(url, data=body, headers=headers) as resp:
                assert resp.status == 400, what
                assert "not a Telegram update" in await resp.text()
        async with http.post(url, json=update(9001, "still fine"), headers=headers) as resp:
            assert resp.status == 200
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert hook_gateway.metrics.updates_malformed._value.get() == len(BAD_BODIES)


async def test_an_update_redelivered_after_the_dedupe_window_is_not_handled_again(
    hook_gateway: Gateway, nats_server: NatsServer, hook_settings: Settings
) -> None:
    nc = await connect_admin(nats_server, hook_settings)
    js = nc.jetstream()
    keep = ConsumerConfig(durable_name="test_all", ack_policy=AckPolicy.EXPLICIT)
    url = f"http://127.0.0.1:{hook_gateway.webhook_port}/telegram/hook"
    good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    try:
        await js.add_consumer(subjects.STREAM_INBOUND, keep)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=update(5001, "hello once"), headers=good) as resp:
                assert resp.status == 200
            assert (await js.stream_info(subjects.STREAM_INBOUND)).state.last_seq == 1
            # JetStream forgets message ids after its 2-minute window; recreating the
            # stream forgets them now. Telegram may still resend for 24 hours.
            config = (await js.stream_info(subjects.STREAM_INBOUND)).config
            await js.delete_stream(subjects.STREAM_INBOUND)
            await js.add_stream(config)
            await js.add_consumer(subjects.STREAM_INBOUND, keep)
            async with http.post(url, json=update(5001, "hello once"), headers=good) as resp:
                assert resp.status == 200  # confirmed, so Telegram stops resending
            assert (await js.stream_info(subjects.STREAM_INBOUND)).state.last_seq == 0
            async with http.post(url, json=update(5002, "hello again"), headers=good) as resp:
                assert resp.status == 200
            assert (await js.stream_info(subjects.STREAM_INBOUND)).state.last_seq == 1
    finally:
        await nc.close()
    assert hook_gateway.metrics.updates_redelivered._value.get() == 1
