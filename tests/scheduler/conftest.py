"""A virtual clock and a recording stand-in for Telegram, to drive the scheduler as a
pure component: its tests run on virtual time, deterministic and without sleeping."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from botbus.gateway.scheduler import Budget, OutboundJob, OutboundScheduler
from botbus.models import Priority

START = 1000.0  # seconds: where virtual time begins (any value works)


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A :class:`~botbus.gateway.scheduler.Clock` whose time moves only when the
    event loop has nothing else to run: then it jumps to the next timer.

    So a second of pacing or a 30 s ``retry_after`` takes no real time, and
    every run of a test sees the same times. It tells "nothing else to run"
    from the loop's ready queue, so it suits tests without network I/O.
    """

    def __init__(self, start: float = START) -> None:
        self._now = start
        self._timers: list[_Timer] = []
        self._ids = itertools.count()
        self._added = asyncio.Event()

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        """Run ``callback`` once virtual time reaches ``when``."""
        timer = _Timer(when, next(self._ids), callback)
        heapq.heappush(self._timers, timer)
        self._added.set()
        return timer

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        done = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self.call_at(self._now + seconds, wake)
        await done

    async def run(self) -> None:
        """Drive the clock: whenever the loop is idle, fire the next timer."""
        loop = asyncio.get_running_loop()
        ready: Any = loop._ready  # type: ignore[attr-defined]  # CPython's ready queue
        while True:
            await asyncio.sleep(0)
            if ready:
                continue  # something else can run: time stands still meanwhile
            while self._timers and self._timers[0].cancelled:
                heapq.heappop(self._timers)
            if not self._timers:
                self._added.clear()
                await self._added.wait()
                continue
            timer = heapq.heappop(self._timers)
            self._now = max(self._now, timer.when)
            timer.callback()


@pytest.fixture
async def clock() -> AsyncIterator[VirtualClock]:
    """A running virtual clock for one test."""
    virtual = VirtualClock()
    driver = asyncio.create_task(virtual.run(), name="virtual-clock")
    try:
        yield virtual
    finally:
        driver.cancel()


def scheduler_on(
    clock: VirtualClock, budget: Budget | None = None, **options: Any
) -> OutboundScheduler:
    """A scheduler on virtual time, with seeded backoff jitter."""
    options.setdefault("rng", random.Random(7))
    return OutboundScheduler(budget or Budget(), clock=clock, **options)


@dataclass(frozen=True)
class Call:
    """One call the scheduler made: to which chat, which job, when (loop time)."""

    chat_id: int
    key: str
    at: float


@dataclass
class FakeTelegram:
    """Plain async ``send`` callables that record when they ran and can fail on demand."""

    clock: VirtualClock | None = None  # whose time the calls are stamped with (else the loop's)
    calls: list[Call] = field(default_factory=list)
    delivered: list[Call] = field(default_factory=list)
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    _called: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, key: str, *errors: Exception) -> None:
        """Make the next calls of job ``key`` raise ``errors``, one per call."""
        self.failures.setdefault(key, []).extend(errors)

    def job(
        self,
        chat_id: int,
        key: str,
        *,
        priority: Priority = "bulk",
        is_group: bool = False,
        seq: int = 0,
    ) -> OutboundJob:
        """A job whose ``send`` records the call and raises a queued failure, if any."""

        async def send() -> str:
            now = self.clock.now() if self.clock else asyncio.get_running_loop().time()
            call = Call(chat_id, key, now)
            self.calls.append(call)
            self._called.set()
            queued = self.failures.get(key)
            if queued:
                raise queued.pop(0)
            self.delivered.append(call)
            return f"sent {key}"

        return OutboundJob(
            chat_id=chat_id, is_group=is_group, priority=priority, send=send, key=key, seq=seq
        )

    async def wait_for_calls(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` calls were made."""

        async def enough() -> None:
            while len(self.calls) < count:
                self._called.clear()
                await self._called.wait()

        await asyncio.wait_for(enough(), timeout)

    def keys(self, chat_id: int | None = None) -> list[str]:
        """Delivered job keys in delivery order, optionally for one chat."""
        return [c.key for c in self.delivered if chat_id is None or c.chat_id == chat_id]

    def calls_of(self, key: str) -> list[Call]:
        """Every call (attempt) of job ``key``."""
        return [c for c in self.calls if c.key == key]


@pytest.fixture
def telegram(clock: VirtualClock) -> FakeTelegram:
    """A fresh recording fake per test, stamping calls with the virtual clock."""
    return FakeTelegram(clock)


def max_in_window(times: list[float], period: float) -> int:
    """The most events found in any half-open window of ``period`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - period:
            start += 1
        best = max(best, end - start + 1)
    return best
