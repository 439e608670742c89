"""Rolling mood aggregates: small JSON documents of counts, never of text.

A :class:`MoodDoc` holds, per UTC hour and per UTC day, how many messages
were scored, the sum of their compound values and how many were positive,
neutral and negative. No message text and no word is stored. Hours are kept
for :data:`KEEP_HOURS` (enough for the week chart and the alert window),
days for :data:`KEEP_DAYS` (the month chart), so a document stays a few KB.
It also remembers the correlation ids of the last :data:`RECENT_IDS`
messages it counted, so a redelivered message is not counted twice.

A chat's (or a user's) mood is the sum of several documents, one per
service instance (see :mod:`.store`): :meth:`MoodDoc.merge` adds them up.

Wire form (``to_json``; ``m`` may be absent in documents written before it existed)::

    {"v": 1, "h": {"2025-01-31T13": [n, sum, pos, neu, neg]}, "d": {"2025-01-31": [...]},
     "m": ["1:4711", ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from services.sentiment.scoring import Label

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")

DOC_VERSION = 1
KEEP_HOURS = 8 * 24  # hours of hourly buckets kept: a week chart plus a margin
KEEP_DAYS = 35  # days of daily buckets kept: a month chart plus a margin
RECENT_IDS = 128  # message ids a document remembers to recognise a redelivery
_HOUR_FMT = "%Y-%m-%dT%H"
_DAY_FMT = "%Y-%m-%d"

# How each chart period is drawn: points, width of one point, bucket kind.
_PERIOD_SHAPE: dict[Period, tuple[int, timedelta, Literal["h", "d"]]] = {
    "day": (24, timedelta(hours=1), "h"),
    "week": (28, timedelta(hours=6), "h"),
    "month": (30, timedelta(days=1), "d"),
}


class MoodDocError(ValueError):
    """A stored mood document is not in the expected form."""


@dataclass(slots=True)
class Bucket:
    """Counts for one time bucket."""

    n: int = 0
    total: float = 0.0  # sum of compound values
    pos: int = 0
    neu: int = 0
    neg: int = 0

    def add(self, compound: float, label: Label) -> None:
        """Count one scored message."""
        self.n += 1
        self.total += compound
        if label == "positive":
            self.pos += 1
        elif label == "negative":
            self.neg += 1
        else:
            self.neu += 1

    def merge(self, other: Bucket) -> None:
        """Add ``other``'s counts to this bucket."""
        self.n += other.n
        self.total += other.total
        self.pos += other.pos
        self.neu += other.neu
        self.neg += other.neg

    @property
    def mean(self) -> float | None:
        """Mean compound value, None when empty."""
        return self.total / self.n if self.n else None

    def to_list(self) -> list[float | int]:
        """Compact wire form."""
        return [self.n, round(self.total, 4), self.pos, self.neu, self.neg]

    @classmethod
    def from_list(cls, raw: Any) -> Bucket:
        """Parse the compact wire form."""
        if not (isinstance(raw, list) and len(raw) == 5):
            raise MoodDocError(f"bucket must be [n, sum, pos, neu, neg], got {raw!r}")
        n, total, pos, neu, neg = raw
        try:
            return cls(int(n), float(total), int(pos), int(neu), int(neg))
        except (TypeError, ValueError) as exc:
            raise MoodDocError(f"bucket must hold numbers, got {raw!r}") from exc


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a mood chart: the bucket starting at ``start``."""

    start: datetime
    bucket: Bucket


@dataclass(slots=True)
class MoodDoc:
    """Hourly and daily mood buckets of one chat or one user."""

    hours: dict[str, Bucket] = field(default_factory=dict)
    days: dict[str, Bucket] = field(default_factory=dict)
    recent: list[str] = field(default_factory=list)  # ids of the last messages counted

    def add(
        self, compound: float, label: Label, at: datetime, message_id: str | None = None
    ) -> None:
        """Count one scored message written at ``at``, and drop expired buckets.

        ``message_id`` (the inbound correlation id) is remembered, so that
        :meth:`has_counted` recognises the message if it is delivered again.
        """
        at = at.astimezone(UTC)
        hour = at.strftime(_HOUR_FMT)
        fresh = hour not in self.hours
        if fresh:
            self.hours[hour] = Bucket()
        self.hours[hour].add(compound, label)
        self.days.setdefault(at.strftime(_DAY_FMT), Bucket()).add(compound, label)
        if fresh:
            # Buckets expire by the hour: only a new hour can have pushed one out.
            self.prune(at)
        if message_id is not None:
            self.recent.append(message_id)
            if len(self.recent) > RECENT_IDS:
                del self.recent[: len(self.recent) - RECENT_IDS]

    def has_counted(self, message_id: str) -> bool:
        """True if this document counted ``message_id`` among its last :data:`RECENT_IDS`."""
        return message_id in self.recent

    def merge(self, other: MoodDoc) -> None:
        """Add ``other``'s counts (and remembered ids) to this document."""
        for mine, theirs in ((self.hours, other.hours), (self.days, other.days)):
            for key, bucket in theirs.items():
                mine.setdefault(key, Bucket()).merge(bucket)
        self.recent.extend(other.recent)

    def prune(self, now: datetime) -> None:
        """Forget buckets older than the retention."""
        now = now.astimezone(UTC)
        oldest_hour = (now - timedelta(hours=KEEP_HOURS)).strftime(_HOUR_FMT)
        oldest_day = (now - timedelta(days=KEEP_DAYS)).strftime(_DAY_FMT)
        # The key formats sort like the times they name.
        self.hours = {k: b for k, b in self.hours.items() if k >= oldest_hour}
        self.days = {k: b for k, b in self.days.items() if k >= oldest_day}

    def window(self, now: datetime, hours: int) -> Bucket:
        """Everything counted in the last ``hours`` hours (the current one included)."""
        now = now.astimezone(UTC)
        first = (now - timedelta(hours=hours - 1)).strftime(_HOUR_FMT)
        last = now.strftime(_HOUR_FMT)
        total = Bucket()
        for key, bucket in self.hours.items():
            if first <= key <= last:
                total.merge(bucket)
        return total

    def series(self, period: Period, now: datetime) -> list[Point]:
        """The chart points of ``period`` ending with the bucket holding ``now``."""
        count, width, kind = _PERIOD_SHAPE[period]
        now = now.astimezone(UTC)
        if kind == "d":
            end = now.replace(hour=0, minute=0, second=0, microsecond=0)
        else:
            end = now.replace(minute=0, second=0, microsecond=0)
            if width > timedelta(hours=1):
                step_hours = int(width.total_seconds() // 3600)
                end = end.replace(hour=end.hour - end.hour % step_hours)
        starts = [end - width * i for i in range(count - 1, -1, -1)]
        source = self.days if kind == "d" else self.hours
        fmt = _DAY_FMT if kind == "d" else _HOUR_FMT
        points = []
        for start in starts:
            bucket = Bucket()
            step = timedelta(days=1) if kind == "d" else timedelta(hours=1)
            moment = start
            while moment < start + width:
                found = source.get(moment.strftime(fmt))
                if found is not None:
                    bucket.merge(found)
                moment += step
            points.append(Point(start, bucket))
        return points

    def is_empty(self) -> bool:
        """True when nothing is counted."""
        return not self.hours and not self.days

    def to_json(self) -> bytes:
        """The document's wire form."""
        return json.dumps(
            {
                "v": DOC_VERSION,
                "h": {k: b.to_list() for k, b in sorted(self.hours.items())},
                "d": {k: b.to_list() for k, b in sorted(self.days.items())},
                "m": self.recent,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str | None) -> MoodDoc:
        """Parse a stored document; empty input is an empty document."""
        if not data:
            return cls()
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as exc:
            raise MoodDocError(f"mood document is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("v") != DOC_VERSION:
            raise MoodDocError(f"mood document must be an object with v={DOC_VERSION}")
        hours, days, recent = raw.get("h", {}), raw.get("d", {}), raw.get("m", [])
        if not isinstance(hours, dict) or not isinstance(days, dict):
            raise MoodDocError("mood document fields 'h' and 'd' must be objects")
        if not isinstance(recent, list):
            raise MoodDocError("mood document field 'm' must be a list of message ids")
        return cls(
            hours={str(k): Bucket.from_list(v) for k, v in hours.items()},
            days={str(k): Bucket.from_list(v) for k, v in days.items()},
            recent=[str(i) for i in recent],
        )


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """When a group's mood is low enough, for long enough, to tell its admins.

    The rolling mood is the mean compound of the last ``window_hours`` hours;
    it must rest on at least ``min_messages`` messages (one angry message is
    not a mood) and fall below ``threshold``. After an alert, the same chat
    is not alerted again for ``cooldown``.
    """

    threshold: float = -0.3
    window_hours: int = 3
    min_messages: int = 5
    cooldown: timedelta = timedelta(hours=6)

    def check(self, doc: MoodDoc, now: datetime, last_alert: datetime | None) -> Bucket | None:
        """The low-mood window if an alert is due now, else None."""
        return self.due(doc.window(now, self.window_hours), now, last_alert)

    def due(self, window: Bucket, now: datetime, last_alert: datetime | None) -> Bucket | None:
        """``window`` (the last ``window_hours`` hours) if it calls for an alert now, else None."""
        if last_alert is not None and now - last_alert < self.cooldown:
            return None
        mean = window.mean
        if window.n < self.min_messages or mean is None or mean >= self.threshold:
            return None
        return window
