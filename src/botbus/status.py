"""``botbus status``: the gateway's outbound figures and the live services.

Asks the gateway (a request on ``botbus.gateway.status``) for its outbound
scheduler's figures: queue depth per lane, sends/s against the budget, 429s,
retries and permanent failures. Then asks NATS micro discovery (``$SRV.INFO``
and ``$SRV.STATS``) and prints one line per service. The broker is
``NATS_URL``, else the one ``botbus up`` recorded in ``<data dir>/up.json``.
Claims the gateway did not accept (a command another live service owns, a
service name its identity does not hold) come from the gateway's registry
bucket, which ``botbus registry`` also lists and prunes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import click
import nats
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from botbus import subjects
from botbus.connect import connect_options, server_list
from botbus.errors import BotbusError, ConfigError, PayloadError
from botbus.models import OutboundStatus, decode_as
from botbus.settings import Settings, load_settings
from botbus.supervisor import state_path

GATHER_WINDOW = 0.5  # seconds to collect replies from every instance
CONNECT_TIMEOUT = 3  # seconds
GATEWAY_TIMEOUT = 2.0  # seconds to wait for the gateway's answer


@dataclass
class ServiceStatus:
    """What discovery says about one service, summed over its instances."""

    name: str
    versions: set[str] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)
    commands: list[str] = field(default_factory=list)
    requests: int = 0
    errors: int = 0


def broker_url(settings: Settings) -> str:
    """``NATS_URL`` or the broker ``botbus up`` started."""
    if settings.nats_url:
        return settings.nats_url
    path = state_path(settings)
    try:
        recorded = json.loads(path.read_text())["nats_url"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"no broker to ask: set NATS_URL or start the system with `botbus up` ({exc})"
        ) from exc
    return str(recorded)


MAX_REPLIES = 1000  # $SRV replies read per question: far more instances than a bot runs


async def _gather(nc: Client, subject: str) -> list[dict[str, Any]]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[dict[str, Any]] = []
    try:
        await nc.publish(subject, b"", reply=inbox)
        deadline = time.monotonic() + GATHER_WINDOW
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except (TimeoutError, nats.errors.TimeoutError):
                break
            if msg.subject != inbox:
                continue  # a push consumer's delivery aimed here keeps its stream's subject
            if msg.data:
                try:
                    replies.append(json.loads(msg.data))
                except ValueError:
                    continue  # not a micro reply; nothing to show for it
            if len(replies) >= MAX_REPLIES:
                break  # a flood of forged replies must not stall or bloat the status
    finally:
        await sub.unsubscribe()
    return replies


@dataclass
class SystemStatus:
    """What ``botbus status`` shows: the gateway's outbound figures and the services."""

    gateway: OutboundStatus | None  # None: no gateway answered
    services: list[ServiceStatus]
    # command -> services whose claim lost; service -> why its claim was not believed
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    unverified: dict[str, str] = field(default_factory=dict)
    # service -> commands it claimed past the per-service limit (not routed)
    excess: dict[str, list[str]] = field(default_factory=dict)


async def gateway_status(nc: Client, timeout: float = GATEWAY_TIMEOUT) -> OutboundStatus | None:
    """The gateway's outbound figures, or None when no gateway answers in time."""
    try:
        msg = await nc.request(subjects.GATEWAY_STATUS, b"", timeout=timeout)
    except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None
    try:
        return decode_as(OutboundStatus, msg.data, subjects.GATEWAY_STATUS)
    except PayloadError as exc:
        raise ConfigError(
            f"the gateway answered the status request with an unexpected payload ({exc}); "
            "run the same botbus version for the gateway and this command"
        ) from exc


async def admin_connection(settings: Settings) -> Client:
    """Connect to the broker as admin; :class:`ConfigError` saying why not."""
    login = connect_options(settings, "admin")
    url = broker_url(settings)
    try:
        return await nats.connect(
            server_list(url),
            **login,
            connect_timeout=CONNECT_TIMEOUT,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise ConfigError(f"cannot reach NATS at {url}: {exc}; is `botbus up` running?") from exc


async def registry_bucket(nc: Client) -> KeyValue | None:
    """The gateway's registry bucket, or None before any gateway created it."""
    try:
        return await nc.jetstream().key_value(subjects.KV_GATEWAY_REGISTRY)
    except (BucketNotFoundError, nats.js.errors.NotFoundError):
        return None


async def read_conflicts(nc: Client) -> dict[str, Any]:
    """The conflicts the gateway recorded (``{"commands": ..., "unverified": ...}``)."""
    kv = await registry_bucket(nc)
    if kv is None:
        return {}
    try:
        entry = await kv.get(subjects.KV_REGISTRY_CONFLICTS)
    except KeyNotFoundError:
        return {}
    try:
        recorded = json.loads(entry.value or b"{}")
    except ValueError:
        return {}
    return recorded if isinstance(recorded, dict) else {}


async def collect(settings: Settings) -> SystemStatus:
    """The gateway's figures and every live service (one INFO and one STATS round)."""
    nc = await admin_connection(settings)
    try:
        gateway = await gateway_status(nc)
        infos = await _gather(nc, subjects.SRV_INFO)
        stats = await _gather(nc, subjects.SRV_STATS)
        conflicts = await read_conflicts(nc)
    finally:
        await nc.close()
    services: dict[str, ServiceStatus] = {}
    for info in infos:
        name = str(info.get("name", "?"))
        status = services.setdefault(name, ServiceStatus(name))
        meta = info.get("metadata") or {}
        status.versions.add(str(info.get("version", "")))
        status.instances.add(str(meta.get("botbus.instance") or info.get("id", "?")))
        try:
            commands = json.loads(meta.get("botbus.commands", "[]"))
        except ValueError:
            commands = []
        for command in commands if isinstance(commands, list) else []:
            name_of = f"/{command.get('command')}" if isinstance(command, dict) else ""
            if name_of and name_of not in status.commands:
                status.commands.append(name_of)
    for stat in stats:
        status = services.setdefault(str(stat.get("name", "?")), ServiceStatus(str(stat["name"])))
        for endpoint in stat.get("endpoints") or []:
            status.requests += int(endpoint.get("num_requests", 0))
            status.errors += int(endpoint.get("num_errors", 0))
    return SystemStatus(
        gateway,
        sorted(services.values(), key=lambda s: s.name),
        conflicts=dict(conflicts.get("commands") or {}),
        unverified=dict(conflicts.get("unverified") or {}),
        excess=dict(conflicts.get("excess") or {}),
    )


def gateway_lines(gateway: OutboundStatus | None) -> list[str]:
    """The gateway block of the table."""
    if gateway is None:
        return ["gateway: no answer (is it running? `botbus up` starts it)"]
    g = gateway
    return [
        f"gateway outbound: {g.sends_per_second:.1f} sends/s of {g.budget_per_second:g} budget, "
        f"{g.in_flight} in flight",
        f"  queued   interactive {g.queued_interactive}, bulk {g.queued_bulk}",
        f"  totals   sent {g.sent_total}, 429s {g.rate_limited_total}, "
        f"retries {g.retries_total}, permanent failures {g.permanent_failures_total}, "
        f"gave up {g.gave_up_total}, chats paused now {g.paused_chats}",
    ]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(as_json: bool) -> None:
    """Show the gateway's outbound figures and the live services."""
    try:
        settings = load_settings()
        system = asyncio.run(collect(settings))
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    services = system.services
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "service": s.name,
                "versions": sorted(s.versions),
                "instances": len(s.instances),
                "commands": s.commands,
                "requests": s.requests,
                "errors": s.errors,
            }
            for s in services
        ]
        gateway = system.gateway.model_dump(mode="json") if system.gateway else None
        out = {
            "gateway": gateway,
            "services": rows,
            "conflicts": system.conflicts,
            "unverified": system.unverified,
            "excess": system.excess,
        }
        click.echo(json.dumps(out, indent=2))
        return
    for line in gateway_lines(system.gateway):
        click.echo(line)
    for command, losers in sorted(system.conflicts.items()):
        click.echo(f"conflict: /{command} is also claimed by {', '.join(losers)} (not routed)")
    for name, reason in sorted(system.unverified.items()):
        click.echo(f"unverified claim {name}: {reason}")
    for name, refused in sorted(system.excess.items()):
        shown = ", ".join(f"/{c}" for c in refused[:5]) + (", ..." if len(refused) > 5 else "")
        click.echo(
            f"conflict: {name} claims {len(refused)} command(s) past the limit per service "
            f"(not routed): {shown}"
        )
    if not services:
        click.echo("no service is running")
        return
    click.echo(f"{'SERVICE':<12} {'INST':>4} {'VERSION':<10} {'REQS':>7} {'ERRS':>5}  COMMANDS")
    for s in services:
        click.echo(
            f"{s.name:<12} {len(s.instances):>4} {','.join(sorted(s.versions)):<10} "
            f"{s.requests:>7} {s.errors:>5}  {' '.join(s.commands)}"
        )


@click.group()
def registry() -> None:
    """The gateway's registry of services (what routes commands while they are down)."""


async def _delete_consumers(nc: Client, name: str) -> list[str]:
    """Delete service ``name``'s durable consumers on the shared streams.

    The inbound stream keeps a message while any consumer still has to take
    it (interest retention): the consumers of a service gone for good would
    hold its commands, and every plain message if it listened, until the
    stream is full and refuses new ones.
    """
    js = nc.jetstream()
    deleted = []
    for stream, consumer in (
        (subjects.STREAM_INBOUND, subjects.consumer_commands(name)),
        (subjects.STREAM_INBOUND, subjects.consumer_callbacks(name)),
        (subjects.STREAM_INBOUND, subjects.consumer_messages(name)),
        (subjects.STREAM_EVENTS, subjects.consumer_events(name)),
        (subjects.STREAM_EVENTS, subjects.consumer_forget(name)),
    ):
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, consumer)
            deleted.append(consumer)
    return deleted


async def _registry_rm(settings: Settings, name: str, *, force: bool) -> tuple[bool, int]:
    """Remove ``name`` unless it is running (or ``force``): (removed, instances running)."""
    nc = await admin_connection(settings)
    try:
        kv = await registry_bucket(nc)
        if kv is None:
            return False, 0
        try:
            await kv.get(name)
        except KeyNotFoundError:
            return False, 0
        running = sum(info.get("name") == name for info in await _gather(nc, subjects.SRV_INFO))
        if running and not force:
            return False, running
        await kv.delete(name)
        await _delete_consumers(nc, name)
        return True, running
    finally:
        await nc.close()


async def _registry_list(settings: Settings) -> list[dict[str, Any]]:
    nc = await admin_connection(settings)
    try:
        kv = await registry_bucket(nc)
        if kv is None:
            return []
        # The stream's per-subject index, not kv.keys(): nats-py's keys() watches with an
        # ordered consumer and, on a loaded machine, once returned none of the keys there.
        stream = f"KV_{subjects.KV_GATEWAY_REGISTRY}"
        prefix = f"$KV.{subjects.KV_GATEWAY_REGISTRY}."
        info = await nc.jetstream().stream_info(stream, subjects_filter=f"{prefix}>")
        keys = [s.removeprefix(prefix) for s in (info.state.subjects or {})]
        rows: list[dict[str, Any]] = []
        for key in sorted(k for k in keys if subjects.is_valid_name(k)):
            with contextlib.suppress(KeyNotFoundError, ValueError):
                rows.append(json.loads((await kv.get(key)).value or b"{}"))
        return rows
    finally:
        await nc.close()


@registry.command("ls")
def registry_ls() -> None:
    """List every service the gateway remembers, live or not."""
    try:
        rows = asyncio.run(_registry_list(load_settings()))
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    if not rows:
        click.echo("the registry is empty")
    for row in rows:
        commands = " ".join(f"/{c.get('command')}" for c in row.get("commands", []))
        click.echo(f"{row.get('name', '?'):<12} {row.get('version', ''):<10} {commands}")


@registry.command("rm")
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Remove it even while it runs (it registers again at once)."
)
def registry_rm(name: str, force: bool) -> None:
    """Forget service NAME (gone for good): its commands stop being routed to it
    and its consumers on the shared streams are deleted.

    A running service is refused: removing it would free its commands for
    any other service claiming them before it registers again. Stop it first.
    """
    try:
        removed, running = asyncio.run(_registry_rm(load_settings(), name, force=force))
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    if not removed and running:
        raise click.ClickException(
            f"{name} is running ({running} instance(s)): stop it first, so that none of its "
            "commands can go to another service that claims them; --force removes it anyway"
        )
    if not removed:
        raise click.ClickException(
            f"the registry has no service {name!r} (see `botbus registry ls`)"
        )
    click.echo(f"removed {name} from the registry; the gateway forgets it on its next round")
    if running:
        click.echo(f"warning: {name} is running right now, so it will register again")
