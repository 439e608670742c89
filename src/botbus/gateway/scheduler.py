"""The outbound scheduler: every call that sends something to Telegram goes through here.

One :class:`OutboundScheduler` per bot token owns all sends, so Telegram's limits
are enforced in one place:

* a global budget (``Budget.global_per_second``, or ``paid_per_second`` for bots
  with ``allow_paid_broadcast``), paced evenly. A call counts against it from
  the moment it is dispatched until one second after its answer arrives; as
  Telegram sees the call somewhere in between, no one-second window on
  Telegram's side can ever hold more calls than the budget, whatever the
  network latency and its jitter (the price is ``latency / 1 s`` of the budget);
* per chat, at most ``per_chat_burst`` sends in any ``per_chat_burst /
  per_chat_per_second`` seconds (1/s on average with a short burst);
* per group, at most ``group_per_minute`` sends in any 60 seconds.

Per-chat and group windows are measured from the time each answer arrived,
which is never earlier than when Telegram counted the call, so they err on the
safe side too.

Lanes. Each job is ``interactive`` (a reply to something a user just did) or
``bulk`` (alerts, broadcasts). Interactive goes first; bulk gets whatever budget
is left, and at least ``bulk_share`` of the global slots whenever it has work, so
it never starves.

Per-chat order. The scheduler is the one owner of it. Jobs to one chat are sent
one at a time, across lanes and retries, in the order of their ``seq`` (the
caller's position of the job, e.g. the action's stream sequence; jobs with
equal ``seq`` keep their submission order): a chat has a single queue and at
most one call in flight. An interactive job never overtakes an earlier bulk job
to the *same* chat (that would reorder what the user reads); instead the whole
chat is promoted to the interactive lane while it holds an interactive job
("priority inheritance"), so the earlier bulk jobs of that chat go first at
interactive priority, and the reply follows them as soon as the per-chat limit
allows. A job may name the job it follows (``after``, e.g. the previous part of
a split text): if that one was not sent, this one is not attempted either
(outcome ``skipped``), so a later part never arrives without the earlier one.

Rate-limit replies (429). Telegram does not say which limit a 429 concerns, so:
a ``RetryAfter`` pauses only the chat that got it for ``retry_after`` seconds
(its job stays at the head of its queue); when 429s come from at least
``global_429_chats`` distinct chats within ``global_429_window`` seconds, the
bot as a whole is taken to be over its budget and *all* sends pause for the
longest ``retry_after`` seen. Other chats keep flowing otherwise.

Failures. What an exception means is decided by the ``classify`` function the
scheduler is given (by default
:func:`~botbus.gateway.calls.classify_telegram_error`): a 429 with its
``retry_after``, a refusal for good (blocked, chat not found, bad text: never
retried, the outcome is ``refused``), or a transient failure (network errors,
timeouts, 5xx), retried with exponential backoff (``backoff_base`` doubling,
capped at ``backoff_max``), each delay drawn between half and all of it. Every
attempt, including one answered by a 429, counts towards ``max_attempts``;
after that the outcome is ``gave_up``. A timed-out call may have reached
Telegram, so a retry after it can duplicate a message (at-least-once).

Time. Every reading of the time and every timer goes through the ``clock`` the
scheduler is given (by default :class:`LoopClock`, the event loop's), and the
backoff jitter through its ``rng``: its tests run on a virtual clock and a
seeded generator, deterministic and without sleeping.

Calls that send no message. Telegram's limits are about messages; an
``answerCallbackQuery`` or ``sendChatAction`` is not one, so a job marked
``unlimited`` skips the global, per-chat and group budgets (and is not
counted in them). It still waits its turn in its chat's FIFO, so per-chat
order holds, and counts towards ``max_in_flight``. Edits and deletions stay
budgeted: Telegram does throttle frequent edits in one chat.

Withdrawal and shutdown. Cancelling a job's future before it is sent withdraws
it. ``stop(drain=False)`` cancels the futures of everything not yet sent, so a
durable caller leaves those actions unacknowledged and gets them again.

Cost. Submitting and dispatching a job is O(log n): chats waiting for their
limit sit in a heap keyed by the time they become sendable; ready chats sit in
one FIFO per lane. Nothing scans all chats, and an idle scheduler sleeps on an
event.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Literal, Protocol, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from botbus.errors import BotbusError
from botbus.gateway.calls import Verdict, classify_telegram_error
from botbus.models import OutboundStatus, Priority
from botbus.settings import Settings

__all__ = [
    "Budget",
    "Classify",
    "Clock",
    "LoopClock",
    "OutboundJob",
    "OutboundScheduler",
    "Outcome",
    "SchedulerClosedError",
    "SchedulerStats",
    "Timer",
    "budget_from_settings",
]

logger = logging.getLogger(__name__)

LANES: tuple[Priority, ...] = get_args(Priority)

DEFAULT_MAX_ATTEMPTS = 8
# Concurrent Telegram calls: 1000 msg/s (paid broadcast) at up to 100 ms per call.
# (With httpx as the transport this had to stay at 32: httpcore scans every open
# connection on each request; the gateway's aiohttp transport does not.)
DEFAULT_MAX_IN_FLIGHT = 100
DEFAULT_BULK_SHARE = 0.1  # fraction of global slots bulk gets even under interactive load
DEFAULT_BACKOFF_BASE = 0.5  # seconds, first retry delay after a transient failure
DEFAULT_BACKOFF_MAX = 30.0  # seconds, cap of one backoff delay
DEFAULT_GLOBAL_429_CHATS = 3  # distinct chats answering 429 ...
DEFAULT_GLOBAL_429_WINDOW = 2.0  # ... within this many seconds => the whole bot is over budget
DEFAULT_STOP_GRACE = 10.0  # seconds stop(drain=False) waits for calls already in flight
GROUP_WINDOW = 60.0  # seconds: Telegram's group limit is per minute
GLOBAL_WINDOW = 1.0  # seconds: the global budget is per second
PACING_CATCH_UP = 0.02  # seconds of lateness the global pacing makes up for
RATE_WINDOW = 5.0  # seconds of history behind SchedulerStats.sends_per_second
IDLE_FORGET_AFTER = 120.0  # seconds: an idle chat's limiter history no longer matters

Classify = Callable[[Exception], Verdict]


class Timer(Protocol):
    """A pending timer; cancelling it means its callback never runs."""

    def cancel(self) -> None:
        """Cancel the timer."""
        ...


class Clock(Protocol):
    """Where the scheduler reads the time and sets its timers (seconds, monotonic)."""

    def now(self) -> float:
        """The current time."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` at ``when`` (at once if that has passed)."""
        ...


class LoopClock:
    """The running event loop's clock: the scheduler's clock in production."""

    def now(self) -> float:
        """The precise monotonic time, never behind the loop's.

        The loop's clock is cached per loop turn, and uvloop's is whole
        milliseconds: a stamp up to a millisecond early, which at 1000 msg/s
        frees the budget one message too soon. CLOCK_MONOTONIC is the loop's
        clock too, read precisely.
        """
        return max(asyncio.get_running_loop().time(), time.monotonic())

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """A loop timer."""
        return asyncio.get_running_loop().call_at(when, callback)


class SchedulerClosedError(BotbusError):
    """A job was submitted to a scheduler that is stopping or stopped."""


@dataclass(frozen=True)
class Budget:
    """Telegram's sending limits; the defaults are Telegram's published ones."""

    global_per_second: float = 30.0
    per_chat_per_second: float = 1.0
    per_chat_burst: int = 3  # short bursts allowed per chat
    group_per_minute: int = 20
    paid_broadcast: bool = False  # bots with allow_paid_broadcast: up to 1000/s overall
    paid_per_second: float = 1000.0

    def __post_init__(self) -> None:
        for name in ("global_per_second", "per_chat_per_second", "paid_per_second"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Budget.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("per_chat_burst", "group_per_minute"):
            if getattr(self, name) < 1:
                raise ValueError(f"Budget.{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def overall_per_second(self) -> float:
        """The global budget in force: the paid one when paid broadcast is on."""
        return self.paid_per_second if self.paid_broadcast else self.global_per_second


def budget_from_settings(settings: Settings) -> Budget:
    """The budget configured by ``BOTBUS_RATE_*`` and ``BOTBUS_PAID_BROADCAST``."""
    return Budget(
        global_per_second=settings.rate_global,
        per_chat_per_second=settings.rate_per_chat,
        group_per_minute=settings.rate_group_per_min,
        paid_broadcast=settings.paid_broadcast,
    )


@dataclass
class OutboundJob:
    """One Telegram call to make, and what the limits need to know about it."""

    chat_id: int
    is_group: bool  # groups/supergroups also get the per-minute budget
    priority: Priority
    # Performs ONE Telegram call; raises telegram.error.* on failure.
    send: Callable[[], Awaitable[object]]
    key: str = ""  # for logs / metrics
    # A call that sends no message (answerCallbackQuery, sendChatAction): Telegram's
    # message budgets do not apply, so it skips the global, per-chat and group limits.
    # It still keeps its chat's order and counts towards max_in_flight.
    unlimited: bool = False
    # Position in the chat's order: jobs to one chat go in ascending seq, equal
    # ones in submission order. The gateway uses the action's stream sequence.
    seq: int = 0
    # The earlier job to the same chat this one belongs after (the previous part of
    # a split text): when that one was not sent, this one is skipped.
    after: asyncio.Future[Outcome] | None = None


@dataclass
class Outcome:
    """How a job ended: accepted, refused for good, out of attempts, or not attempted
    because the job it follows (``OutboundJob.after``) was not sent."""

    status: Literal["sent", "refused", "gave_up", "skipped"]
    result: object | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class SchedulerStats:
    """A point-in-time view of the scheduler, for `botbus status` and logs."""

    queued: dict[Priority, int]  # jobs waiting (not in flight), by their own lane
    in_flight: int
    sent_total: int
    sends_per_second: float  # over the last RATE_WINDOW seconds
    budget_per_second: float
    rate_limited_total: int  # 429 answers
    retries_total: int
    refused_total: int  # permanent failures
    gave_up_total: int
    paused_chats: int  # chats held back by a 429 right now
    globally_paused_for: float  # seconds left of a bot-wide 429 pause (0 if none)

    def to_status(self) -> OutboundStatus:
        """The bus payload ``botbus status`` receives."""
        return OutboundStatus(
            queued_interactive=self.queued.get("interactive", 0),
            queued_bulk=self.queued.get("bulk", 0),
            in_flight=self.in_flight,
            sent_total=self.sent_total,
            sends_per_second=round(self.sends_per_second, 2),
            budget_per_second=self.budget_per_second,
            rate_limited_total=self.rate_limited_total,
            retries_total=self.retries_total,
            permanent_failures_total=self.refused_total,
            gave_up_total=self.gave_up_total,
            paused_chats=self.paused_chats,
        )


class _Window:
    """At most ``limit`` events in any ``period`` seconds (a sliding log, O(1) amortised)."""

    __slots__ = ("_times", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._times: deque[float] = deque()

    def next_allowed(self, now: float) -> float:
        """Earliest time the next event fits in the window."""
        if len(self._times) < self.limit:
            return now
        return max(now, self._times[0] + self.period)

    def record(self, when: float) -> None:
        """Count an event at ``when``."""
        self._times.append(when)
        if len(self._times) > self.limit:
            self._times.popleft()


class _FlightWindow:
    """At most ``limit`` calls counted, each from dispatch until ``period`` after its answer."""

    __slots__ = ("_answered", "in_flight", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.in_flight = 0
        self._answered: deque[float] = deque()  # answer times, ascending

    def next_allowed(self, now: float) -> float:
        """Earliest time one more call fits (``inf``: only an answer can free room)."""
        answered = self._answered
        while answered and answered[0] <= now - self.period:
            answered.popleft()
        excess = self.in_flight + len(answered) - self.limit  # >= 0: over by excess + 1
        if excess < 0:
            return now
        if excess >= len(answered):
            return math.inf
        return answered[excess] + self.period

    def dispatched(self) -> None:
        """A call leaves now."""
        self.in_flight += 1

    def answered(self, when: float) -> None:
        """A call's answer (or failure) arrived at ``when``."""
        self.in_flight -= 1
        self._answered.append(when)


class _State(Enum):
    IDLE = "idle"  # nothing queued
    WAITING = "waiting"  # queued, held back by a limit, a pause or a backoff (in the heap)
    READY = "ready"  # queued and sendable (in a lane FIFO)
    FLIGHT = "flight"  # one call in flight; the rest of its queue waits behind it


@dataclass
class _Entry:
    job: OutboundJob
    future: asyncio.Future[Outcome]
    attempts: int = 0


@dataclass(eq=False)
class _Chat:
    chat_id: int
    is_group: bool
    window: _Window
    group_window: _Window | None
    queue: deque[_Entry] = field(default_factory=deque)
    interactive_queued: int = 0  # > 0 promotes the chat to the interactive lane
    state: _State = _State.IDLE
    lane: Priority | None = None  # lane FIFO holding the chat when READY
    gen: int = 0  # bumped on every state change; stale heap/FIFO entries are skipped
    not_before: float = -math.inf  # a 429 pause or a retry backoff

    def sendable_at(self, now: float) -> float:
        if self.queue and self.queue[0].job.unlimited:
            return max(now, self.not_before)
        at = max(now, self.not_before, self.window.next_allowed(now))
        if self.group_window is not None:
            at = max(at, self.group_window.next_allowed(now))
        return at


def _not_sent(after: asyncio.Future[Outcome] | None) -> bool:
    """True when the job ``after`` stands for has ended without being sent."""
    if after is None or not after.done():
        return False
    return after.cancelled() or after.result().status != "sent"


def _insert_in_order(queue: deque[_Entry], entry: _Entry) -> None:
    """Queue ``entry`` after every job of lower or equal ``seq`` (usually: append)."""
    seq = entry.job.seq
    at = len(queue)
    while at > 0 and queue[at - 1].job.seq > seq:
        at -= 1
    queue.insert(at, entry)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth = Gauge(
            "botbus_outbound_queue_depth",
            "Outbound jobs waiting to be sent, by lane.",
            ["lane"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "botbus_outbound_in_flight", "Telegram calls in flight.", registry=registry
        )
        self.sends = Counter(
            "botbus_outbound_sends",
            "Calls Telegram accepted, by lane.",
            ["lane"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "botbus_outbound_429", "429 (RetryAfter) answers from Telegram.", registry=registry
        )
        self.retries = Counter(
            "botbus_outbound_retries",
            "Attempts scheduled again after a failure.",
            registry=registry,
        )
        self.permanent_failures = Counter(
            "botbus_outbound_permanent_failures",
            "Jobs Telegram refused for good (blocked, chat not found, ...).",
            registry=registry,
        )
        self.gave_up = Counter(
            "botbus_outbound_gave_up", "Jobs dropped after max attempts.", registry=registry
        )
        self.paused_chats = Gauge(
            "botbus_outbound_paused_chats", "Chats paused by a 429 right now.", registry=registry
        )
        # The children of each lane, looked up once: labels() takes a lock and
        # builds a key on every call, and these change with every message.
        self.queue_depth_of = {lane: self.queue_depth.labels(lane=lane) for lane in LANES}
        self.sends_of = {lane: self.sends.labels(lane=lane) for lane in LANES}
        for gauge in self.queue_depth_of.values():
            gauge.set(0)


class OutboundScheduler:
    """Sends every outbound Telegram call within Telegram's limits; see the module doc.

    ``registry`` receives the Prometheus metrics; without one a private registry
    is used (so several schedulers can live in one process, e.g. in tests).
    ``clock``, ``classify`` and ``rng`` are the time, the reading of errors and
    the backoff jitter (defaults: the event loop, Telegram's errors, ``random``).
    """

    def __init__(
        self,
        budget: Budget = Budget(),  # frozen, so one shared default is safe
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        registry: CollectorRegistry | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        bulk_share: float = DEFAULT_BULK_SHARE,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        global_429_chats: int = DEFAULT_GLOBAL_429_CHATS,
        global_429_window: float = DEFAULT_GLOBAL_429_WINDOW,
        clock: Clock | None = None,
        classify: Classify = classify_telegram_error,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if not 0 < bulk_share <= 1:
            raise ValueError(f"bulk_share must be in (0, 1], got {bulk_share}")
        self.budget = budget
        self.max_attempts = max_attempts
        self.max_in_flight = max_in_flight
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.global_429_chats = global_429_chats
        self.global_429_window = global_429_window
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._classify = classify
        self._rng = rng if rng is not None else random.Random()
        # After this many interactive dispatches in a row while bulk waits, bulk gets one.
        self._interactive_streak_max = max(math.ceil(1 / bulk_share) - 1, 0)
        self._interactive_streak = 0

        rate = budget.overall_per_second
        self._interval = 1.0 / rate
        self._catch_up = max(self._interval, PACING_CATCH_UP)
        self._global_next = -math.inf  # earliest time of the next dispatch (pacing)
        self._global_window = _FlightWindow(max(math.floor(rate * GLOBAL_WINDOW), 1), GLOBAL_WINDOW)
        self._global_paused_until = -math.inf
        self._recent_429: deque[tuple[float, int, float]] = deque()  # (when, chat, retry_after)

        self._chats: dict[int, _Chat] = {}
        self._idle_since: OrderedDict[int, float] = OrderedDict()  # oldest idle chat first
        self._ready: dict[Priority, deque[tuple[_Chat, int]]] = {lane: deque() for lane in LANES}
        self._ready_free: deque[tuple[_Chat, int]] = deque()  # head job is unlimited
        self._waiting: list[tuple[float, int, _Chat, int]] = []  # heap (at, seq, chat, gen)
        self._seq = 0
        self._paused: dict[int, float] = {}  # chat -> paused until (429 only)

        self._queued: dict[Priority, int] = dict.fromkeys(LANES, 0)
        self._in_flight = 0
        self._pending = 0  # queued + in flight; 0 means drained
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._abandoned = False  # stopped without drain: nothing is dispatched any more

        self._sent_total = 0
        self._rate_limited_total = 0
        self._retries_total = 0
        self._refused_total = 0
        self._gave_up_total = 0
        self._rate_buckets: deque[list[int]] = deque()  # [whole second, sends]
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start dispatching. Jobs submitted before start wait for it."""
        if self._runner is not None:
            return
        self._closed = False
        self._abandoned = False
        self._runner = asyncio.create_task(self._run(), name="botbus-outbound-scheduler")
        self._runner.add_done_callback(self._runner_done)

    async def stop(self, *, drain: bool = True, grace: float = DEFAULT_STOP_GRACE) -> None:
        """Stop accepting jobs; with ``drain`` first send everything queued.

        Draining waits for every queued job to end (sent, refused or gave up),
        including retries and 429 pauses. Without ``drain``, queued jobs are
        cancelled (their futures are cancelled, so a durable caller does not
        ack them and gets them again after a restart) and calls already in
        flight get ``grace`` seconds to finish before they are cancelled too.
        """
        self._closed = True
        if drain and self._runner is not None:
            await self._drained.wait()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        self._abandon_queued()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                logger.warning(
                    "cancelled %s Telegram calls still in flight at stop; they may or may not "
                    "have reached Telegram",
                    len(late),
                )
                await asyncio.wait(late)

    def _abandon_queued(self) -> None:
        # Nothing dispatches any more: queued jobs are cancelled, and so is any
        # job a call still in flight would put back for a retry.
        self._abandoned = True
        for chat in self._chats.values():
            while chat.queue:
                self._resolve_cancelled(chat, chat.queue.popleft())
            if chat.state is not _State.FLIGHT:
                self._set_state(chat, _State.IDLE)

    async def __aenter__(self) -> OutboundScheduler:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(drain=exc_type is None)

    # ------------------------------------------------------------------ public API

    def submit(self, job: OutboundJob) -> asyncio.Future[Outcome]:
        """Queue ``job``; the future resolves with its :class:`Outcome`.

        Cancelling the future before the job is sent withdraws it.
        """
        if self._closed:
            raise SchedulerClosedError(
                "the outbound scheduler is stopping; submit after start() and before stop()"
            )
        if job.priority not in LANES:
            raise ValueError(
                f"OutboundJob.priority must be one of {LANES}, got {job.priority!r} "
                f"(job {job.key or job.chat_id})"
            )
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        entry = _Entry(job, future)
        chat = self._chats.get(job.chat_id)
        if chat is None:
            chat = self._chats[job.chat_id] = _Chat(
                chat_id=job.chat_id,
                is_group=job.is_group,
                window=_Window(
                    self.budget.per_chat_burst,
                    self.budget.per_chat_burst / self.budget.per_chat_per_second,
                ),
                group_window=None,
            )
        if job.is_group and chat.group_window is None:
            chat.is_group = True
            chat.group_window = _Window(self.budget.group_per_minute, GROUP_WINDOW)
        self._idle_since.pop(chat.chat_id, None)
        _insert_in_order(chat.queue, entry)
        self._change_queued(job.priority, +1)
        self._pending += 1
        self._drained.clear()
        if job.priority == "interactive":
            chat.interactive_queued += 1
            if chat.state is _State.READY and chat.lane == "bulk":
                self._make_ready(chat)  # priority inheritance: move to the interactive FIFO
        if chat.state is _State.IDLE:
            self._schedule(chat, self._now())
        self._wakeup.set()
        return future

    def snapshot(self) -> SchedulerStats:
        """Counters and gauges as they are now."""
        now = self._now()
        self._expire_pauses(now)
        return SchedulerStats(
            queued=dict(self._queued),
            in_flight=self._in_flight,
            sent_total=self._sent_total,
            sends_per_second=self._recent_rate(now),
            budget_per_second=self.budget.overall_per_second,
            rate_limited_total=self._rate_limited_total,
            retries_total=self._retries_total,
            refused_total=self._refused_total,
            gave_up_total=self._gave_up_total,
            paused_chats=len(self._paused),
            globally_paused_for=max(self._global_paused_until - now, 0.0),
        )

    # ------------------------------------------------------------------ dispatch loop

    def _now(self) -> float:
        return self._clock.now()

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            now = self._now()
            if self._in_flight >= self.max_in_flight:
                await self._wakeup.wait()  # a call finishing sets it
                continue
            self._promote_due(now)
            chat = self._pop_free()
            if chat is not None:
                self._dispatch(chat, now, free=True)  # no message budget to wait for
                continue
            slot = self._next_global_slot(now)
            if slot > now:
                # A waiting chat may come due (and be unlimited) before the slot.
                wake = min(slot, self._waiting[0][0]) if self._waiting else slot
                await self._sleep(None if wake == math.inf else wake - now)
                continue
            chat = self._pick()
            if chat is None:
                timeout = self._waiting[0][0] - now if self._waiting else None
                await self._sleep(timeout)
                continue
            self._dispatch(chat, now, free=False)
            self._forget_idle(now)

    async def _sleep(self, timeout: float | None) -> None:
        """Wait until something changes (a submit, a call ending) or ``timeout`` passes."""
        # A timer setting the event rather than asyncio.wait_for: no task per
        # wait, and no 3.11 wait_for race that can swallow stop()'s cancellation.
        timer = None
        if timeout is not None:
            timer = self._clock.call_at(self._now() + timeout, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            if timer is not None:
                timer.cancel()

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "the outbound scheduler stopped on a bug; its queued jobs are cancelled (not "
                "acked, so they come back) and nothing is sent until the gateway restarts",
                exc_info=task.exception(),
            )
            self._abandon_queued()

    def _next_global_slot(self, now: float) -> float:
        return max(
            self._global_paused_until,
            self._global_next,
            self._global_window.next_allowed(now),
        )

    def _take_global_slot(self, now: float) -> None:
        # Even pacing keeps interactive latency low. A late wake-up (the event
        # loop's timers have ~1 ms granularity, a whole slot at 1000/s) is made
        # up for by up to PACING_CATCH_UP, so timer jitter does not eat the
        # budget; the flight window still caps every second.
        self._global_next = max(self._global_next, now - self._catch_up) + self._interval
        self._global_window.dispatched()

    def _promote_due(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            _, _, chat, gen = heapq.heappop(self._waiting)
            if chat.gen == gen and chat.state is _State.WAITING:
                self._make_ready(chat)

    def _pop_free(self) -> _Chat | None:
        fifo = self._ready_free
        while fifo:
            chat, gen = fifo.popleft()
            if chat.gen == gen and chat.state is _State.READY:
                return chat
        return None

    def _pop_ready(self, lane: Priority) -> _Chat | None:
        fifo = self._ready[lane]
        while fifo:
            chat, gen = fifo.popleft()
            if chat.gen == gen and chat.state is _State.READY:
                return chat
        return None

    def _pick(self) -> _Chat | None:
        bulk_turn = self._interactive_streak >= self._interactive_streak_max
        if bulk_turn:
            chat = self._pop_ready("bulk")
            if chat is not None:
                self._interactive_streak = 0
                return chat
        chat = self._pop_ready("interactive")
        if chat is not None:
            if self._ready["bulk"]:
                self._interactive_streak += 1
            return chat
        self._interactive_streak = 0
        return self._pop_ready("bulk")

    def _dispatch(self, chat: _Chat, now: float, *, free: bool) -> None:
        while chat.queue and chat.queue[0].future.done():
            self._resolve_cancelled(chat, chat.queue.popleft())  # the caller withdrew it
        if not chat.queue:
            self._set_state(chat, _State.IDLE)
            self._mark_idle(chat, now)
            return
        if chat.queue[0].job.unlimited != free:
            # A withdrawn head left a job of the other kind first: queue the chat
            # again by what it now has to send.
            self._schedule(chat, now)
            return
        entry = chat.queue.popleft()
        if self._paused.pop(chat.chat_id, None) is not None:  # its 429 pause is over
            self._metrics.paused_chats.set(len(self._paused))
        if not free:
            self._take_global_slot(now)
        self._set_state(chat, _State.FLIGHT)
        self._change_queued(entry.job.priority, -1)
        self._in_flight += 1
        self._metrics.in_flight.set(self._in_flight)
        task = asyncio.create_task(self._attempt(chat, entry), name=f"send-{entry.job.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ one attempt

    async def _attempt(self, chat: _Chat, entry: _Entry) -> None:
        entry.attempts += 1
        job = entry.job
        retry_at: float | None = None
        if _not_sent(job.after):
            # The job this one follows was not sent: sending this one would leave a
            # gap (a split text without its first part).
            self._finish(chat, entry, Outcome("skipped"))
            self._after_call(chat, entry)
            return
        try:
            result = await job.send()
        except asyncio.CancelledError:
            self._finish_cancelled(chat, entry)
            raise
        except Exception as exc:
            retry_at = self._on_failure(chat, entry, exc)
        else:
            self._sent_total += 1
            self._metrics.sends_of[job.priority].inc()
            self._count_rate(self._now())
            self._finish(chat, entry, Outcome("sent", result=result))
        if retry_at is not None:
            chat.queue.appendleft(entry)  # stays first: per-chat order survives retries
            self._change_queued(job.priority, +1)
            chat.not_before = max(chat.not_before, retry_at)
        self._after_call(chat, entry)

    def _on_failure(self, chat: _Chat, entry: _Entry, exc: Exception) -> float | None:
        """Count a failed attempt; the time to retry it, or None when it has ended."""
        job = entry.job
        try:
            verdict = self._classify(exc)
        except Exception:
            logger.exception("classifying the failure of job %s raised; refusing it", job.key)
            verdict = Verdict("bug")
        if verdict.kind == "rate_limited":
            return self._on_rate_limited(chat, entry, exc, verdict.retry_after)
        if verdict.kind == "transient":
            return self._on_transient(chat, entry, exc)
        if verdict.kind == "permanent":
            logger.info("refused job %s for chat %s for good: %s", job.key, chat.chat_id, exc)
        else:
            # Not an answer from the other side but a bug in the send callable:
            # retrying would repeat it, so it is refused and logged loudly.
            logger.error(
                "job %s for chat %s failed outside Telegram", job.key, chat.chat_id, exc_info=exc
            )
        self._refused_total += 1
        self._metrics.permanent_failures.inc()
        self._finish(chat, entry, Outcome("refused", error=exc))
        return None

    def _on_rate_limited(
        self, chat: _Chat, entry: _Entry, exc: Exception, delay: float
    ) -> float | None:
        now = self._now()
        self._rate_limited_total += 1
        self._metrics.rate_limited.inc()
        until = now + delay
        if self._give_up_if_spent(chat, entry, exc):
            return None
        self._paused[chat.chat_id] = max(self._paused.get(chat.chat_id, -math.inf), until)
        self._metrics.paused_chats.set(len(self._paused))
        logger.warning(
            "429 for chat %s (job %s): pausing that chat for %.1fs",
            chat.chat_id,
            entry.job.key,
            delay,
        )
        self._note_429(now, chat.chat_id, delay)
        self._count_retry()
        return until

    def _note_429(self, now: float, chat_id: int, delay: float) -> None:
        recent = self._recent_429
        recent.append((now, chat_id, delay))
        while recent and recent[0][0] < now - self.global_429_window:
            recent.popleft()
        if len({c for _, c, _ in recent}) >= self.global_429_chats:
            pause = max(d for _, _, d in recent)
            if now + pause > self._global_paused_until:
                self._global_paused_until = now + pause
                logger.warning(
                    "429s from %s chats within %.1fs: the bot is over Telegram's global budget; "
                    "pausing all sends for %.1fs",
                    len({c for _, c, _ in recent}),
                    self.global_429_window,
                    pause,
                )

    def _on_transient(self, chat: _Chat, entry: _Entry, exc: Exception) -> float | None:
        if self._give_up_if_spent(chat, entry, exc):
            return None
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (entry.attempts - 1))
        delay = self._rng.uniform(ceiling / 2, ceiling)  # jitter spreads a burst of retries
        logger.info(
            "transient failure of job %s for chat %s (attempt %s/%s), retrying in %.2fs: %s",
            entry.job.key,
            chat.chat_id,
            entry.attempts,
            self.max_attempts,
            delay,
            exc,
        )
        self._count_retry()
        return self._now() + delay

    def _give_up_if_spent(self, chat: _Chat, entry: _Entry, exc: Exception) -> bool:
        if entry.attempts < self.max_attempts:
            return False
        logger.warning(
            "giving up job %s for chat %s after %s attempts: %s",
            entry.job.key,
            chat.chat_id,
            entry.attempts,
            exc,
        )
        self._gave_up_total += 1
        self._metrics.gave_up.inc()
        self._finish(chat, entry, Outcome("gave_up", error=exc))
        return True

    def _count_retry(self) -> None:
        self._retries_total += 1
        self._metrics.retries.inc()

    def _after_call(self, chat: _Chat, entry: _Entry) -> None:
        now = self._now()
        if not entry.job.unlimited:
            # Recorded when the answer arrives, i.e. no earlier than Telegram counted
            # it, so the limits err on the safe side.
            answered = self._now()
            chat.window.record(answered)
            if chat.group_window is not None:
                chat.group_window.record(answered)
            self._global_window.answered(answered)
        self._in_flight -= 1
        self._metrics.in_flight.set(self._in_flight)
        self._set_state(chat, _State.IDLE)
        if self._abandoned:
            while chat.queue:
                self._resolve_cancelled(chat, chat.queue.popleft())
        if chat.queue:
            self._schedule(chat, now)
        else:
            self._mark_idle(chat, now)
        self._wakeup.set()

    def _finish(self, chat: _Chat, entry: _Entry, outcome: Outcome) -> None:
        if entry.job.priority == "interactive":
            chat.interactive_queued -= 1
        self._pending -= 1
        if not entry.future.done():
            entry.future.set_result(outcome)
        if self._pending == 0:
            self._drained.set()

    def _finish_cancelled(self, chat: _Chat, entry: _Entry) -> None:
        if entry.job.priority == "interactive":
            chat.interactive_queued -= 1
        self._pending -= 1
        entry.future.cancel()
        if not entry.job.unlimited:
            self._global_window.answered(self._now())
        self._in_flight -= 1
        self._metrics.in_flight.set(self._in_flight)
        self._set_state(chat, _State.IDLE)
        if self._pending == 0:
            self._drained.set()

    def _resolve_cancelled(self, chat: _Chat, entry: _Entry) -> None:
        self._change_queued(entry.job.priority, -1)
        if entry.job.priority == "interactive":
            chat.interactive_queued -= 1
        self._pending -= 1
        entry.future.cancel()
        if self._pending == 0:
            self._drained.set()

    # ------------------------------------------------------------------ chat states

    def _set_state(self, chat: _Chat, state: _State) -> None:
        chat.state = state
        chat.lane = None
        chat.gen += 1

    def _schedule(self, chat: _Chat, now: float) -> None:
        at = chat.sendable_at(now)
        if at <= now:
            self._make_ready(chat)
            return
        self._set_state(chat, _State.WAITING)
        self._seq += 1
        heapq.heappush(self._waiting, (at, self._seq, chat, chat.gen))

    def _make_ready(self, chat: _Chat) -> None:
        self._set_state(chat, _State.READY)
        if chat.queue and chat.queue[0].job.unlimited:
            self._ready_free.append((chat, chat.gen))
            return
        lane: Priority = "interactive" if chat.interactive_queued > 0 else "bulk"
        chat.lane = lane
        self._ready[lane].append((chat, chat.gen))

    def _mark_idle(self, chat: _Chat, now: float) -> None:
        self._idle_since[chat.chat_id] = now
        self._idle_since.move_to_end(chat.chat_id)

    def _forget_idle(self, now: float) -> None:
        # Chats are dropped once their limiter history is irrelevant, so memory
        # follows the active chats, not every chat ever seen. Amortised O(1).
        while self._idle_since:
            chat_id, since = next(iter(self._idle_since.items()))
            if since > now - IDLE_FORGET_AFTER:
                break
            del self._idle_since[chat_id]
            chat = self._chats.get(chat_id)
            if chat is None or chat.state is not _State.IDLE or chat.queue:
                continue
            if chat.not_before > now:
                self._mark_idle(chat, now)  # still paused: look again later
            else:
                del self._chats[chat_id]

    def _expire_pauses(self, now: float) -> None:
        for chat_id in [c for c, until in self._paused.items() if until <= now]:
            del self._paused[chat_id]
        self._metrics.paused_chats.set(len(self._paused))

    # ------------------------------------------------------------------ bookkeeping

    def _change_queued(self, lane: Priority, delta: int) -> None:
        self._queued[lane] += delta
        self._metrics.queue_depth_of[lane].set(self._queued[lane])

    def _count_rate(self, now: float) -> None:
        second = int(now)
        buckets = self._rate_buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])
        while buckets and buckets[0][0] < second - RATE_WINDOW:
            buckets.popleft()

    def _recent_rate(self, now: float) -> float:
        start = now - RATE_WINDOW
        total = sum(count for second, count in self._rate_buckets if second >= start)
        return total / RATE_WINDOW
