"""The alerts service's names on the bus: its subjects and its two streams.

The service owns ``alerts.>`` and the streams ``svc_alerts...``:

- ``alerts.<channel>``: alerts published to a channel (publishers, HTTP,
  MQTT topic ``alerts/<channel>``), in stream ``svc_alerts``;
- ``alerts.remind.sched.<user>.<id>``: one reminder's message schedule, and
  ``alerts.remind.fired``: the reminders nats-server fired, both in stream
  ``svc_alerts_reminders``.

``alerts.*`` (one token after ``alerts``) and ``alerts.remind.>`` (at least
two) never overlap, so a channel may even be called ``remind``.
"""

from __future__ import annotations

from botbus.subjects import is_valid_name, service_bucket

SERVICE = "alerts"
ALERTS_ANY = f"{SERVICE}.*"
REMINDERS_ALL = f"{SERVICE}.remind.>"
REMINDER_FIRED = f"{SERVICE}.remind.fired"
STREAM_ALERTS = service_bucket(SERVICE)  # svc_alerts
STREAM_REMINDERS = service_bucket(SERVICE, "reminders")  # svc_alerts_reminders


def _token(value: str, what: str) -> str:
    if not is_valid_name(value):
        raise ValueError(f"invalid {what} {value!r}: use lowercase letters, digits or '_'")
    return value


def alert_channel(channel: str) -> str:
    """Subject of alerts published to ``channel`` (MQTT topic ``alerts/<channel>``)."""
    return f"{SERVICE}.{_token(channel, 'channel')}"


def reminder_schedule(user_id: int, reminder_id: str) -> str:
    """Subject holding the message schedule of one user's reminder."""
    return f"{SERVICE}.remind.sched.{int(user_id)}.{_token(reminder_id, 'reminder')}"


def reminder_schedules_of(user_id: int) -> str:
    """Wildcard matching every reminder schedule of ``user_id``."""
    return f"{SERVICE}.remind.sched.{int(user_id)}.*"
