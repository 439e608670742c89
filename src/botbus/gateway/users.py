"""Per-user state the gateway keeps: language preference and flood control."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from botbus.gateway.texts import Language, languages

log = logging.getLogger(__name__)

DEFAULT_FLOOD_RATE = 2.0  # updates per second a user may keep sending
DEFAULT_FLOOD_BURST = 20  # updates a user may send at once


class LanguageStore:
    """``/language`` choices in the gateway's users bucket, cached in memory.

    Only the gateway writes this bucket, so the cache never goes stale.
    """

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._cache: dict[int, Language | None] = {}

    async def get(self, user_id: int) -> Language | None:
        """The language the user chose, or None if they never did."""
        if user_id in self._cache:
            return self._cache[user_id]
        try:
            entry = await self._kv.get(f"lang.{user_id}")
            value = (entry.value or b"").decode()
        except KeyNotFoundError:
            value = ""
        choice: Language | None = value if value in languages() else None
        self._cache[user_id] = choice
        return choice

    async def set(self, user_id: int, language: Language) -> None:
        """Remember the user's choice."""
        await self._kv.put(f"lang.{user_id}", language.encode())
        self._cache[user_id] = language

    async def forget(self, user_id: int) -> None:
        """Drop the user's choice (``/forgetme``)."""
        with contextlib.suppress(KeyNotFoundError):
            await self._kv.delete(f"lang.{user_id}")
        self._cache.pop(user_id, None)


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    warned: bool = False


class FloodControl:
    """A token bucket per user: ``burst`` at once, then ``rate`` per second.

    :meth:`check` answers "pass", "warn" (the first excess update: tell the
    user once) or "drop" (further excess, counted by the caller).
    """

    def __init__(self, rate: float = DEFAULT_FLOOD_RATE, burst: int = DEFAULT_FLOOD_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("flood control needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, _Bucket] = {}

    def check(self, user_id: int, now: float | None = None) -> str:
        """Spend one token of ``user_id``: "pass", "warn" or "drop"."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= self.burst:
            bucket.warned = False  # calmed down: a new flood earns a new warning
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return "pass"
        if bucket.warned:
            return "drop"
        bucket.warned = True
        return "warn"

    def prune(self, now: float | None = None) -> None:
        """Forget users whose bucket is full again (keeps memory bounded)."""
        now = time.monotonic() if now is None else now
        full = [
            uid
            for uid, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for uid in full:
            del self._buckets[uid]
