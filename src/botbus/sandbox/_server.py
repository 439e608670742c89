"""SandboxServer: one aiohttp application serving the bot side and the user side."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from botbus.sandbox import _errors as err
from botbus.sandbox._botapi import BotApi
from botbus.sandbox._errors import ApiError, UserApiError
from botbus.sandbox._limits import Limits
from botbus.sandbox._params import Params
from botbus.sandbox._persist import StateDir
from botbus.sandbox._state import BotState, SandboxBot
from botbus.sandbox._userapi import UserApi, from_browser
from botbus.sandbox._webhook import deliver_forever

logger = logging.getLogger(__name__)

DEFAULT_WEBHOOK_RETRY_DELAY = 1.0  # seconds before the first redelivery; doubles each time
SHUTDOWN_TIMEOUT = 2.0  # seconds open requests get when the server stops
SAVE_INTERVAL = 1.0  # seconds between saves of a changed state (persistent sandboxes)
WEB_DIR = Path(__file__).with_name("web")  # the web chat's static files
# The web chat loads only its own files and talks only to its own origin.
WEB_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_TOKEN = re.compile(r"([0-9]{1,15}):([A-Za-z0-9_-]{1,64})")


class SandboxServer:
    """A local Telegram Bot API: bots call ``api_url``, people use ``/sandbox``.

    >>> async with SandboxServer() as server:   # doctest: +SKIP
    ...     bot = server.add_bot()
    ...     telegram.Bot(bot.token, base_url=server.api_url)

    With ``data_dir`` the state (bots, users, chats, messages, files, menus,
    pending updates) is loaded at start, saved while it changes and at stop,
    and a second sandbox on the same directory is refused with
    :class:`~botbus.sandbox.SandboxBusy`. Without it everything lives in memory.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        webhook_retry_delay: float = DEFAULT_WEBHOOK_RETRY_DELAY,
        data_dir: Path | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        self.webhook_retry_delay = webhook_retry_delay
        self._store = StateDir(data_dir) if data_dir is not None else None
        self._dirty = False
        self._saver: asyncio.Task[None] | None = None
        self._by_token: dict[str, BotState] = {}
        self._by_id: dict[int, BotState] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._next_bot_id = 7_000_000_001
        self.base_url = ""
        self._api = BotApi(
            session=self._client_session,
            start_webhook=self._start_webhook,
            stop_webhook=self._stop_webhook,
            is_closing=lambda: self._closing,
        )
        self._user_api = UserApi(
            limits=self.limits,
            bots_by_id=self._by_id,
            add_bot=self.add_bot,
            is_closing=lambda: self._closing,
        )

    @property
    def api_url(self) -> str:
        """The Bot API base URL (``TELEGRAM_API_URL`` / PTB's ``base_url``)."""
        return self.base_url + "/bot"

    @property
    def file_url(self) -> str:
        """The file download base URL (PTB's ``base_file_url``)."""
        return self.base_url + "/file/bot"

    @property
    def bots(self) -> list[SandboxBot]:
        """Every registered bot."""
        return [state.bot for state in self._by_id.values()]

    def add_bot(
        self,
        token: str | None = None,
        *,
        username: str = "botbus_test_bot",
        first_name: str = "botbus",
    ) -> SandboxBot:
        """Register a bot; a token of Telegram's form ``<id>:<secret>`` is made if not given."""
        if token is None:
            while self._next_bot_id in self._by_id:
                self._next_bot_id += 1
            token = f"{self._next_bot_id}:{secrets.token_urlsafe(26)[:35]}"
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ValueError(
                f"a bot token looks like '123456789:AAE...' (digits, colon, secret); got {token!r}"
            )
        if token in self._by_token:
            return self._by_token[token].bot
        bot_id = int(match.group(1))
        if bot_id in self._by_id:
            raise ValueError(f"another token is already registered for bot id {bot_id}")
        bot = SandboxBot(token=token, id=bot_id, username=username, first_name=first_name)
        state = BotState(bot, self.limits)
        self._by_token[token] = state
        self._by_id[bot_id] = state
        self._next_bot_id = max(self._next_bot_id, bot_id + 1)
        logger.info("sandbox bot @%s registered with id %s", username, bot_id)
        return bot

    def find_bot(self, username: str) -> SandboxBot | None:
        """The registered bot called ``username`` (e.g. restored from the data dir), if any."""
        for state in self._by_id.values():
            if state.bot.username == username:
                return state.bot
        return None

    def state(self, bot_id: int) -> BotState:
        """The state of a bot, for in-process inspection (tests use the HTTP API instead)."""
        return self._by_id[bot_id]

    # -- lifecycle -------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = a free port) and return the base URL.

        A persistent sandbox first takes its data directory's lock (or raises
        SandboxBusy) and loads the saved state.
        """
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running; stop() it first")
        if self._store is not None:
            self._store.acquire()
            try:
                self._restore(self._store)
                await self._listen(host, port)
            except BaseException:
                self._store.release()
                raise
            self._store.announce(self.base_url)
            self._saver = asyncio.create_task(self._save_forever(), name="sandbox-save")
        else:
            await self._listen(host, port)
        return self.base_url

    def _restore(self, store: StateDir) -> None:
        for state in store.load(self.limits):
            self._by_token[state.bot.token] = state
            self._by_id[state.bot.id] = state
            self._next_bot_id = max(self._next_bot_id, state.bot.id + 1)
        if self._by_id:
            logger.info("sandbox state restored from %s", store.directory)

    def save(self) -> None:
        """Write the state to the data directory now (no-op for an in-memory sandbox)."""
        if self._store is not None:
            self._dirty = False
            self._store.save(list(self._by_id.values()))

    async def _save_forever(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            if self._dirty:
                try:
                    self.save()
                except OSError:
                    logger.exception("cannot save the sandbox state; will retry")

    async def _listen(self, host: str, port: int) -> None:
        app = web.Application(middlewares=[self._errors_middleware], client_max_size=60 * 2**20)
        app.add_routes(
            [
                web.route("*", "/bot{token}/{method}", self._bot_call),
                web.get("/file/bot{token}/{path:.+}", self._bot_file),
                *self._user_api.routes(),
                web.get("/", self._web_index),
                web.static("/web", WEB_DIR),
            ]
        )
        self._closing = False
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()  # a busy port must not leave a half-built server behind
            raise
        self._runner = runner
        addresses = runner.addresses
        actual_port = int(addresses[0][1]) if addresses else port
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.base_url = f"http://{shown}:{actual_port}"
        logger.info("sandbox listening on %s", self.base_url)

    async def stop(self) -> None:
        """End long polls and webhook deliveries, then close the listener."""
        self._closing = True
        for state in self._by_id.values():
            state.signal.fire()
            await self._stop_webhook(state)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        if self._store is not None and self._store.locked:
            try:
                self.save()
            finally:
                self._store.release()

    async def __aenter__(self) -> SandboxServer:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- internals -------------------------------------------------------
    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def _start_webhook(self, state: BotState) -> None:
        state.webhook_task = asyncio.create_task(
            deliver_forever(state, self._client_session, self.webhook_retry_delay),
            name=f"sandbox-webhook-{state.bot.id}",
        )

    async def _stop_webhook(self, state: BotState) -> None:
        task, state.webhook_task = state.webhook_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        user_side = request.path.startswith("/sandbox")
        refusal = _browser_refusal(request, user_side)
        if refusal is not None:
            return refusal
        try:
            response: web.StreamResponse = await handler(request)
            if request.path == "/" or request.path.startswith("/web/"):
                response.headers["Content-Security-Policy"] = WEB_POLICY
            return response
        except UserApiError as exc:
            return web.json_response({"ok": False, "error": exc.message}, status=exc.status)
        except web.HTTPException as exc:
            if user_side:
                text = f"{exc.reason}: no such user-side endpoint {request.method} {request.path}"
                return web.json_response({"ok": False, "error": text}, status=exc.status)
            api_error = ApiError(404, err.NOT_FOUND)
            return web.json_response(api_error.envelope(), status=404)
        except Exception:
            logger.exception("sandbox failed on %s %s", request.method, _redact(request.path))
            if user_side:
                body = {"ok": False, "error": "internal error in the sandbox; see its log"}
                return web.json_response(body, status=500)
            return web.json_response(ApiError(500, "Internal Server Error").envelope(), status=500)
        finally:
            if request.method != "GET" or request.path.startswith("/bot"):
                self._dirty = True  # bot calls and user actions change the state; reads do not

    async def _bot_call(self, request: web.Request) -> web.Response:
        state = self._by_token.get(request.match_info["token"])
        method = request.match_info["method"]
        if state is None:
            return web.json_response(ApiError(401, err.UNAUTHORIZED).envelope(), status=401)
        try:
            if not self._api.knows(method):
                raise ApiError(404, err.NOT_FOUND)
            state.method_counts[method] += 1
            params = await Params.from_request(request)
            result = await self._api.call(state, method, params)
        except ApiError as exc:
            state.error_counts[exc.error_code] += 1
            logger.debug("bot %s %s refused: %s", state.bot.id, method, exc.description)
            return web.json_response(exc.envelope(), status=exc.error_code)
        return web.json_response({"ok": True, "result": result})

    async def _web_index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _bot_file(self, request: web.Request) -> web.Response:
        state = self._by_token.get(request.match_info["token"])
        if state is None:
            return web.json_response(ApiError(401, err.UNAUTHORIZED).envelope(), status=401)
        file_id = request.match_info["path"].rpartition("/")[2]
        stored = state.files.get(file_id)
        if stored is None:
            return web.json_response(ApiError(404, err.NOT_FOUND).envelope(), status=404)
        return web.Response(body=stored.data, content_type=stored.content_type)


def _browser_refusal(request: web.Request, user_side: bool) -> web.Response | None:
    """Keep web pages away from the bot's side and other sites away from the user side.

    The web chat must never reach the Bot API (it has no token, and a page
    that learnt one still cannot use it here); a page of another site must
    not act as a sandbox user behind the developer's back.
    """
    if not from_browser(request):
        return None
    if request.path.startswith(("/bot", "/file/bot")):
        refusal = ApiError(403, "Forbidden: the Bot API side does not answer web pages")
        return web.json_response(refusal.envelope(), status=403)
    origin = request.headers.get("Origin")
    cross_site = request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site")
    if user_side and (cross_site or (origin and origin != f"{request.scheme}://{request.host}")):
        body = {"ok": False, "error": "the sandbox answers only its own web chat's pages"}
        return web.json_response(body, status=403)
    return None


def _redact(path: str) -> str:
    """A request path with any bot token hidden, for logs."""
    return re.sub(r"/bot[^/]+", "/bot<token>", path)
