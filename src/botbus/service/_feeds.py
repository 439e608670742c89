"""Reading a service's durable consumers: one :class:`Feed` per :class:`Route`.

Each feed binds its durable pull consumer (creating it on first use) and
reads it through an inbox subscription of its own: it sends a pull request
for as many messages as its window has room for, and every message is held
(kept alive with in-progress acks) and handed to a handler slot the moment it
arrives, not when a whole batch is in. A feed holds at most
``PREFETCH_WINDOW * concurrency`` messages, running or waiting, so the rest
stay on the server for other instances; it asks again once half a buffer
fits, so a pull's round trip overlaps with handling.

Stopping cuts nothing short and waits for no pull to expire: the request
loops are cancelled (they hold no message), what was prefetched but not
started is nak'ed at once so another instance takes it, and a message that
still arrives for an old request is nak'ed on arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from botbus.keepalive import KeepAlive
from botbus.service._context import CorrelationLogger
from botbus.service._declare import Service
from botbus.service._routing import Route

log = logging.getLogger(__name__)

FETCH_WAIT = 1.0  # seconds a pull request waits on the server for messages
FETCH_GRACE = 1.0  # seconds beyond FETCH_WAIT before a silent pull request counts as lost
FETCH_RETRY = 0.5  # seconds to pause after a pull failed (broker restarting...)
PREFETCH_WINDOW = 2  # messages held per feed (running + waiting), as a multiple of concurrency
STATUS_HEARTBEAT = "100"
STATUS_ENDED = ("404", "408")  # no messages / the request expired: the pull is over

Deliver = Callable[[Route, Msg], Awaitable[None]]


class _Window:
    """How many messages of one feed this instance holds, running or waiting.

    The request loop waits for room here, so an instance never holds more than
    ``size`` messages of a feed: the rest stay on the server for other instances.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._room = asyncio.Event()

    @property
    def free(self) -> int:
        """How many more messages may be requested now."""
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
        """Let a waiting request loop look again (it checks whether the feed is stopping)."""
        self._room.set()


@dataclass
class Feed:
    """One route's durable consumer, as this instance reads it."""

    route: Route
    window: _Window
    batch: int
    """Ask for more once this many messages fit in the window."""
    inbox: str = ""
    sub: Subscription | None = None
    outstanding: int = 0
    """Messages the current pull request may still bring."""
    problem: str = ""
    """Why the last pull ended abnormally (a 409 or 503 status), if it did."""

    def __post_init__(self) -> None:
        self.pull_over = asyncio.Event()


@dataclass(frozen=True)
class _Waiting:
    """A fetched message waiting for a free handler slot (kept alive meanwhile)."""

    feed: Feed
    msg: Msg


class Feeds:
    """Every feed of one instance, sharing ``concurrency`` handler slots."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        service: Service,
        routes: list[Route],
        deliver: Deliver,
        logger: CorrelationLogger,
    ) -> None:
        self._nc = nc
        self._js = js
        self._service = service
        self._deliver = deliver
        self.log = logger
        concurrency = service.concurrency
        self.feeds = [
            Feed(
                route,
                _Window(min(PREFETCH_WINDOW * concurrency, route.max_batch or 1_000_000)),
                # Half a buffer amortises the round trip, and the half still
                # waiting keeps the handlers busy until the next messages arrive.
                batch=max(1, min(concurrency // 2, route.max_batch or concurrency)),
            )
            for route in routes
        ]
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waiting: deque[_Waiting] = deque()
        # Every message held, prefetched or running, gets an in-progress ack each
        # third of its ack_wait, so it is never redelivered while this instance has it.
        every = min(self._ack_wait(route) for route in routes) / 3 if routes else 10.0
        self._keep_alive = KeepAlive(every, tick=every / 2)

    @property
    def in_flight(self) -> int:
        """Messages being handled now."""
        return len(self._in_flight)

    @property
    def consuming(self) -> bool:
        """True while every feed's pull loop runs (for the health check)."""
        return not self._stopping and all(not loop.done() for loop in self._loops)

    @property
    def waiting(self) -> int:
        """Messages fetched and waiting for a handler slot."""
        return len(self._waiting)

    def _ack_wait(self, route: Route) -> float:
        return route.ack_wait or self._service.ack_wait

    # -- binding --------------------------------------------------------------------

    async def bind(self) -> None:
        """Create (on first use) every feed's consumer and subscribe its inbox."""
        for feed in self.feeds:
            await self._ensure_consumer(feed.route)
            feed.inbox = self._nc.new_inbox()
            feed.sub = await self._nc.subscribe(
                feed.inbox, cb=functools.partial(self._arrived, feed)
            )

    async def _ensure_consumer(self, route: Route) -> None:
        """Create the route's durable consumer unless it exists.

        A new consumer starts where the route says (built-in kinds: new
        messages only); afterwards the durable is reused, so work that arrives
        while every instance is down waits.
        """
        try:
            await self._js.consumer_info(route.stream, route.durable)
            return
        except NotFoundError:
            pass
        config = ConsumerConfig(
            name=route.durable,
            durable_name=route.durable,
            description=f"{self._service.name}: {route.name}",
            filter_subject=route.filter_subject,
            deliver_policy=route.deliver_policy,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait(route),
            # One delivery beyond our own budget: a message whose earlier
            # attempts killed the process is dead-lettered, not lost silently.
            max_deliver=self._service.max_deliveries + 1,
            max_ack_pending=max(1000, self._service.concurrency * 4),
        )
        await self._js.add_consumer(route.stream, config)
        self.log.info(
            "created consumer %s on %s (%s)", route.durable, route.stream, route.filter_subject
        )

    # -- reading --------------------------------------------------------------------

    def start(self) -> None:
        """Start asking for messages."""
        self._keep_alive.start()
        self._loops = [
            asyncio.create_task(self._pull(feed), name=f"pull:{feed.route.durable}")
            for feed in self.feeds
        ]

    async def _pull(self, feed: Feed) -> None:
        """Send a pull request whenever the window has room; wait for it to end."""
        route = feed.route
        subject = f"{self._js._prefix}.CONSUMER.MSG.NEXT.{route.stream}.{route.durable}"
        expires = int(FETCH_WAIT * 1e9)  # nanoseconds
        while not self._stopping:
            await feed.window.wait_for_room(feed.batch)
            if self._stopping:
                break
            feed.outstanding = feed.window.free
            feed.problem = ""
            feed.pull_over.clear()
            request = json.dumps({"batch": feed.outstanding, "expires": expires}).encode()
            try:
                await self._nc.publish(subject, request, reply=feed.inbox)
            except (NatsError, OSError) as exc:
                self.log.warning("pull from %s failed (%s); retrying", route.durable, exc)
                await asyncio.sleep(FETCH_RETRY)
                continue
            # A request lost with a broken connection never ends: ask again later.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FETCH_WAIT + FETCH_GRACE):
                    await feed.pull_over.wait()
            if feed.problem:
                await self._recover(feed)

    async def _recover(self, feed: Feed) -> None:
        """A pull ended abnormally: recreate a vanished consumer, pause a moment."""
        route = feed.route
        self.log.warning("pull from %s ended: %s; retrying", route.durable, feed.problem)
        with contextlib.suppress(NatsError, TimeoutError, OSError):
            await self._ensure_consumer(route)
        await asyncio.sleep(FETCH_RETRY)

    async def _arrived(self, feed: Feed, msg: Msg) -> None:
        """A message (or a status of a pull request) arrived on the feed's inbox."""
        status = JetStreamContext.is_status_msg(msg)
        if status:
            if status == STATUS_HEARTBEAT:
                return
            if status not in STATUS_ENDED:
                description = (msg.headers or {}).get("Description", "")
                feed.problem = f"status {status} {description}".strip()
            feed.pull_over.set()
            return
        if self._stopping:
            # A late message of a pull made before the stop: give it back now.
            await self._nak(msg)
            return
        feed.window.held += 1
        self._keep_alive.hold(msg)
        self._waiting.append(_Waiting(feed, msg))
        feed.outstanding -= 1
        if feed.outstanding <= 0:
            feed.pull_over.set()
        self._start_waiting()

    def _start_waiting(self) -> None:
        """Start waiting messages, oldest first, while handler slots are free."""
        while self._waiting and len(self._in_flight) < self._service.concurrency:
            waiting = self._waiting.popleft()
            task = asyncio.create_task(self._handle(waiting.feed, waiting.msg))
            self._in_flight.add(task)
            task.add_done_callback(functools.partial(self._finished, waiting.feed))

    async def _handle(self, feed: Feed, msg: Msg) -> None:
        """Handle ``msg`` (kept alive since it arrived, until it is settled)."""
        try:
            await self._deliver(feed.route, msg)
        finally:
            self._keep_alive.release(msg)

    def _finished(self, feed: Feed, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        feed.window.release()
        if not self._stopping:
            self._start_waiting()
        if not task.cancelled() and task.exception() is not None:
            # The deliver callback catches everything; this is a bug in the SDK itself.
            self.log.error("handler task crashed", exc_info=task.exception())

    async def _nak(self, msg: Msg) -> None:
        try:
            await msg.nak()
        except (NatsError, OSError) as exc:
            self.log.warning(
                "could not hand back a prefetched message (%s); the server "
                "redelivers it after ack_wait",
                exc,
            )

    # -- stopping -------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Stop asking, hand back what waits, let in-flight handlers finish (``timeout`` s)."""
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        for feed in self.feeds:
            feed.window.wake()
        # Prefetched work goes back first, so another instance starts on it now.
        while self._waiting:
            waiting = self._waiting.popleft()
            self._keep_alive.release(waiting.msg)
            try:
                await self._nak(waiting.msg)
            finally:
                waiting.feed.window.release()
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
                await asyncio.gather(*pending, return_exceptions=True)
        await self._keep_alive.stop()

    async def close(self) -> None:
        """Unsubscribe the inboxes (after :meth:`stop`); late pulls then find no interest."""
        for feed in self.feeds:
            if feed.sub is not None:
                with contextlib.suppress(NatsError, ValueError):
                    await feed.sub.unsubscribe()
