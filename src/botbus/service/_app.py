"""The running instance of a service: its lifecycle.

One :class:`ServiceApp` per process. :meth:`ServiceApp.start` connects,
waits for the streams, binds the durable consumers, runs the startup hooks,
registers with micro and starts consuming; :meth:`ServiceApp.stop` stops
fetching, hands back prefetched work, finishes in-flight work, runs the
shutdown hooks, deregisters and drains. ``async with ServiceApp(...)`` does
both. The work itself is elsewhere: reading the consumers in ``_feeds``,
decoding and calling handlers in ``_routing``, settling messages in
``_policy``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.nuid import NUID

from botbus import provision, subjects, topology
from botbus.auth import dedupe_id, dedupe_secret
from botbus.connect import connect, connect_options, resolve_url
from botbus.errors import ConfigError, PayloadError, ProvisionError, StartupError
from botbus.i18n import Catalog
from botbus.models import Action, encode
from botbus.service._context import Context, CorrelationLogger
from botbus.service._declare import LifecycleHook, OwnStream, Service
from botbus.service._feeds import Feeds
from botbus.service._lifespan import LifespanFailed, Lifespans
from botbus.service._micro import EndpointCounter, Registration
from botbus.service._outcomes import Outcome, Reject
from botbus.service._policy import Policy
from botbus.service._routing import Route, endpoint_of, outcome_of, routes_of
from botbus.settings import Settings

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 60.0  # seconds SIGTERM waits for in-flight handlers
PUBLISH_TIMEOUT = 5.0  # seconds to wait for JetStream to store an action


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
        self._dedupe_secret: bytes | None = None
        self._js: JetStreamContext | None = None
        self._routes = routes_of(service)
        self._counters: dict[str, EndpointCounter] = {}
        self._build_counters()
        self._registration: Registration | None = None
        self._feeds: Feeds | None = None
        self._policy = Policy(self, service)
        self._stopping = asyncio.Event()
        self._state: Any = None
        self._lifespans = Lifespans(service.lifespans)
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
    def service_name(self) -> str:
        """The service's name."""
        return self.service.name

    @property
    def catalog(self) -> Catalog | None:
        """The service's message catalogue, if it declared ``locales``."""
        return self.service.catalog

    @property
    def state(self) -> Any:
        """What the service's lifespans yielded (``None`` without one)."""
        return self._state

    @property
    def stats(self) -> list[EndpointCounter]:
        """The live per-endpoint statistics (as reported on ``$SRV.STATS``)."""
        return list(self._counters.values())

    async def kv(self, suffix: str = "") -> KeyValue:
        """The service's KV bucket ``svc_<name>[_<suffix>]``, provisioned on first use.

        Raises :class:`~botbus.errors.ProvisionError` if the provisioner (the
        gateway) refused it or did not answer.
        """
        if suffix not in self._buckets:
            self._buckets[suffix] = await provision.service_bucket(
                self.nc, self.service.name, suffix
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
                    **{f"description.{lang}": text for lang, text in command.description.items()},
                    "admin_only": "true" if command.admin_only else "false",
                },
            )
        for route in self._routes:
            if route.name != "command":
                self._counters[route.name] = EndpointCounter(
                    name=route.name, subject=route.filter_subject, queue_group=route.durable
                )

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, bind consumers, enter lifespans, run startup hooks, register, consume.

        Raises :class:`StartupError` naming what failed (broker unreachable,
        credentials or a subject refused, a lifespan or startup hook raised);
        what it opened is closed again in reverse: the lifespans entered, then
        the connection.
        """
        try:
            await self._start()
        except BaseException:
            try:
                await self._lifespans.exit()
            finally:
                if self._nc is not None and not self._nc.is_closed:
                    await self._nc.close()
            raise

    async def _start(self) -> None:
        name = self.service.name
        self._nc = await self._connect()
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT)
        needed = {route.stream for route in self._routes} | {
            subjects.STREAM_OUTBOUND,
            subjects.STREAM_DLQ,
        }
        self._feeds = Feeds(self._nc, self._js, self.service, self._routes, self._deliver, self.log)
        try:
            # The gateway makes the shared streams, and runs the provisioner of ours.
            await topology.wait_for_streams(
                self._js, [s.name for s in topology.STREAMS if s.name in needed]
            )
            for own in self.service.streams:
                await self._ensure_stream(own)
            await self._feeds.bind()
        except NatsError as exc:
            raise self._refused(exc) from exc
        except ProvisionError as exc:
            raise StartupError(
                f"service {name!r} cannot start without its streams: {exc}", reason="refused"
            ) from exc
        await self._enter_lifespans()
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
        # Started means discoverable: the broker has the $SRV subscriptions before this
        # returns (a PING right after start() found no responders on a loaded machine).
        await self._nc.flush()
        self._feeds.start()
        self.log.info(
            "service %s %s started (instance %s, consumers %s)",
            name,
            self.service.version,
            self.instance_id,
            ", ".join(r.durable for r in self._routes) or "none",
        )

    async def _connect(self) -> Client:
        """Connect, waiting for the broker at most ``nats_connect_timeout`` seconds."""
        name = self.service.name
        server = resolve_url(self.settings, self.url)
        timeout = self.settings.nats_connect_timeout
        try:
            login = connect_options(self.settings, name, self.service.grants)
            self._dedupe_secret = dedupe_secret(login.get("user_credentials"))
            async with asyncio.timeout(timeout):
                return await connect(
                    self.settings,
                    name,
                    url=server,
                    name=f"{name}:{self.instance_id}",
                    login=login,
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
                f"NATS at {server} refused the identity of service {name!r} ({exc}): "
                "check BOTBUS_NATS_CREDS (issue one with `botbus creds issue "
                f"{name}`) or BOTBUS_DATA_DIR",
                reason="refused",
            ) from exc

    def _refused(self, exc: NatsError) -> Exception:
        """Explain a JetStream call that failed while starting (usually a permission)."""
        cause = self.nc.last_error
        if cause is not None and "permissions violation" in str(cause).lower():
            return StartupError(
                f"this identity is not allowed to set up service {self.service.name!r} "
                f"({cause}): run it with credentials issued for its own name "
                f"(`botbus creds issue {self.service.name}`), with the grants it declares",
                reason="refused",
            )
        return exc

    async def _ensure_stream(self, own: OwnStream) -> None:
        """Have a declared stream created, or its settings brought up to date."""
        reply = await provision.provision(self.nc, self.service.name, own.request)
        if reply.created:
            self.log.info("stream %s provisioned (%s)", own.name, ", ".join(own.subjects))
        elif reply.changed:
            self.log.info("stream %s updated: %s", own.name, ", ".join(reply.changed))

    async def _enter_lifespans(self) -> None:
        def keep(state: Any) -> None:
            self._state = state

        try:
            await self._lifespans.enter(self, keep)
        except LifespanFailed as exc:
            if isinstance(exc.cause, ConfigError | StartupError):
                raise exc.cause from None
            raise StartupError(
                f"{exc} (service {self.service.name!r}). Fix what it needs, or run with "
                "BOTBUS_LOG_LEVEL=DEBUG to see the traceback",
                reason="hook",
            ) from exc.cause

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
        feeds = self._feeds
        if feeds is not None:
            self.log.info(
                "stopping: finishing %d in-flight message(s), handing back %d prefetched",
                feeds.in_flight,
                feeds.waiting,
            )
            await feeds.stop(timeout)
        for hook in self.service.shutdown_hooks:
            try:
                await hook(self)
            except Exception:
                self.log.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))
        try:
            await self._lifespans.exit()
        except Exception:
            self.log.exception("closing a lifespan of service %s failed", self.service.name)
        if self._registration is not None:
            await self._registration.stop()
        if feeds is not None:
            await feeds.close()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self.log.info("service %s stopped", self.service.name)

    def health(self) -> dict[str, bool]:
        """Named checks of this instance (all true = healthy), for ``/healthz``."""
        return {
            "nats_connected": self._nc is not None and self._nc.is_connected,
            "consuming": not self._stopping.is_set()
            and self._feeds is not None
            and self._feeds.consuming,
        }

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

    # -- one message ---------------------------------------------------------------------

    async def _deliver(self, route: Route, msg: Msg) -> None:
        """Decode ``msg``, run its handler, settle it by the outcome, count it."""
        started = time.monotonic_ns()
        meta = msg.metadata
        deliveries = meta.num_delivered
        try:
            payload = route.decode(msg.data, msg.subject)
        except PayloadError as exc:
            # Retrying cannot fix a malformed payload: dead-letter it now.
            self._count(route, None, msg.subject, started, str(exc))
            await self._policy.dead_letter(msg, deliveries, str(exc), None)
            return
        reference = getattr(payload, "correlation_id", None) or f"seq{meta.sequence.stream}"
        ctx: Context[Any] = Context(
            self,
            payload,
            key_base=f"{self.service.name}:{reference}",
            deliveries=deliveries,
            subject=msg.subject,
            sequence=meta.sequence.stream,
        )
        outcome: Outcome
        if deliveries > self.service.max_deliveries:
            outcome = Reject(
                f"gave up after {deliveries - 1} deliveries that never finished (crashes?)"
            )
        else:
            outcome = await outcome_of(route, ctx, payload)
        error = await self._policy.settle(msg, ctx, outcome)
        self._count(route, payload, msg.subject, started, error)

    def _count(
        self, route: Route, payload: Any, subject: str, started: int, error: str | None
    ) -> None:
        counter = self._counters.get(endpoint_of(route, payload, subject))
        if counter is not None:
            counter.record(started, error)

    # -- publishing -------------------------------------------------------------------

    def dedupe_id(self, key: str) -> str:
        """The ``Nats-Msg-Id`` of an outbound action with idempotency key ``key``:
        the same for every instance of this identity, unguessable to other services
        (:func:`botbus.auth.dedupe_id`)."""
        return dedupe_id(self._dedupe_secret, key)

    async def publish(self, action: Action) -> None:
        """Store an outbound action in JetStream (deduped by its idempotency key)."""
        await self.js.publish(
            subjects.outbound(self.service.name, action.priority),
            encode(action),
            headers={"Nats-Msg-Id": self.dedupe_id(action.idempotency_key)},
        )
