"""Every NATS subject, stream, consumer and bucket name botbus uses.

This is the only module that spells a subject. Everything else calls these
functions, so publisher and subscriber cannot drift apart, and nats.conf's
permissions can be read against this file.

Layout::

    botbus.in.cmd.<service>.<command>   a command routed to its owner      (stream BOTBUS_IN)
    botbus.in.msg                       a plain message, fanned out         (stream BOTBUS_IN)
    botbus.in.cb.<service>              an inline-button callback           (stream BOTBUS_IN)
    botbus.out.<service>.<priority>     outbound actions of one service,    (stream BOTBUS_OUT)
                                        interactive or bulk
    botbus.event.forget                 a user asked to be forgotten        (stream BOTBUS_EVENTS)
    botbus.event.delivery.<service>     Telegram refused an action for good (stream BOTBUS_EVENTS)
    botbus.dlq.<service>                poison messages of one service      (stream BOTBUS_DLQ)
    <service>.>                         a service's own subjects, in its own streams
                                        ``svc_<service>[_<suffix>]`` (``Service.stream``)
    botbus.ctl.provision.<service>      a service asks the core's provisioner (in the
                                        gateway) to create its stream or bucket
"""

from __future__ import annotations

import re

PREFIX = "botbus"

# Streams
STREAM_INBOUND = "BOTBUS_IN"
STREAM_OUTBOUND = "BOTBUS_OUT"
STREAM_EVENTS = "BOTBUS_EVENTS"
STREAM_DLQ = "BOTBUS_DLQ"

# Key-value buckets owned by the gateway (services may not read them).
KV_GATEWAY_REGISTRY = "botbus_registry"
KV_GATEWAY_USERS = "botbus_users"
KV_GATEWAY_SENT = "botbus_sent"  # idempotency keys of actions Telegram accepted
KV_GATEWAY_UPDATES = "botbus_updates"  # update ids ingested within Telegram's redelivery window
KV_GATEWAY_LEASE = "botbus_lease"  # which gateway of a bot is active (gateway/lease.py)
KV_GATEWAY_OWNERS = "botbus_owners"  # which service sent each message (gateway/owners.py)
# Which provisioner is working for a service right now, and how many provisioning
# requests each service may still send (botbus/provision.py).
KV_PROVISIONING = "botbus_provisioning"
# The key of botbus_registry where the gateway records claims it refused (never a
# service name: those start with a letter).
KV_REGISTRY_CONFLICTS = "_conflicts"

# Commands the gateway answers itself: no service may claim them.
BUILTIN_COMMANDS = ("start", "help", "language", "forgetme")

# The gateway's durable consumer of every service's outbound actions.
# The gateway consumes each outbound lane with its own consumer, so a reply never
# waits in the stream behind a broadcast.
CONSUMER_GATEWAY_OUTBOUND = {
    "interactive": "gateway_out_interactive",
    "bulk": "gateway_out_bulk",
}

# Names: services, commands and alert channels are lowercase tokens so they
# are always a single, safe subject token. \Z, not $: $ matches before a final "\n".
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")


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


OUTBOUND_PRIORITIES = ("interactive", "bulk")


def _priority(priority: str) -> str:
    if priority not in OUTBOUND_PRIORITIES:
        raise ValueError(f"priority must be one of {OUTBOUND_PRIORITIES}, got {priority!r}")
    return priority


def outbound(service: str, priority: str) -> str:
    """Subject a service publishes its outbound actions of ``priority`` on."""
    return f"{PREFIX}.out.{_token(service, 'service')}.{_priority(priority)}"


def outbound_lane(priority: str) -> str:
    """Filter subject of every service's outbound actions of ``priority``."""
    return f"{PREFIX}.out.*.{_priority(priority)}"


def outbound_of(service: str) -> str:
    """Filter subject of all of ``service``'s outbound actions."""
    return f"{PREFIX}.out.{_token(service, 'service')}.*"


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


# Consumers and buckets per service
def consumer_commands(service: str) -> str:
    """Durable consumer name for a service's commands and callbacks."""
    return f"{_token(service, 'service')}_cmd"


def consumer_messages(service: str) -> str:
    """Durable consumer name for a service's copy of the plain-message fan-out."""
    return f"{_token(service, 'service')}_msg"


def consumer_events(service: str) -> str:
    """Durable consumer name for the delivery events of ``service``."""
    return f"{_token(service, 'service')}_evt"


# One filter subject per consumer: nats.conf can then pin each service's
# consumer to its own subjects ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>),
# which the server cannot check for multi-filter consumers.
def consumer_callbacks(service: str) -> str:
    """Durable consumer name for a service's inline-button callbacks."""
    return f"{_token(service, 'service')}_cb"


def consumer_forget(service: str) -> str:
    """Durable consumer name for a service's copy of the ``/forgetme`` events."""
    return f"{_token(service, 'service')}_fgt"


def service_bucket(service: str, suffix: str = "") -> str:
    """Name of a KV bucket owned by ``service`` (``svc_<service>[_<suffix>]``)."""
    name = f"svc_{_token(service, 'service')}"
    return f"{name}_{_token(suffix, 'bucket')}" if suffix else name


# Provisioning: only service <name>'s identity may publish to its own subject, so
# the provisioner (botbus.provision, run by the gateway) takes the name from it.
PROVISION_ALL = f"{PREFIX}.ctl.provision.*"
PROVISION_QUEUE = "botbus_provisioner"  # every gateway instance serves in this queue group


def provision(service: str) -> str:
    """Subject on which ``service`` asks for its streams and buckets to be made."""
    return f"{PREFIX}.ctl.provision.{_token(service, 'service')}"


def provision_requester(subject: str) -> str | None:
    """The service a provisioning subject belongs to (its last token), or None."""
    prefix = f"{PREFIX}.ctl.provision."
    name = subject.removeprefix(prefix)
    return name if subject.startswith(prefix) and is_valid_name(name) else None


# The gateway answers requests here with its outbound figures (``botbus status``).
GATEWAY_STATUS = f"{PREFIX}.gateway.status"


# NATS micro service discovery
SRV_PING = "$SRV.PING"
SRV_INFO = "$SRV.INFO"
SRV_STATS = "$SRV.STATS"
