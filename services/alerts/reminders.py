"""Parsing ``/remind`` and ``/timezone`` input, and turning reminders into schedules.

Accepted forms (English and Spanish keywords)::

    in 10m TEXT            en 10m TEXTO          a delay: 1d, 2h30m, 45m, 90s
    at 18:30 TEXT          a las 18:30 TEXTO     today, or tomorrow if 18:30 has passed
    every day 08:00 TEXT   cada día 08:00 TEXTO  every day at that local time

Times are wall-clock times in the user's time zone. A one-off reminder is due
at one instant (stored in UTC); a daily one is a JetStream cron schedule
evaluated by nats-server in the user's zone, so daylight-saving changes are
the server's job, not ours.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.alerts.texts import Localized, UserInputError

DEFAULT_TIMEZONE = "UTC"
MAX_REMINDER_TEXT = 1000  # characters
MAX_DELAY = timedelta(days=366)

USAGE = Localized("reminder_usage")

# ASCII digits, at most 8 a unit: timedelta() overflows on more, "²" is no digit for int().
_DURATION_RE = re.compile(
    r"^(?:([0-9]{1,8})d)?(?:([0-9]{1,8})h)?(?:([0-9]{1,8})m)?(?:([0-9]{1,8})s)?$"
)
_CLOCK_RE = re.compile(r"^([01]?[0-9]|2[0-3])[:.h]([0-5][0-9])$")
_IN_WORDS = ("in", "en")
_AT_WORDS = (("at",), ("a", "las"), ("a", "la"), ("a",))
_EVERY_DAY_WORDS = (("every", "day"), ("daily",), ("cada", "día"), ("cada", "dia"))


@dataclass(frozen=True, slots=True)
class ReminderSpec:
    """A parsed ``/remind``: what to say and when.

    ``due`` is the first firing instant in UTC. For ``daily`` reminders,
    ``hour``/``minute`` are the local wall-clock time repeated every day.
    """

    kind: Literal["once", "daily"]
    text: str
    due: datetime
    timezone: str
    hour: int = 0
    minute: int = 0

    def schedule_headers(self) -> dict[str, str]:
        """The JetStream message-schedule headers that fire this reminder.

        One-off: ``@at <RFC3339 UTC>``. Daily: a 6-field cron (seconds first)
        with the user's IANA zone, which nats-server (2.14+) evaluates itself.
        """
        if self.kind == "once":
            return {"Nats-Schedule": f"@at {rfc3339(self.due)}"}
        return {
            "Nats-Schedule": f"0 {self.minute} {self.hour} * * *",
            "Nats-Schedule-Time-Zone": self.timezone,
        }


def rfc3339(moment: datetime) -> str:
    """``moment`` as RFC 3339 in UTC with a ``Z`` suffix, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.cache
def _zones_by_lower_name() -> dict[str, str]:
    # available_timezones() walks the tz database on every call: do it once.
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def resolve_timezone(name: str) -> str:
    """The canonical IANA name for ``name`` (case-insensitive), or a clear error.

    Raises :class:`UserInputError` for anything that is not a known zone.
    """
    wanted = name.strip()
    canonical = _zones_by_lower_name().get(wanted.lower())
    if canonical is None:
        raise UserInputError(Localized("unknown_timezone", {"zone": wanted}))
    return canonical


def parse_duration(token: str) -> timedelta | None:
    """``2h30m`` -> 2.5 hours; None when ``token`` is not a duration."""
    match = _DURATION_RE.match(token.lower())
    if match is None or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_clock(token: str) -> tuple[int, int] | None:
    """``18:30`` -> (18, 30); None when ``token`` is not a 24-hour time."""
    match = _CLOCK_RE.match(token)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _strip_words(words: list[str], options: tuple[tuple[str, ...], ...]) -> list[str] | None:
    lowered = [w.lower() for w in words]
    for option in options:
        if tuple(lowered[: len(option)]) == option:
            return words[len(option) :]
    return None


def _text_of(words: list[str]) -> str:
    text = " ".join(words).strip()
    if not text:
        raise UserInputError(Localized("reminder_text_missing", {"usage": USAGE}))
    if len(text) > MAX_REMINDER_TEXT:
        raise UserInputError(Localized("reminder_text_too_long", {"max": MAX_REMINDER_TEXT}))
    return text


def next_local_time(now: datetime, zone: str, hour: int, minute: int) -> datetime:
    """The next instant (UTC) after ``now`` when the clock in ``zone`` shows hour:minute."""
    tz = zoneinfo.ZoneInfo(zone)
    local_now = now.astimezone(tz)
    candidate = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= local_now:
        # Add a calendar day in local terms, so a DST change in between keeps 18:30 at 18:30.
        candidate = (candidate.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
    return candidate.astimezone(UTC)


def parse_reminder(args: str, *, timezone: str, now: datetime) -> ReminderSpec:
    """Parse the arguments of ``/remind``; raise :class:`UserInputError` with usage."""
    words = args.split()
    if not words:
        raise UserInputError(USAGE)
    head = words[0].lower()

    if head in _IN_WORDS and len(words) >= 2:
        delay = parse_duration(words[1])
        if delay is None:
            raise UserInputError(Localized("not_a_delay", {"token": words[1]}))
        if not timedelta(0) < delay <= MAX_DELAY:
            raise UserInputError(Localized("delay_out_of_range"))
        return ReminderSpec("once", _text_of(words[2:]), now + delay, timezone)

    rest = _strip_words(words, _EVERY_DAY_WORDS)
    kind: Literal["once", "daily"] = "daily"
    if rest is None:
        rest = _strip_words(words, _AT_WORDS)
        kind = "once"
    if rest is not None and rest:
        clock = parse_clock(rest[0])
        if clock is None:
            raise UserInputError(Localized("not_a_time", {"token": rest[0]}))
        hour, minute = clock
        text = _text_of(rest[1:])
        due = next_local_time(now, timezone, hour, minute)
        return ReminderSpec(kind, text, due, timezone, hour, minute)

    raise UserInputError(USAGE)
