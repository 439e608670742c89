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
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy
from pydantic import BaseModel, ConfigDict

from services.alerts.bus import (
    REMINDER_FIRED,
    STREAM_REMINDERS,
    reminder_schedule,
    reminder_schedules_of,
)
from services.alerts.reminders import ReminderSpec

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


class ReminderScheduler:
    """Arms and cancels reminder schedules in ``svc_alerts_reminders``."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def arm(self, user_id: int, reminder_id: str, spec: ReminderSpec) -> None:
        """Publish the schedule that fires reminder ``reminder_id`` per ``spec``."""
        headers = spec.schedule_headers()
        headers["Nats-Schedule-Target"] = REMINDER_FIRED
        headers["Nats-Schedule-TTL"] = FIRED_TTL
        body = ReminderRef(user_id=user_id, id=reminder_id).model_dump_json().encode()
        await self.js.publish(
            reminder_schedule(user_id, reminder_id),
            body,
            stream=STREAM_REMINDERS,
            headers=headers,
        )

    async def cancel(self, user_id: int, reminder_id: str) -> None:
        """Remove the reminder's schedule (a no-op if it already fired)."""
        await self.js.purge_stream(
            STREAM_REMINDERS, subject=reminder_schedule(user_id, reminder_id)
        )

    async def cancel_all(self, user_id: int) -> None:
        """Remove every schedule of ``user_id``."""
        await self.js.purge_stream(STREAM_REMINDERS, subject=reminder_schedules_of(user_id))
