"""The running instance of a service: consumers, dispatch, retries, drain.

One :class:`ServiceApp` per process. Lifecycle: :meth:`ServiceApp.start`
(connect, wait for the streams, bind the durable consumers, run the startup
hooks, register with micro, start consuming), :meth:`ServiceApp.stop` (stop
fetching, hand back prefetched work, finish in-flight work, run the shutdown
hooks, deregister, drain). ``async with ServiceApp(...)`` does both.

Consuming keeps the handlers busy: each feed holds up to twice ``concurrency``
messages (running plus a prefetch buffer of at most ``concurrency``) and
fetches a batch whenever half a buffer fits, so a fetch round trip overlaps
with handling instead of preceding every message. A prefetched message is
kept alive with in-progress acks like a running one, and is nak'ed at once on
drain so another instance takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from nats.nuid import NUID

from botbus import subjects, topology
from botbus.connect import connect, resolve_url
from botbus.errors import ConfigError, PayloadError, ServiceError, StartupError
from botbus.keepalive import KeepAlive
from botbus.models import (
    Action,
    DeadLetter,
    DeliveryEvent,
    ForgetUser,
    InboundCallback,
    InboundCommand,
    InboundMessage,
    SendText,
    decode_event,
    decode_inbound,
    encode,
)
from botbus.service._context import Context, CorrelationLogger, Handled
from botbus.service._micro import EndpointCounter, Registration
from botbus.service._service import LifecycleHook, Service
from botbus.settings import Settings

log = logging.getLogger(__name__)

FETCH_WAIT = 1.0  # seconds a fetch long-polls; also the longest a stop waits for a fetch
PREFETCH_WINDOW = 2  # messages held per feed (running + waiting), as a multiple of concurrency
FETCH_RETRY = 0.5  # seconds to pause after a fetch failed (broker restarting...)
DRAIN_TIMEOUT = 60.0  # seconds SIGTERM waits for in-flight handlers
PUBLISH_TIMEOUT = 5.0  # seconds to wait for JetStream to store an action

FeedKind = Literal["command", "callback", "message", "forget", "delivery"]


@dataclass(frozen=True)
class Feed:
    """One durable pull consumer of a service."""

    kind: FeedKind
    stream: str
    durable: str
    filter_subject: str


def feeds_of(service: Service) -> list[Feed]:
    """The consumers ``service`` needs: one per kind of work it has a handler for."""
    name = service.name
    feeds: list[Feed] = []
    if service.commands:
        feeds.append(
            Feed(
                "command",
                subjects.STREAM_INBOUND,
                subjects.consumer_commands(name),
                subjects.inbound_commands_of(name),
            )
        )
    if service.callback_handler:
        feeds.append(
            Feed(
                "callback",
                subjects.STREAM_INBOUND,
                subjects.consumer_callbacks(name),
                subjects.inbound_callback(name),
            )
        )
    if service.message_handler:
        feeds.append(
            Feed(
                "message",
                subjects.STREAM_INBOUND,
                subjects.consumer_messages(name),
                subjects.INBOUND_MESSAGES,
            )
        )
    if service.forget_handler:
        feeds.append(
            Feed(
                "forget",
                subjects.STREAM_EVENTS,
                subjects.consumer_forget(name),
                subjects.EVENT_FORGET,
            )
        )
    if service.delivery_handler:
        feeds.append(
            Feed(
                "delivery",
                subjects.STREAM_EVENTS,
                subjects.consumer_events(name),
                subjects.delivery_event(name),
            )
        )
    return feeds


@dataclass(frozen=True)
class _Waiting:
    """A fetched message waiting for a free handler slot (kept alive meanwhile)."""

    feed: Feed
    msg: Msg


class _Window:
    """How many messages of one feed this instance holds, running or waiting.

    The fetch loop waits for room here, so an instance never holds more than
    ``size`` messages of a feed: the rest stay on the server for other instances.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._room = asyncio.Event()

    @property
    def free(self) -> int:
        """How many more messages may be fetched now."""
        return self.size - self.held

    async def wait_for_room(self, at_least: int) -> None:
        """Wait until ``at_least`` messages fit, or nothing is held (or :meth:`wake`)."""
        while self.held and self.free < at_least:
            self._room.clear()
            await self._room.wait()

    def release(self) -> None:
        """One held message is finished."""
        self.held -= 1
        self._room.set()

    def wake(self) -> None:
        """Let a waiting fetch loop look again (it checks whether the app is stopping)."""
        self._room.set()


def _peek(raw: bytes) -> dict[str, Any]:
    """Best-effort look into an undecodable payload: chat, language, correlation."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class ServiceApp:
    """One running instance of a :class:`Service`."""

    def __init__(
        self,
        service: Service,
        settings: Settings,
        *,
        url: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.url = url
        self.instance_id = instance_id or NUID().next().decode()
        """Unique id of this instance (micro id, ``botbus.instance``, logs)."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._feeds = feeds_of(service)
        self._counters: dict[str, EndpointCounter] = {}
        self._build_counters()
        self._registration: Registration | None = None
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        # Every message held, prefetched or running, gets an in-progress ack each
        # third of ack_wait, so it is never redelivered while this instance has it.
        every = service.ack_wait / 3
        self._keep_alive = KeepAlive(every, tick=every / 2)
        self._subs: list[JetStreamContext.PullSubscription] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waiting: deque[_Waiting] = deque()
        self._windows = {
            feed.durable: _Window(PREFETCH_WINDOW * service.concurrency) for feed in self._feeds
        }
        self._buckets: dict[str, KeyValue] = {}
        self.log = CorrelationLogger(log, {"service": service.name, "instance": self.instance_id})

    # -- accessors ------------------------------------------------------------------

    @property
    def nc(self) -> Client:
        """The NATS connection (after :meth:`start`)."""
        if self._nc is None:
            raise RuntimeError("the service is not started")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (after :meth:`start`)."""
        if self._js is None:
            raise RuntimeError("the service is not started")
        return self._js

    @property
    def stats(self) -> list[EndpointCounter]:
        """The live per-endpoint statistics (as reported on ``$SRV.STATS``)."""
        return list(self._counters.values())

    async def kv(self, suffix: str = "") -> KeyValue:
        """The service's KV bucket ``svc_<name>[_<suffix>]``, created on first use."""
        if suffix not in self._buckets:
            self._buckets[suffix] = await topology.service_bucket(
                self.js, self.service.name, suffix
            )
        return self._buckets[suffix]

    def _build_counters(self) -> None:
        name = self.service.name
        for command in self.service.commands.values():
            self._counters[f"command:{command.name}"] = EndpointCounter(
                name=command.name,
                subject=subjects.inbound_command(name, command.name),
                queue_group=subjects.consumer_commands(name),
                metadata={
                    "description.en": command.description["en"],
                    "description.es": command.description["es"],
                    "admin_only": "true" if command.admin_only else "false",
                },
            )
        for feed in self._feeds:
            if feed.kind != "command":
                self._counters[feed.kind] = EndpointCounter(
                    name=feed.kind, subject=feed.filter_subject, queue_group=feed.durable
                )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, bind consumers, run startup hooks, register, start consuming.

        Raises :class:`StartupError` naming what failed (broker unreachable,
        credentials or a subject refused, a startup hook raised) and closes the
        connection it opened.
        """
        try:
            await self._start()
        except BaseException:
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.close()
            raise

    async def _start(self) -> None:
        name = self.service.name
        self._nc = await self._connect()
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT)
        needed = {feed.stream for feed in self._feeds} | {
            subjects.STREAM_OUTBOUND,
            subjects.STREAM_DLQ,
        }
        try:
            await topology.wait_for_streams(
                self._js, [s.name for s in topology.STREAMS if s.name in needed]
            )
            subs = [(feed, await self._bind(feed)) for feed in self._feeds]
        except NatsError as exc:
            raise self._refused(exc) from exc
        self._subs = [sub for _, sub in subs]
        for hook in self.service.startup_hooks:
            await self._run_startup_hook(hook)
        self._registration = Registration(
            self._nc,
            instance_id=self.instance_id,
            name=name,
            version=self.service.version,
            description=self.service.description,
            metadata=self.service.metadata(),
            endpoints=list(self._counters.values()),
        )
        await self._registration.start()
        self._loops = [
            asyncio.create_task(self._consume(feed, sub), name=f"consume:{feed.durable}")
            for feed, sub in subs
        ]
        self._keep_alive.start()
        self.log.info(
            "service %s %s started (instance %s, consumers %s)",
            name,
            self.service.version,
            self.instance_id,
            ", ".join(f.durable for f in self._feeds) or "none",
        )

    async def _connect(self) -> Client:
        """Connect, waiting for the broker at most ``nats_connect_timeout`` seconds."""
        name = self.service.name
        server = resolve_url(self.settings, self.url)
        user, _password = self.settings.credentials_for(name)
        timeout = self.settings.nats_connect_timeout
        try:
            async with asyncio.timeout(timeout):
                return await connect(
                    self.settings, name, url=server, name=f"{name}:{self.instance_id}"
                )
        except TimeoutError as exc:
            raise StartupError(
                f"cannot reach NATS at {server} within {timeout:g}s: start the broker "
                "(`botbus up` runs one), fix NATS_URL, or wait longer with "
                "BOTBUS_NATS_CONNECT_TIMEOUT",
                reason="unreachable",
            ) from exc
        except (NatsError, OSError) as exc:
            # connect() waits out outages by itself; what reaches us is a refusal.
            raise StartupError(
                f"NATS at {server} refused user {user!r} ({exc}): check "
                "BOTBUS_NATS_PASSWORD / BOTBUS_NATS_PASSWORDS against nats.conf",
                reason="refused",
            ) from exc

    def _refused(self, exc: NatsError) -> Exception:
        """Explain a JetStream call that failed while starting (usually a permission)."""
        cause = self.nc.last_error
        if cause is not None and "permissions violation" in str(cause).lower():
            user, _password = self.settings.credentials_for(self.service.name)
            return StartupError(
                f"NATS user {user!r} is not allowed to set up service "
                f"{self.service.name!r} ({cause}): give that user the permissions of "
                "this service in nats.conf (see the other services' users there), or run "
                "the service as its own user",
                reason="refused",
            )
        return exc

    async def _run_startup_hook(self, hook: LifecycleHook) -> None:
        hook_name = getattr(hook, "__name__", repr(hook))
        try:
            await hook(self)
        except (ConfigError, StartupError):
            raise
        except Exception as exc:
            raise StartupError(
                f"on_startup hook {hook_name} of service {self.service.name!r} failed: "
                f"{type(exc).__name__}: {exc}. Fix what it needs, or run with "
                "BOTBUS_LOG_LEVEL=DEBUG to see the traceback",
                reason="hook",
            ) from exc

    async def stop(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop fetching, hand back prefetched work, finish in-flight handlers, then drain."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.log.info(
            "stopping: finishing %d in-flight message(s), handing back %d prefetched",
            len(self._in_flight),
            len(self._waiting),
        )
        for window in self._windows.values():
            window.wake()
        # Prefetched work goes back first, so another instance starts on it now.
        await self._hand_back()
        # Loops notice within FETCH_WAIT; a fetch is never cut short, and what
        # it still brings is handed back too.
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._in_flight:
            _done, pending = await asyncio.wait(self._in_flight, timeout=timeout)
            if pending:
                self.log.warning(
                    "%d handler(s) still running after %ss; their messages will be "
                    "redelivered to another instance",
                    len(pending),
                    timeout,
                )
                for task in pending:
                    task.cancel()
        await self._keep_alive.stop()
        for hook in self.service.shutdown_hooks:
            try:
                await hook(self)
            except Exception:
                self.log.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))
        if self._registration is not None:
            await self._registration.stop()
        for sub in self._subs:
            # A pull subscription may hold a leftover "request expired" status
            # that nobody reads; draining it would wait for the drain timeout.
            with contextlib.suppress(NatsError, ValueError):
                await sub.unsubscribe()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self.log.info("service %s stopped", self.service.name)

    async def wait_stopped(self) -> None:
        """Wait until :meth:`stop` was called."""
        await self._stopping.wait()

    async def __aenter__(self) -> ServiceApp:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- consuming -------------------------------------------------------------------

    async def _bind(self, feed: Feed) -> JetStreamContext.PullSubscription:
        """Bind to the feed's durable consumer, creating it on first use.

        A new consumer starts at DeliverPolicy NEW; afterwards the durable is
        reused, so work that arrives while every instance is down waits.
        """
        js = self.js
        try:
            await js.consumer_info(feed.stream, feed.durable)
        except NotFoundError:
            config = ConsumerConfig(
                name=feed.durable,
                durable_name=feed.durable,
                description=f"{self.service.name}: {feed.kind}",
                filter_subject=feed.filter_subject,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.service.ack_wait,
                # One delivery beyond our own budget: a message whose earlier
                # attempts killed the process is dead-lettered, not lost silently.
                max_deliver=self.service.max_deliveries + 1,
                max_ack_pending=max(1000, self.service.concurrency * 4),
            )
            await js.add_consumer(feed.stream, config)
            self.log.info(
                "created consumer %s on %s (%s)", feed.durable, feed.stream, feed.filter_subject
            )
        return await js.pull_subscribe_bind(durable=feed.durable, stream=feed.stream)

    async def _consume(self, feed: Feed, sub: JetStreamContext.PullSubscription) -> None:
        """Fetch batches while there is room, so a fetch overlaps with handling."""
        window = self._windows[feed.durable]
        # Fetch once half a buffer fits: batches of at least concurrency/2
        # amortise the round trip, and the half buffer still waiting keeps the
        # handlers busy until the batch arrives.
        batch = max(1, self.service.concurrency // 2)
        while not self._stopping.is_set():
            await window.wait_for_room(batch)
            if self._stopping.is_set():
                break
            msgs: list[Msg] = []
            try:
                msgs = await sub.fetch(batch=window.free, timeout=FETCH_WAIT)
            except TimeoutError:
                pass
            except NotFoundError:
                self.log.warning("consumer %s vanished; recreating it", feed.durable)
                with contextlib.suppress(NatsError, TimeoutError):
                    sub = await self._bind(feed)
            except (NatsError, OSError) as exc:
                # The broker restarting: the client reconnects on its own.
                self.log.warning("fetch from %s failed (%s); retrying", feed.durable, exc)
                await asyncio.sleep(FETCH_RETRY)
            for msg in msgs:
                window.held += 1
                self._keep_alive.hold(msg)
                self._waiting.append(_Waiting(feed, msg))
            if self._stopping.is_set():
                await self._hand_back()
            else:
                self._start_waiting()

    def _start_waiting(self) -> None:
        """Start waiting messages, oldest first, while handler slots are free."""
        while self._waiting and len(self._in_flight) < self.service.concurrency:
            waiting = self._waiting.popleft()
            task = asyncio.create_task(self._handle(waiting.feed, waiting.msg))
            self._in_flight.add(task)
            task.add_done_callback(functools.partial(self._finished, waiting.feed))

    async def _hand_back(self) -> None:
        """Nak every prefetched, unstarted message so another instance takes it now."""
        while self._waiting:
            waiting = self._waiting.popleft()
            self._keep_alive.release(waiting.msg)
            try:
                await waiting.msg.nak()
            except (NatsError, OSError) as exc:
                self.log.warning(
                    "could not hand back a prefetched message (%s); the server "
                    "redelivers it after ack_wait",
                    exc,
                )
            finally:
                self._windows[waiting.feed.durable].release()

    def _finished(self, feed: Feed, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._windows[feed.durable].release()
        if not self._stopping.is_set():
            self._start_waiting()
        if not task.cancelled() and task.exception() is not None:
            # _handle catches everything; this is a bug in the SDK itself.
            self.log.error("handler task crashed", exc_info=task.exception())

    # -- handling one message ----------------------------------------------------------

    def _decode(self, feed: Feed, msg: Msg) -> Handled:
        expected: dict[FeedKind, type[Handled]] = {
            "command": InboundCommand,
            "callback": InboundCallback,
            "message": InboundMessage,
            "forget": ForgetUser,
            "delivery": DeliveryEvent,
        }
        payload: Handled
        if feed.stream == subjects.STREAM_INBOUND:
            payload = decode_inbound(msg.data, msg.subject)
        else:
            payload = decode_event(msg.data, msg.subject)
        if not isinstance(payload, expected[feed.kind]):
            raise PayloadError(
                f"invalid payload on {msg.subject}: expected a {feed.kind}, got {payload.kind}",
                field="kind",
                subject=msg.subject,
            )
        return payload

    def _counter(self, feed: Feed, payload: Handled | None, subject: str) -> EndpointCounter | None:
        if feed.kind != "command":
            return self._counters.get(feed.kind)
        command = payload.command if isinstance(payload, InboundCommand) else subject.split(".")[-1]
        return self._counters.get(f"command:{command}")

    async def _handle(self, feed: Feed, msg: Msg) -> None:
        """Handle ``msg`` (kept alive since it was fetched, until it is settled)."""
        try:
            await self._process(feed, msg)
        finally:
            self._keep_alive.release(msg)

    async def _process(self, feed: Feed, msg: Msg) -> None:
        started = time.monotonic_ns()
        meta = msg.metadata
        deliveries = meta.num_delivered
        try:
            payload = self._decode(feed, msg)
        except PayloadError as exc:
            # Retrying cannot fix a malformed payload: dead-letter it now.
            counter = self._counter(feed, None, msg.subject)
            if counter:
                counter.record(started, str(exc))
            await self._dead_letter(msg, deliveries, str(exc), None)
            return
        reference = getattr(payload, "correlation_id", None) or f"seq{meta.sequence.stream}"
        key_base = f"{self.service.name}:{reference}"
        ctx = Context(self, payload, key_base=key_base, deliveries=deliveries)
        counter = self._counter(feed, payload, msg.subject)
        if deliveries > self.service.max_deliveries:
            gave_up = f"gave up after {deliveries - 1} deliveries that never finished (crashes?)"
            if counter:
                counter.record(started, gave_up)
            await self._dead_letter(msg, deliveries, gave_up, ctx)
            return
        error: str | None = None
        try:
            try:
                result = await self._dispatch(ctx, payload)
                if isinstance(result, str) and result:
                    await ctx.reply(result)
            except ServiceError as exc:
                # A refusal the user should read; retrying would refuse again. It is a
                # request served (the user's mistake), not an error of the service.
                ctx.log.info("refused (%s): %s", exc.code, exc.user_message)
                await ctx.reply(exc.user_message)
            await self._ack(msg, ctx)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            await self._failed(msg, ctx, deliveries, exc)
        finally:
            if counter:
                counter.record(started, error)

    async def _dispatch(self, ctx: Context, payload: Handled) -> str | None:
        service = self.service
        if isinstance(payload, InboundCommand):
            command = service.commands.get(payload.command)
            if command is None:
                raise ServiceError(
                    ctx.t(
                        en=f"/{payload.command} is not a command of {service.name}.",
                        es=f"/{payload.command} no es un comando de {service.name}.",
                    ),
                    code="unknown_command",
                )
            if command.admin_only and not payload.is_admin:
                raise ServiceError(
                    ctx.t(
                        en=f"/{payload.command} is for the bot's admins only.",
                        es=f"/{payload.command} es solo para los administradores del bot.",
                    ),
                    code="forbidden",
                )
            return await command.handler(ctx, payload)
        if isinstance(payload, InboundCallback) and service.callback_handler:
            return await service.callback_handler(ctx, payload)
        if isinstance(payload, InboundMessage) and service.message_handler:
            return await service.message_handler(ctx, payload)
        if isinstance(payload, ForgetUser) and service.forget_handler:
            await service.forget_handler(ctx, payload)
            return None
        if isinstance(payload, DeliveryEvent) and service.delivery_handler:
            await service.delivery_handler(ctx, payload)
            return None
        raise RuntimeError(f"no handler for {payload.kind}")  # feeds_of() prevents this

    async def _ack(self, msg: Msg, ctx: Context) -> None:
        try:
            # Not ack_sync: a round trip per message for nothing, as a lost ack only
            # means a redelivery, whose actions JetStream dedupes by their keys.
            await msg.ack()
        except (NatsError, TimeoutError) as exc:
            # The work is done and its actions stored; a redelivery repeats them
            # with the same idempotency keys, which JetStream dedupes.
            ctx.log.warning("ack failed (%s); the message may be redelivered", exc)

    async def _failed(self, msg: Msg, ctx: Context, deliveries: int, exc: Exception) -> None:
        max_deliveries = self.service.max_deliveries
        if deliveries >= max_deliveries:
            ctx.log.error(
                "handler failed on delivery %d/%d: %s",
                deliveries,
                max_deliveries,
                exc,
                exc_info=exc,
            )
            await self._dead_letter(msg, deliveries, f"{type(exc).__name__}: {exc}", ctx)
            return
        delay = self.service.retry_delay(deliveries)
        ctx.log.warning(
            "handler failed on delivery %d/%d, retrying in %ss: %s",
            deliveries,
            max_deliveries,
            delay,
            exc,
            exc_info=exc,
        )
        try:
            await msg.nak(delay=delay)
        except (NatsError, OSError) as nak_exc:
            ctx.log.warning("nak failed (%s); the server redelivers after ack_wait", nak_exc)

    async def _dead_letter(
        self, msg: Msg, deliveries: int, error: str, ctx: Context | None
    ) -> None:
        """Record ``msg`` on the DLQ, tell the user, and stop its redelivery."""
        peek = _peek(msg.data) if ctx is None else {}
        correlation = ctx.correlation_id if ctx else peek.get("correlation_id")
        correlation = correlation if isinstance(correlation, str) else None
        record = DeadLetter(
            service=self.service.name,
            subject=msg.subject,
            deliveries=deliveries,
            error=error,
            payload=msg.data.decode(errors="replace"),
            correlation_id=correlation,
        )
        logger = ctx.log if ctx else CorrelationLogger(log, {"correlation_id": correlation})
        logger.error(
            "dead-lettered message on %s after %d delivery(ies): %s (recorded on %s)",
            msg.subject,
            deliveries,
            error,
            subjects.dead_letter(self.service.name),
        )
        try:
            await self.js.publish(subjects.dead_letter(self.service.name), encode(record))
            await self._sorry(ctx, peek, correlation)
            await msg.term()
        except (NatsError, TimeoutError, OSError) as exc:
            # Not terminated: the server redelivers it and we try again.
            logger.warning("could not record the dead letter (%s); will retry", exc)

    async def _sorry(
        self, ctx: Context | None, peek: dict[str, Any], correlation: str | None
    ) -> None:
        """The user-facing "something went wrong", if we know the chat."""
        chat_id: Any = None
        if ctx is not None:
            with contextlib.suppress(ValueError):
                chat_id = ctx.chat_id
            language = ctx.language
        else:
            chat = peek.get("chat")
            chat_id = chat.get("id") if isinstance(chat, dict) else None
            language = "es" if peek.get("language") == "es" else "en"
        if not isinstance(chat_id, int):
            return
        inbound_kind = ctx.inbound.kind if ctx is not None else peek.get("kind")
        if inbound_kind not in ("command", "callback"):
            # Only a command or a button press has a user waiting for an answer;
            # a fanned-out plain message or an event does not.
            return
        text = (
            "Lo siento, algo salió mal y no pude responder. Inténtalo más tarde."
            if language == "es"
            else "Sorry, something went wrong and I could not answer. Please try again later."
        )
        action = SendText(
            service=self.service.name,
            chat_id=chat_id,
            idempotency_key=f"{self.service.name}:{correlation or 'dlq'}:error",
            correlation_id=correlation,
            text=text,
        )
        await self.publish(action)

    # -- publishing -------------------------------------------------------------------

    async def publish(self, action: Action) -> None:
        """Store an outbound action in JetStream (deduped by its idempotency key)."""
        await self.js.publish(
            subjects.outbound(self.service.name, action.priority),
            encode(action),
            headers={"Nats-Msg-Id": action.idempotency_key},
        )
