"""Telegram's flood limits, enforced per bot like the real Bot API does.

Telegram documents them loosely: about 30 messages per second overall, one
message per second in a chat (short bursts tolerated) and 20 messages per
minute in a group. A refusal is a 429 whose ``retry_after`` is the whole
number of seconds after which the same call is guaranteed to pass.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, fields


@dataclass
class Limits:
    """Flood limits of the sandbox; the defaults are Telegram's.

    Tests tighten them (e.g. ``chat_per_second=1, chat_burst=1``) to see a
    429 after two messages, or turn them off with ``enabled=False``.
    """

    enabled: bool = True
    global_per_second: int = 30  # messages per second, all chats of one bot
    chat_per_second: float = 1.0  # sustained messages per second in one chat
    chat_burst: int = 3  # messages one chat may get at once before the 1/s applies
    group_per_minute: int = 20  # messages per minute in one group

    @classmethod
    def field_names(cls) -> set[str]:
        """Names accepted by :meth:`update` (and by the user-side API)."""
        return {f.name for f in fields(cls)}

    def update(self, **values: object) -> None:
        """Change some limits in place; unknown names or bad values raise ValueError."""
        unknown = set(values) - self.field_names()
        if unknown:
            raise ValueError(
                f"unknown limit(s) {sorted(unknown)}; known: {sorted(self.field_names())}"
            )
        for name, value in values.items():
            if name == "enabled":
                if not isinstance(value, bool):
                    raise ValueError("limit 'enabled' must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limit {name!r} must be a positive number, got {value!r}")
            setattr(self, name, value)


class RateLimiter:
    """Decides, for one bot, whether a message to a chat may go out now."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._global: deque[float] = deque()
        self._groups: dict[int, deque[float]] = {}
        # chat id -> (tokens, last refill time) of a token bucket
        self._chats: dict[int, tuple[float, float]] = {}

    def check(self, chat_id: int, *, now: float | None = None) -> int | None:
        """Record a message to ``chat_id`` and return None, or return retry_after seconds.

        A refused message consumes nothing, so waiting ``retry_after`` seconds
        is enough for the same call to pass.
        """
        limits = self._limits
        if not limits.enabled:
            return None
        now = time.monotonic() if now is None else now
        waits: list[float] = []

        window = self._global
        while window and window[0] <= now - 1.0:
            window.popleft()
        cap = max(1, int(limits.global_per_second))
        if len(window) >= cap:
            waits.append(window[len(window) - cap] + 1.0 - now)

        burst = max(1.0, float(limits.chat_burst))
        tokens, last = self._chats.get(chat_id, (burst, now))
        tokens = min(burst, tokens + (now - last) * limits.chat_per_second)
        if tokens < 1.0:
            waits.append((1.0 - tokens) / limits.chat_per_second)

        group: deque[float] | None = None
        if chat_id < 0:
            group = self._groups.setdefault(chat_id, deque())
            while group and group[0] <= now - 60.0:
                group.popleft()
            group_cap = max(1, int(limits.group_per_minute))
            if len(group) >= group_cap:
                waits.append(group[len(group) - group_cap] + 60.0 - now)

        if waits:
            self._chats[chat_id] = (tokens, now)
            return max(1, math.ceil(max(waits) - 1e-9))
        window.append(now)
        if group is not None:
            group.append(now)
        self._chats[chat_id] = (tokens - 1.0, now)
        return None
