"""Reminders as JetStream message schedules (nats-server 2.12+; time zones 2.14+).

Each reminder is one schedule message on its own subject
``alerts.remind.sched.<user>.<id>`` in the stream ``svc_alerts_reminders``:

- one-off: ``Nats-Schedule: @at <RFC3339 UTC>``; the server removes the
  schedule once it has fired;
- daily: ``Nats-Schedule: 0 <min> <hour> * * *`` with
  ``Nats-Schedule-Time-Zone: <IANA zone>``; the server computes every next
  firing in that zone, daylight-saving changes included.

When due, nats-server publishes the schedule's body to ``alerts.remind.fired``
(header ``Nats-Scheduler`` names the schedule). The server holds the timers,
so reminders survive restarts of every botbus process; a durable consumer
picks up what fired while the service was down. Cancelling purges the
schedule's subject.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy
from pydantic import BaseModel, ConfigDict

from services.alerts.bus import (
    REMINDER_FIRED,
    REMINDERS_ALL,
    STREAM_REMINDERS,
    reminder_schedule,
    reminder_schedules_of,
)
from services.alerts.reminders import ReminderSpec

if TYPE_CHECKING:
    from services.alerts.store import Reminder

log = logging.getLogger(__name__)

# A fired reminder waits this long (a Go duration: 7 days) for a stopped service.
FIRED_TTL = "168h"
# nats-server refuses discard-new on a schedules stream, so the stream must never
# fill: a per-user cap (MAX_REMINDERS_PER_USER) keeps it far below this size.
MAX_STREAM_BYTES = 256 * 1024 * 1024
MAX_SCHEDULE_SIZE = 8 * 1024  # bytes: a reference, not the reminder itself


class ReminderRef(BaseModel):
    """The body of a schedule (and of the message it fires): which reminder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: int
    id: str


STREAM_OPTIONS: dict[str, Any] = {
    "description": "Reminder schedules of the alerts service and the reminders they fire",
    "retention": RetentionPolicy.LIMITS,
    "max_bytes": MAX_STREAM_BYTES,
    "max_msg_size": MAX_SCHEDULE_SIZE,
    "discard": DiscardPolicy.OLD,
    "allow_msg_schedules": True,
    "allow_msg_ttl": True,
}
"""The reminders stream's settings: schedules never expire, fired reminders carry a TTL."""


# JetStream's error code for a failed Nats-Expected-Last-Subject-Sequence.
_WRONG_LAST_SEQUENCE = 10071
# An overdue one-off found at start fires this long after it (a schedule needs a future time).
_OVERDUE_DELAY = timedelta(seconds=2)
FIRED_CONSUMER = "alerts_remind"  # the durable consumer of fired reminders


@dataclass(frozen=True, slots=True)
class Restored:
    """What :meth:`ReminderScheduler.restore` did."""

    rearmed: int  # daily or future reminders armed again
    overdue: int  # past-due one-offs fired now
    left: int  # past-due one-offs left alone: fired reminders were waiting


class ReminderScheduler:
    """Arms and cancels reminder schedules in ``svc_alerts_reminders``."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def arm(
        self, user_id: int, reminder_id: str, spec: ReminderSpec, *, only_if_absent: bool = False
    ) -> None:
        """Publish the schedule that fires reminder ``reminder_id`` per ``spec``."""
        headers = spec.schedule_headers()
        if only_if_absent:
            headers["Nats-Expected-Last-Subject-Sequence"] = "0"
        headers["Nats-Schedule-Target"] = REMINDER_FIRED
        headers["Nats-Schedule-TTL"] = FIRED_TTL
        body = ReminderRef(user_id=user_id, id=reminder_id).model_dump_json().encode()
        await self.js.publish(
            reminder_schedule(user_id, reminder_id),
            body,
            stream=STREAM_REMINDERS,
            headers=headers,
        )

    async def _arm_if_absent(self, reminder: Reminder, due: datetime) -> bool:
        """Arm ``reminder``'s schedule unless its subject holds one (False then)."""
        spec = ReminderSpec(
            kind=reminder.kind,
            text=reminder.text,
            due=due,
            timezone=reminder.timezone,
            hour=reminder.hour,
            minute=reminder.minute,
        )
        try:
            # Only if the subject is empty: another instance restoring at the same
            # time, or a user's new /remind, must not be doubled or overwritten.
            await self.arm(reminder.user_id, reminder.id, spec, only_if_absent=True)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _WRONG_LAST_SEQUENCE:
                raise
            return False
        return True

    async def restore(
        self, stored: Callable[[], Awaitable[Sequence[Reminder]]], now: datetime
    ) -> Restored:
        """Re-arm every stored reminder whose schedule is missing.

        A schedule can be missing after an upgrade from a version that kept
        them elsewhere (botbus 0.1: stream ``BOTBUS_REMINDERS``), or after a
        crash between storing a reminder and arming it. Daily and future
        reminders are armed again. A one-off already past due is fired now,
        but only when no fired reminder waits to be handled: one that fired
        and waits is already on its way and must not be sent twice.
        """
        info = await self.js.stream_info(STREAM_REMINDERS, subjects_filter=REMINDERS_ALL)
        stored_subjects = info.state.subjects or {}
        armed = {s for s in stored_subjects if s != REMINDER_FIRED}
        try:
            fired = await self.js.consumer_info(STREAM_REMINDERS, FIRED_CONSUMER)
            in_flight = (fired.num_pending or 0) + (fired.num_ack_pending or 0)
        except nats.js.errors.NotFoundError:  # first start: whatever fired waits for it
            in_flight = stored_subjects.get(REMINDER_FIRED, 0)
        rearmed = overdue = left = 0
        for reminder in await stored():  # read last: a handled one-off is gone by now
            if reminder_schedule(reminder.user_id, reminder.id) in armed:
                continue
            if reminder.kind == "daily" or reminder.due > now:
                rearmed += await self._arm_if_absent(reminder, reminder.due)
            elif in_flight == 0:
                overdue += await self._arm_if_absent(reminder, now + _OVERDUE_DELAY)
            else:
                left += 1
        if rearmed or overdue or left:
            log.warning(
                "reminder schedules restored: %d re-armed, %d overdue fired now, "
                "%d overdue left while %d fired reminders wait to be handled",
                rearmed,
                overdue,
                left,
                in_flight,
            )
        return Restored(rearmed, overdue, left)

    async def cancel(self, user_id: int, reminder_id: str) -> None:
        """Remove the reminder's schedule (a no-op if it already fired)."""
        await self.js.purge_stream(
            STREAM_REMINDERS, subject=reminder_schedule(user_id, reminder_id)
        )

    async def cancel_all(self, user_id: int) -> None:
        """Remove every schedule of ``user_id``."""
        await self.js.purge_stream(STREAM_REMINDERS, subject=reminder_schedules_of(user_id))
