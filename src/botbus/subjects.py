"""Every NATS subject, stream, consumer and bucket name botbus uses.

This is the only module that spells a subject. Everything else calls these
functions, so publisher and subscriber cannot drift apart, and nats.conf's
permissions can be read against this file.

Layout::

    botbus.in.cmd.<service>.<command>   a command routed to its owner      (stream BOTBUS_IN)
    botbus.in.msg                       a plain message, fanned out         (stream BOTBUS_IN)
    botbus.in.cb.<service>              an inline-button callback           (stream BOTBUS_IN)
    botbus.out.<service>                outbound actions of one service     (stream BOTBUS_OUT)
    botbus.event.forget                 a user asked to be forgotten        (stream BOTBUS_EVENTS)
    botbus.event.delivery.<service>     Telegram refused an action for good (stream BOTBUS_EVENTS)
    botbus.dlq.<service>                poison messages of one service      (stream BOTBUS_DLQ)
    alerts.<channel>                    alerts published to a channel       (stream BOTBUS_ALERTS)
                                        (MQTT topic alerts/<channel> maps here)
"""

from __future__ import annotations

import re

PREFIX = "botbus"

# Streams
STREAM_INBOUND = "BOTBUS_IN"
STREAM_OUTBOUND = "BOTBUS_OUT"
STREAM_EVENTS = "BOTBUS_EVENTS"
STREAM_DLQ = "BOTBUS_DLQ"
STREAM_ALERTS = "BOTBUS_ALERTS"

# Key-value buckets owned by the gateway (services may not read them).
KV_GATEWAY_REGISTRY = "botbus_registry"
KV_GATEWAY_USERS = "botbus_users"

# Names: services, commands and alert channels are lowercase tokens so they
# are always a single, safe subject token.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def is_valid_name(name: str) -> bool:
    """True if ``name`` may be used as a service, command or channel token."""
    return bool(_NAME_RE.match(name))


def _token(name: str, what: str) -> str:
    if not is_valid_name(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1-32 lowercase letters, digits or '_', "
            "starting with a letter"
        )
    return name


# Inbound
INBOUND_ALL = f"{PREFIX}.in.>"
INBOUND_MESSAGES = f"{PREFIX}.in.msg"


def inbound_command(service: str, command: str) -> str:
    """Subject of ``/command`` routed to ``service``."""
    return f"{PREFIX}.in.cmd.{_token(service, 'service')}.{_token(command, 'command')}"


def inbound_commands_of(service: str) -> str:
    """Wildcard matching every command routed to ``service``."""
    return f"{PREFIX}.in.cmd.{_token(service, 'service')}.*"


def inbound_callback(service: str) -> str:
    """Subject of inline-button callbacks whose data names ``service``."""
    return f"{PREFIX}.in.cb.{_token(service, 'service')}"


# Outbound
OUTBOUND_ALL = f"{PREFIX}.out.>"


def outbound(service: str) -> str:
    """Subject a service publishes its outbound actions on."""
    return f"{PREFIX}.out.{_token(service, 'service')}"


# Events
EVENTS_ALL = f"{PREFIX}.event.>"
EVENT_FORGET = f"{PREFIX}.event.forget"


def delivery_event(service: str) -> str:
    """Subject of delivery events (permanent refusals) for ``service``."""
    return f"{PREFIX}.event.delivery.{_token(service, 'service')}"


# Dead letters
DLQ_ALL = f"{PREFIX}.dlq.>"


def dead_letter(service: str) -> str:
    """Subject where ``service`` records messages it gave up on."""
    return f"{PREFIX}.dlq.{_token(service, 'service')}"


# Alerts
ALERTS_ALL = "alerts.>"


def alert_channel(channel: str) -> str:
    """Subject of alerts published to ``channel`` (MQTT topic ``alerts/<channel>``)."""
    return f"alerts.{_token(channel, 'channel')}"


# Consumers and buckets per service
def consumer_commands(service: str) -> str:
    """Durable consumer name for a service's commands and callbacks."""
    return f"{_token(service, 'service')}_cmd"


def consumer_messages(service: str) -> str:
    """Durable consumer name for a service's copy of the plain-message fan-out."""
    return f"{_token(service, 'service')}_msg"


def consumer_events(service: str) -> str:
    """Durable consumer name for the events a service must honour."""
    return f"{_token(service, 'service')}_evt"


def service_bucket(service: str, suffix: str = "") -> str:
    """Name of a KV bucket owned by ``service`` (``svc_<service>[_<suffix>]``)."""
    name = f"svc_{_token(service, 'service')}"
    return f"{name}_{_token(suffix, 'bucket')}" if suffix else name


# NATS micro service discovery
SRV_PING = "$SRV.PING"
SRV_INFO = "$SRV.INFO"
SRV_STATS = "$SRV.STATS"
