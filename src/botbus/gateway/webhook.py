"""Webhook ingest: Telegram POSTs updates; 200 only once JetStream has them.

A request without the configured ``X-Telegram-Bot-Api-Secret-Token`` gets
403 and publishes nothing. A body that is not one JSON update object gets
400 (one log line, no traceback); a JSON object that is not a usable
update is skipped by ingest and answered 200, so Telegram stops resending
it. If JetStream does not acknowledge, the answer is 503 and Telegram
delivers the update again later.

The listener faces the internet, so it bounds what a client may hold:
at most :data:`MAX_CONNECTIONS` connections at once (more are closed on
accept), and each request's headers and body must arrive within
:data:`READ_TIMEOUT` seconds of the connection opening or of the previous
answer on it (a keep-alive connection idle that long is closed too).
aiohttp itself has no header or body deadline, hence :class:`WebhookServer`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from botbus.gateway.ingest import BUS_ERRORS, Ingest
from botbus.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_UPDATE_BYTES = 1024 * 1024  # an update is a few KB; refuse anything absurd
MAX_JSON_DEPTH = 32  # Telegram's updates nest about 6 deep
READ_TIMEOUT = 10.0  # seconds for one request's headers and body (and keep-alive idling)
MAX_CONNECTIONS = 100  # open connections at once; Telegram uses at most 40 (max_connections)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadUpdate(ValueError):
    """A webhook body that is not one JSON update object."""


def parse_body(body: bytes) -> dict[str, object]:
    """The update in ``body``, or :class:`BadUpdate` saying what is wrong with it."""
    try:
        update = json.loads(body)
    except RecursionError as exc:
        raise BadUpdate("JSON nested too deeply") from exc
    except ValueError as exc:  # includes UnicodeDecodeError
        raise BadUpdate(f"not JSON ({exc})") from exc
    if not isinstance(update, dict):
        raise BadUpdate(f"a JSON {type(update).__name__}, not an update object")
    if _depth_exceeds(update, MAX_JSON_DEPTH):
        raise BadUpdate(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    # An object with odd fields is left to ingest, which skips it with a warning
    # and lets the 200 go out: resending it would never make it usable.
    return update


def _depth_exceeds(value: object, limit: int) -> bool:
    # Iterative, so a body just under the parser's own recursion limit cannot
    # push the rest of the gateway (pydantic, the router) over it.
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def webhook_app(ingest: Ingest, path: str, secret: str, metrics: GatewayMetrics) -> web.Application:
    """An aiohttp application accepting updates on ``path``."""

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            metrics.webhook_refused.inc()
            log.warning("refused webhook request from %s: wrong secret token", request.remote)
            return web.Response(status=403, text="wrong or missing secret token\n")
        try:
            update = parse_body(await request.read())
        except BadUpdate as exc:
            metrics.updates_malformed.inc()
            log.warning("refused webhook body from %s: %s", request.remote, exc)
            return web.Response(status=400, text=f"body is not a Telegram update: {exc}\n")
        try:
            await ingest.handle([update])
        except BUS_ERRORS as exc:
            log.error("webhook update not stored: %s", exc)
            return web.Response(status=503, text="bus unavailable, retry later\n")
        return web.Response(status=200)

    app = web.Application(client_max_size=MAX_UPDATE_BYTES)
    app.router.add_post(path, receive)
    return app


class _Connections:
    """The open connections of one listener and their read deadlines."""

    def __init__(self, limit: int, read_timeout: float) -> None:
        self.limit = limit
        self.read_timeout = read_timeout
        self.open: dict[asyncio.BaseTransport, _Guarded] = {}
        self.refused = 0
        self.timed_out = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Hold the deadline until the body is in, then lift it while the bus works."""
        conn = self.open.get(request.transport) if request.transport else None
        if conn is None:
            return await handler(request)
        # Reading the body here keeps it under the connection's deadline; the
        # handler's own read() then returns the buffered bytes.
        try:
            await request.read()
        except ConnectionResetError:
            # The deadline cut the connection mid-body: nobody is left to answer.
            log.debug("webhook connection from %s cut while sending its body", request.remote)
            return web.Response(status=408)
        conn.disarm()
        try:
            return await handler(request)
        finally:
            conn.arm()


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a deadline and the cap."""

    def __init__(self, inner: RequestHandler, connections: _Connections) -> None:
        self._inner = inner
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._accepted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if len(self._connections.open) >= self._connections.limit:
            self._connections.refused += 1
            transport.abort()
            return
        self._accepted = True
        self._connections.open[transport] = self
        self._inner.connection_made(transport)
        self.arm()

    def arm(self) -> None:
        """Start the deadline for the next request's headers and body."""
        self.disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._connections.read_timeout, self._expire)

    def disarm(self) -> None:
        """Lift the deadline (the request is read; the answer is ours to give)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._connections.timed_out += 1
            log.debug("closing a webhook connection that sent no complete request in time")
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._inner.eof_received()
        return None  # close the transport, as aiohttp's own protocol does

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if not self._accepted:
            return
        if self._transport is not None:
            self._connections.open.pop(self._transport, None)
        self._inner.connection_lost(exc)


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections go through :class:`_Guarded`."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, connections: _Connections
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._connections = connections

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        connections = self._connections
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(server(), connections),
            self._host,
            self._port,
            reuse_address=True,
        )

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._port


class WebhookServer:
    """The webhook listener: ``start`` it on host:port, ``stop`` it at shutdown."""

    def __init__(
        self,
        app: web.Application,
        *,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.connections = _Connections(max_connections, read_timeout)
        app.middlewares.append(self.connections.middleware)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, host: str, port: int) -> int:
        """Listen; return the bound port. ``OSError`` if the address is taken."""
        await self._runner.setup()
        site = _GuardedSite(self._runner, host, port, self.connections)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        return site.port

    async def stop(self) -> None:
        """Stop accepting and close the open connections."""
        await self._runner.cleanup()
