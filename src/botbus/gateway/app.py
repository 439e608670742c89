"""The gateway process: one per bot token, the only holder of that token.

Lifecycle, python-telegram-bot style: :meth:`Gateway.initialize` connects
(NATS, streams, buckets, the provisioner of services' streams, ``getMe``, the
persisted registry),
:meth:`Gateway.start` launches ingest (long polling, or the webhook when
``BOTBUS_WEBHOOK_URL`` is set), the outbound relay, service discovery and
the health endpoint, :meth:`Gateway.stop` drains them in that order so
nothing in flight is lost. ``async with Gateway(settings)`` does all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import signal
from collections.abc import Coroutine
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlparse

from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue
from telegram import Bot, BotCommand, BotCommandScopeDefault
from telegram.error import BadRequest, InvalidToken, TelegramError

from botbus import redact, subjects, topology
from botbus.auth import dedupe_secret
from botbus.connect import close_within, connect, connect_options
from botbus.errors import BotbusError, ConfigError
from botbus.gateway.chatadmins import ChatAdmins
from botbus.gateway.health import health_app
from botbus.gateway.http import AiohttpRequest
from botbus.gateway.ingest import (
    ALLOWED_UPDATES,
    DEFAULT_POLL_TIMEOUT,
    REDELIVERY_WINDOW,
    Ingest,
    Poller,
)
from botbus.gateway.lease import DEFAULT_TTL as LEASE_TTL
from botbus.gateway.lease import Lease, LeaseLost, holder_id, lease_key
from botbus.gateway.metrics import GatewayMetrics
from botbus.gateway.outbound import OutboundRelay
from botbus.gateway.owners import OWNERS_TTL, MessageOwners
from botbus.gateway.registry import Registry
from botbus.gateway.router import Router
from botbus.gateway.scheduler import OutboundScheduler, budget_from_settings
from botbus.gateway.sentkeys import SentKeys
from botbus.gateway.texts import languages, text
from botbus.gateway.users import FloodControl, LanguageStore
from botbus.gateway.webhook import WebhookServer, webhook_app
from botbus.health import listen_error
from botbus.models import encode
from botbus.provision import Provisioner
from botbus.settings import DEFAULT_TELEGRAM_API_URL, Settings

log = logging.getLogger(__name__)

SENT_KEYS_TTL = 24 * 3600.0  # seconds an idempotency key is remembered
CONNECT_BACKOFF_MAX = 10.0  # seconds between attempts to reach Telegram at start-up
API_POOL_SIZE = 128  # concurrent HTTP connections to the Bot API
MENU_DESCRIPTION_MAX = 256  # characters Telegram allows per menu entry
MENU_MAX = 100  # entries Telegram allows in one menu
_T = TypeVar("_T")
_MENU_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")  # what Telegram accepts as a menu command
# On stop, queued sends get DRAIN_GRACE seconds to go out; what is left goes
# back to JetStream (nak) for the next gateway, and calls already in flight get
# IN_FLIGHT_GRACE more. Together well within `botbus up`'s SIGTERM grace.
DRAIN_GRACE = 5.0  # seconds
IN_FLIGHT_GRACE = 2.0  # seconds
NATS_CLOSE_TIMEOUT = 5.0  # seconds
TASK_STOP_WAIT = 5.0  # seconds the gateway's loops get to end once cancelled


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"expected HOST:PORT, got {value!r} (e.g. 127.0.0.1:9464)")
    return host or "127.0.0.1", int(port)


async def _bucket(js: JetStreamContext, name: str, ttl: float | None = None) -> KeyValue:
    config = KeyValueConfig(bucket=name, history=1, ttl=ttl, storage=StorageType.FILE)
    return await topology.open_bucket(js, config)


def build_bot(settings: Settings) -> Bot:
    """A python-telegram-bot ``Bot`` for the configured token and API URL."""
    if settings.telegram_bot_token is None:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN is not set: put your bot's token there, or run `botbus up`, "
            "which starts a local sandbox when no token is given"
        )
    return Bot(
        settings.telegram_bot_token.get_secret_value(),
        base_url=settings.telegram_api_url or DEFAULT_TELEGRAM_API_URL,
        request=AiohttpRequest(connection_pool_size=API_POOL_SIZE, pool_timeout=10.0),
    )


def check_webhook_url(settings: Settings) -> None:
    """Refuse at once a webhook URL Telegram itself would refuse (it calls https:// only).

    An emulator or a local Bot API server (``TELEGRAM_API_URL`` set) may call http://.
    """
    url = settings.webhook_url
    if url and not url.startswith("https://") and not settings.telegram_api_url:
        raise ConfigError(
            f"setting BOTBUS_WEBHOOK_URL is invalid: Telegram only calls https:// webhooks, "
            f"not {url}; put a TLS proxy in front of the gateway, or unset it to use long "
            "polling"
        )


class Gateway:
    """Telegram in, bus out, answers back.

    ``sender`` is the outbound scheduler every Telegram send goes through;
    by default one with the budget of ``BOTBUS_RATE_*``/``BOTBUS_PAID_BROADCAST``,
    whose metrics are served on the gateway's ``/metrics``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sender: OutboundScheduler | None = None,
        poll_timeout: int = DEFAULT_POLL_TIMEOUT,
        discovery_interval: float | None = None,
    ) -> None:
        self.settings = settings
        check_webhook_url(settings)
        self.bot = build_bot(settings)
        self.metrics = GatewayMetrics()
        self.sender = sender or OutboundScheduler(
            budget_from_settings(settings), registry=self.metrics.registry
        )
        self._status_sub: Subscription | None = None
        self._poll_timeout = poll_timeout
        self._discovery_interval = discovery_interval
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[web.AppRunner] = []
        self._webhook: WebhookServer | None = None
        self._stopped = asyncio.Event()
        self.registry: Registry | None = None
        self.router: Router | None = None
        self.ingest: Ingest | None = None
        self.poller: Poller | None = None
        self.relay: OutboundRelay | None = None
        self._sent_keys: SentKeys | None = None
        self._dedupe_secret: bytes | None = None
        self._handled: SentKeys | None = None
        self._opened = contextlib.AsyncExitStack()  # what initialize() opened
        self._poll_request: AiohttpRequest | None = None
        self.lease: Lease | None = None  # which gateway of this bot is active
        self.stepped_down: LeaseLost | None = None  # set when another gateway took over
        self.failure: BaseException | None = None  # the first of its loops that died
        self.http_port: int | None = None  # health/metrics, once started
        self.webhook_port: int | None = None
        self.bot_id = 0
        self.bot_username = ""

    @property
    def nc(self) -> Client:
        """The NATS connection (after :meth:`initialize`)."""
        if self._nc is None:
            raise RuntimeError("Gateway.initialize() has not run")
        return self._nc

    # -- lifecycle ---------------------------------------------------------

    async def initialize(self) -> None:
        """Connect to NATS and Telegram and load the registry.

        What it opens is registered on an exit stack as it opens: if a later
        step fails, everything opened so far is closed again, in reverse, and
        the error propagates. :meth:`stop` closes the same stack at its end.
        """
        async with contextlib.AsyncExitStack() as opened:
            login = connect_options(self.settings, "gateway")
            self._nc = await connect(self.settings, "gateway", name="botbus-gateway", login=login)
            self._dedupe_secret = dedupe_secret(login.get("user_credentials"))
            opened.push_async_callback(self._close_nats)
            js = self._nc.jetstream()
            # Creating a replicated stream waits for a cluster quorum: more time than a call.
            setup = self._nc.jetstream(timeout=topology.SETUP_TIMEOUT)
            await topology.ensure_topology(setup)
            # Services' own streams and buckets are made here, on their request: every
            # gateway instance serves, the active one and standbys alike (a queue group).
            provisioner = Provisioner(self._nc)
            await provisioner.start()
            opened.push_async_callback(provisioner.stop)
            registry_kv = await _bucket(setup, subjects.KV_GATEWAY_REGISTRY)
            users_kv = await _bucket(setup, subjects.KV_GATEWAY_USERS)
            await _bucket(setup, subjects.KV_GATEWAY_SENT, ttl=SENT_KEYS_TTL)
            await _bucket(setup, subjects.KV_GATEWAY_UPDATES, ttl=REDELIVERY_WINDOW)
            lease_kv = await _bucket(setup, subjects.KV_GATEWAY_LEASE, ttl=LEASE_TTL)
            await _bucket(setup, subjects.KV_GATEWAY_OWNERS, ttl=OWNERS_TTL)
            await self._init_bot()
            opened.push_async_callback(self._shutdown_bot)
            self.lease = Lease(lease_kv, lease_key(self.bot_id), holder_id(self.settings.data_dir))
            self.registry = Registry(self._nc, registry_kv)
            if self._discovery_interval is not None:
                self.registry.poll_interval = self._discovery_interval
            await self.registry.load()
            try:
                await self.registry.refresh()
            except (NatsError, TimeoutError) as exc:
                # Routing works from the persisted registry; the discovery loop retries.
                log.warning("first service discovery failed (%s); using the stored registry", exc)
            self.router = Router(
                self.registry,
                LanguageStore(users_kv),
                FloodControl(self.settings.flood_rate, self.settings.flood_burst),
                bot_id=self.bot_id,
                admin_ids=frozenset(self.settings.admin_ids),
                chat_admins=ChatAdmins(self.bot),
            )
            self._handled = SentKeys(self._nc, subjects.KV_GATEWAY_UPDATES)
            await self._handled.start()
            opened.push_async_callback(self._stop_keys, self._handled)
            self.ingest = Ingest(
                js,
                self.router,
                self.bot_username,
                self.metrics,
                handled=self._handled,
                bot_id=self.bot_id,
                dedupe_secret=self._dedupe_secret,
            )
            self._sent_keys = SentKeys(self._nc, subjects.KV_GATEWAY_SENT)
            await self._sent_keys.start()
            opened.push_async_callback(self._stop_keys, self._sent_keys)
            owner_keys = SentKeys(self._nc, subjects.KV_GATEWAY_OWNERS)
            await owner_keys.start()
            opened.push_async_callback(self._stop_keys, owner_keys)
            self.relay = OutboundRelay(
                js,
                self.bot,
                self._sent_keys,
                self.sender,
                self.metrics,
                owners=MessageOwners(owner_keys),
            )
            # Initialised: the resources now live until stop() closes them.
            self._opened = opened.pop_all()

    async def _close_nats(self) -> None:
        if self._nc is None or self._nc.is_closed:
            return
        # Every publish was awaited and every ack sent, so nothing is left to drain;
        # close() avoids waiting on pull messages that no one will process now.
        with contextlib.suppress(NatsError):
            await self._nc.flush(timeout=2)
        # close() may find the broker already gone; a broker that stopped
        # reading must not hang shutdown, hence the bound.
        with contextlib.suppress(NatsError, OSError):
            await close_within(self._nc, NATS_CLOSE_TIMEOUT)

    async def _shutdown_bot(self) -> None:
        with contextlib.suppress(TelegramError):
            await self.bot.shutdown()

    @staticmethod
    async def _stop_keys(keys: SentKeys) -> None:
        with contextlib.suppress(NatsError):
            await keys.stop()

    async def _init_bot(self) -> None:
        delay = 0.5
        try:
            while True:
                try:
                    await self.bot.initialize()
                    break
                except InvalidToken as exc:
                    raise ConfigError(
                        f"Telegram rejected the bot token ({exc}): check TELEGRAM_BOT_TOKEN "
                        "(the token @BotFather gave you)"
                    ) from exc
                except TelegramError as exc:
                    log.error("Telegram is unreachable (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, CONNECT_BACKOFF_MAX)
        except BaseException:
            # initialize() opened the HTTP session; a failed (or, on SIGTERM during
            # the retries, cancelled) one is not shut down by Bot.shutdown().
            await self.bot.request.shutdown()
            raise
        self.bot_id = self.bot.id
        self.bot_username = self.bot.username
        log.info("gateway for @%s (id %s)", self.bot_username, self.bot_id)

    async def start(self) -> None:
        """Serve health, wait to be the active gateway, then start ingest, relay, discovery.

        A standby (another gateway of the same bot holds the lease) waits in
        here, answering ``/healthz``, until the lease is free or it is stopped.
        """
        assert self.ingest is not None and self.relay is not None and self.registry is not None
        if self.settings.gateway_http_listen != "off":
            host, port = _host_port(self.settings.gateway_http_listen)
            self.http_port = await self._serve(
                health_app(self.metrics, self.health), host, port, "BOTBUS_GATEWAY_HTTP"
            )
            log.info("health and metrics on http://%s:%s/healthz", host, self.http_port)
        if not await self._become_active():
            return
        self._spawn(self._keep_lease(), "lease")
        await self.sender.start()
        self._status_sub = await self.nc.subscribe(subjects.GATEWAY_STATUS, cb=self._answer_status)
        await self.sync_menu()
        self._spawn(self.registry.run(self.sync_menu), "discovery")
        self._spawn(self.relay.run(), "outbound")
        if self.settings.webhook_url:
            await self._start_webhook()
        else:
            await self.bot.delete_webhook(drop_pending_updates=False)
            self._poll_request = AiohttpRequest(
                connection_pool_size=2, read_timeout=self._poll_timeout + 10.0
            )
            self.poller = Poller(
                self.ingest,
                self._poll_request,
                self.bot.base_url,
                timeout=self._poll_timeout,
                gate=self.lease.guard if self.lease is not None else None,
            )
            self._spawn(self.poller.run(), "polling")
            log.info("ingest: long polling")

    async def _become_active(self) -> bool:
        """Take the lease (waiting as a standby); False if stopped first."""
        assert self.lease is not None
        acquiring = asyncio.ensure_future(self.lease.acquire())
        stopping = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not acquiring.done():
                acquiring.cancel()
                await asyncio.wait({acquiring})
        return acquiring.done() and not acquiring.cancelled() and self.lease.held

    async def _keep_lease(self) -> None:
        assert self.lease is not None
        try:
            await self.lease.keep()
        except LeaseLost as exc:
            # Another gateway is active now; this one steps down (a restart makes it a standby).
            log.error("%s; stopping", exc)
            self.stepped_down = exc
            self._stopped.set()

    async def _start_webhook(self) -> None:
        assert self.ingest is not None and self.settings.webhook_url is not None
        url = self.settings.webhook_url
        if self.settings.webhook_secret:
            secret = self.settings.webhook_secret.get_secret_value()
        else:
            secret = secrets.token_urlsafe(32)
            redact.register(secret)
        path = urlparse(url).path or "/"
        host, port = self.settings.webhook_host_port
        self._webhook = WebhookServer(webhook_app(self.ingest, path, secret, self.metrics))
        try:
            self.webhook_port = await self._webhook.start(host, port)
        except OSError as exc:
            raise listen_error("BOTBUS_WEBHOOK_LISTEN", host, port, exc) from exc
        try:
            await self.bot.set_webhook(
                url,
                secret_token=secret,
                allowed_updates=list(ALLOWED_UPDATES),
                max_connections=40,
            )
        except BadRequest as exc:
            raise ConfigError(
                f"Telegram refused the webhook {url} ({exc}): check BOTBUS_WEBHOOK_URL "
                "(a public https:// address, port 443, 80, 88 or 8443)"
            ) from exc
        log.info("ingest: webhook %s (listening on %s:%s)", path, host, self.webhook_port)

    async def _serve(self, app: web.Application, host: str, port: int, setting: str) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise listen_error(setting, host, port, exc) from exc
        self._runners.append(runner)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"gateway-{name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, BotbusError):  # explained in its message: no traceback
                log.error("gateway task %s stopped: %s", task.get_name(), exc)
            else:
                log.error("gateway task %s died: %r; stopping", task.get_name(), exc, exc_info=exc)
            self.failure = self.failure or exc
            self._stopped.set()

    async def _answer_status(self, msg: Msg) -> None:
        # `botbus status` asks; the scheduler's figures answer.
        if not msg.reply:
            return
        try:
            await msg.respond(encode(self.sender.snapshot().to_status()))
        except NatsError as exc:
            log.warning("could not answer a status request: %s", exc)

    def health(self) -> dict[str, bool]:
        """Named checks behind ``/healthz``."""
        return {
            "nats_connected": self._nc is not None and self._nc.is_connected,
            # A standby runs no task yet: it is healthy while it waits for the lease.
            "tasks_running": all(not t.done() for t in self._tasks)
            if self._tasks
            else self.lease is not None and not self.lease.held,
        }

    async def stop(self) -> None:
        """Stop ingest first, then let outbound sends in flight finish, then disconnect."""
        for task in self._tasks:
            if task.get_name() in ("gateway-polling", "gateway-discovery"):
                task.cancel()
        if self._webhook is not None:
            await self._webhook.stop()
            self._webhook = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._status_sub is not None:
            with contextlib.suppress(NatsError):
                await self._status_sub.unsubscribe()
            self._status_sub = None
        if self.relay is not None:
            await self.relay.drain(DRAIN_GRACE, cancel_late=False)
        # Whatever is still queued is withdrawn (the relay naks its action, so the
        # next gateway gets it at once); calls in flight may finish and be acked.
        await self.sender.stop(drain=False, grace=IN_FLIGHT_GRACE)
        if self.relay is not None:
            await self.relay.drain(IN_FLIGHT_GRACE)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Failures were already logged by _task_done; only their end matters here.
            # Bounded: on Python 3.11 a cancel landing as a nats-py request completes
            # can be lost (asyncio.wait_for), and a loop that lost it runs on.
            _, stuck = await asyncio.wait(self._tasks, timeout=TASK_STOP_WAIT)
            for task in stuck:
                log.warning("gateway task %s did not stop; leaving it", task.get_name())
        self._tasks.clear()
        if self.lease is not None and self.lease.held:
            # Handed over at once: a standby need not wait for the lease to expire.
            await self.lease.release()
        if self._poll_request is not None:
            await self._poll_request.shutdown()
            self._poll_request = None
        # What initialize() opened, closed in reverse: sent keys, the bot, NATS.
        await self._opened.aclose()
        self._stopped.set()

    async def run_until_stopped(self) -> None:
        """Initialize, start, wait for SIGTERM/SIGINT (or a dead task), stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        try:
            # initialize() may wait long (NATS or Telegram unreachable, retried): a
            # signal meanwhile cancels it, and its exit stack closes what it opened.
            initializing = asyncio.create_task(self.initialize(), name="gateway-initialize")
            stopping = asyncio.create_task(self._stopped.wait())
            await asyncio.wait({initializing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not initializing.done():
                initializing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await initializing
                log.info("gateway stopped before it was ready")
                return
            initializing.result()
            try:
                await self.start()
                await self._stopped.wait()
            finally:
                log.info("gateway stopping")
                await self.stop()
            if self.stepped_down is not None:
                raise self.stepped_down  # its own exit code: restart me as the standby
            if self.failure is not None:
                # A dead loop is a bug, not a stop: exit 1, so a supervisor restarts us.
                raise self.failure
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def __aenter__(self) -> Gateway:
        await self.initialize()
        try:
            await self.start()
        except BaseException:
            await self.stop()  # a half-started gateway closes what it opened
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the command menu ----------------------------------------------------

    async def sync_menu(self) -> None:
        """setMyCommands per language from the live registry."""
        assert self.registry is not None
        self.metrics.live_services.set(len(self.registry.live_services()))
        for language in languages():
            commands = [
                BotCommand("help", text("menu_help", language)),
                BotCommand("language", text("menu_language", language)),
                BotCommand("forgetme", text("menu_forgetme", language)),
            ]
            offered: list[tuple[str, BotCommand]] = []
            for service, spec in self.registry.live_commands():
                if spec.admin_only:
                    continue
                description = spec.describe(language)[:MENU_DESCRIPTION_MAX] or spec.command
                if not _MENU_COMMAND_RE.fullmatch(spec.command) or not description.strip():
                    # One bad entry must not make Telegram refuse the whole menu.
                    log.warning(
                        "menu (%s): skipping /%r of %s, which Telegram would refuse "
                        "(description %r)",
                        language,
                        spec.command,
                        service,
                        description,
                    )
                    continue
                offered.append((service, BotCommand(spec.command, description)))
            commands += [c for _, c in fair_share(offered, MENU_MAX - len(commands))]
            try:
                await self.bot.set_my_commands(
                    commands,
                    scope=BotCommandScopeDefault(),
                    language_code=None if language == "en" else language,
                )
            except TelegramError as exc:
                log.warning("could not update the command menu (%s): %s", language, exc)


def fair_share(offered: list[tuple[str, _T]], room: int) -> list[tuple[str, _T]]:
    """At most ``room`` of ``offered``, taken one per service in turn, in their order.

    When services together claim more commands than the menu holds, each
    gets its turn, so none crowds the others out by claiming many names
    that sort first.
    """
    queues: dict[str, list[int]] = {}  # service -> positions of its commands in offered
    for position, (service, _) in enumerate(offered):
        queues.setdefault(service, []).append(position)
    taken: list[int] = []
    turn = 0
    while len(taken) < room and any(turn < len(q) for q in queues.values()):
        taken += [q[turn] for q in queues.values() if turn < len(q)][: room - len(taken)]
        turn += 1
    return [offered[position] for position in sorted(taken)]
