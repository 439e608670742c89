"""``botbus status``: the live services, their instances, commands and counts.

Asks NATS micro discovery (``$SRV.INFO`` and ``$SRV.STATS``) and prints one
block per service. The broker is ``NATS_URL``, else the one ``botbus up``
recorded in ``<data dir>/up.json``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import click
import nats
from nats.aio.client import Client

from botbus import subjects
from botbus.errors import BotbusError, ConfigError
from botbus.settings import Settings, load_settings
from botbus.supervisor import state_path

GATHER_WINDOW = 0.5  # seconds to collect replies from every instance
CONNECT_TIMEOUT = 3  # seconds


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
            if msg.data:
                try:
                    replies.append(json.loads(msg.data))
                except ValueError:
                    continue  # not a micro reply; nothing to show for it
    finally:
        await sub.unsubscribe()
    return replies


async def collect(settings: Settings) -> list[ServiceStatus]:
    """Every live service, from one INFO and one STATS round."""
    user, password = settings.credentials_for("admin")
    url = broker_url(settings)
    try:
        nc = await nats.connect(
            url,
            user=user,
            password=password,
            connect_timeout=CONNECT_TIMEOUT,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise ConfigError(f"cannot reach NATS at {url}: {exc}; is `botbus up` running?") from exc
    try:
        infos = await _gather(nc, subjects.SRV_INFO)
        stats = await _gather(nc, subjects.SRV_STATS)
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
    return sorted(services.values(), key=lambda s: s.name)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(as_json: bool) -> None:
    """List live services: instances, versions, commands, requests and errors."""
    try:
        settings = load_settings()
        services = asyncio.run(collect(settings))
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        rows = [
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
        click.echo(json.dumps(rows, indent=2))
        return
    if not services:
        click.echo("no service is running")
        return
    click.echo(f"{'SERVICE':<12} {'INST':>4} {'VERSION':<10} {'REQS':>7} {'ERRS':>5}  COMMANDS")
    for s in services:
        click.echo(
            f"{s.name:<12} {len(s.instances):>4} {','.join(sorted(s.versions)):<10} "
            f"{s.requests:>7} {s.errors:>5}  {' '.join(s.commands)}"
        )
