"""What the first hour with the bundled services showed users, fixed (issue 15)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from botbus import subjects
from botbus.status import collect
from services.alerts.service import service as alerts_service
from services.echo.service import service as echo_service

from .conftest import Chat, StartStack

# the whole stack (sandbox, gateway, services) per test: in `make test`, not the fast loop
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ANA: dict[str, Any] = {"id": 7301, "first_name": "Ana"}
NEW_YORK = ZoneInfo("America/New_York")


def reminder_id(reply: str) -> str:
    """The id in "Reminder r1a2 set ..."."""
    found = re.search(r"Reminder (r\w+)", reply)
    assert found, reply
    return found.group(1)


async def test_reminders_are_listed_soonest_first_in_the_users_time_zone(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(alerts_service)
    ana = Chat(stack, ANA["id"])
    later = await ana.reply_text("/remind in 3h later", ANA)
    sooner = await ana.reply_text("/remind in 1h sooner", ANA)
    daily = await ana.reply_text("/remind every day 08:00 daily", ANA)
    ids = [reminder_id(text) for text in (later, sooner, daily)]
    assert "set to America/New_York" in await ana.reply_text("/timezone America/New_York", ANA)
    listing = (await ana.reply_text("/reminders", ANA)).splitlines()
    assert listing[0] == "Your reminders:"
    # Shown in the zone the user has now, not the one the reminder was set in (UTC).
    sooner_line = next(line for line in listing if line.startswith(ids[1]))
    shown = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d) \(America/New_York\) — sooner", sooner_line)
    assert shown, sooner_line
    local = datetime.strptime(shown.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=NEW_YORK)
    assert abs(local - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=2)
    daily_line = next(line for line in listing if line.startswith(ids[2]))
    assert "every day 08:00 (UTC) = " in daily_line and "(America/New_York) — daily" in daily_line
    # Soonest first; the daily one goes wherever its next 08:00 UTC falls.
    now = datetime.now(UTC)
    eight = now.replace(hour=8, minute=0, second=0, microsecond=0)
    next_eight = eight if eight > now else eight + timedelta(days=1)
    due = {ids[0]: now + timedelta(hours=3), ids[1]: now + timedelta(hours=1), ids[2]: next_eight}
    assert [line.split(":")[0] for line in listing[1:]] == sorted(due, key=lambda i: due[i])


async def test_cancelling_an_unknown_reminder_says_there_is_none(start_stack: StartStack) -> None:
    stack = await start_stack(alerts_service)
    ana = Chat(stack, ANA["id"])
    assert await ana.reply_text("/cancel nope", ANA) == (
        "You have no reminder 'nope'; /reminders lists yours."
    )
    assert (await ana.reply_text("/cancel", ANA)).startswith("Usage: /cancel ID")


async def test_status_does_not_count_user_mistakes_as_errors(start_stack: StartStack) -> None:
    stack = await start_stack(echo_service)
    ana = Chat(stack, ANA["id"])
    assert await ana.reply_text("/echo", ANA) == "Usage: /echo TEXT"  # a user's mistake
    assert await ana.reply_text("/echo fine", ANA) == "fine"
    # The counters are updated as the service acks, a moment after it answered.
    async with asyncio.timeout(10):
        while True:
            [echo] = [s for s in (await collect(stack.settings)).services if s.name == "echo"]
            if echo.requests == 2:
                break
            await stack.acks.wait(subjects.consumer_commands("echo"), 2)
    assert echo.errors == 0
