"""A recording stand-in for Telegram, to drive the scheduler as a pure component."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from botbus.gateway.scheduler import OutboundJob
from botbus.models import Priority


@dataclass(frozen=True)
class Call:
    """One call the scheduler made: to which chat, which job, when (loop time)."""

    chat_id: int
    key: str
    at: float


@dataclass
class FakeTelegram:
    """Plain async ``send`` callables that record when they ran and can fail on demand."""

    calls: list[Call] = field(default_factory=list)
    delivered: list[Call] = field(default_factory=list)
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    _called: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, key: str, *errors: Exception) -> None:
        """Make the next calls of job ``key`` raise ``errors``, one per call."""
        self.failures.setdefault(key, []).extend(errors)

    def job(
        self, chat_id: int, key: str, *, priority: Priority = "bulk", is_group: bool = False
    ) -> OutboundJob:
        """A job whose ``send`` records the call and raises a queued failure, if any."""

        async def send() -> str:
            call = Call(chat_id, key, asyncio.get_running_loop().time())
            self.calls.append(call)
            self._called.set()
            queued = self.failures.get(key)
            if queued:
                raise queued.pop(0)
            self.delivered.append(call)
            return f"sent {key}"

        return OutboundJob(
            chat_id=chat_id, is_group=is_group, priority=priority, send=send, key=key
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
def telegram() -> FakeTelegram:
    """A fresh recording fake per test."""
    return FakeTelegram()


def max_in_window(times: list[float], period: float) -> int:
    """The most events found in any half-open window of ``period`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - period:
            start += 1
        best = max(best, end - start + 1)
    return best
