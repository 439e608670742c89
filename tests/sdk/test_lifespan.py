"""@service.lifespan: state opened in order, closed in reverse, also when start-up fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.aio.client import Client

from botbus.errors import StartupError
from botbus.models import InboundCommand
from botbus.natsserver import NatsServer
from botbus.service import App, Context, Service, ServiceApp
from botbus.settings import Settings
from tests.sdk.conftest import Gateway
from tests.support.builders import make_command
from tests.support.outbox import StreamReader, texts


@dataclass
class Counter:
    opened_by: str
    hits: int = 0


def stateful_service(events: list[str], *, fail_in: str = "") -> Service:
    """An "echo" with three lifespans; the one named ``fail_in`` raises on start."""
    svc = Service("echo", "1.0.0", {"en": "test"})

    @svc.lifespan
    async def connection(app: App) -> AsyncIterator[None]:
        events.append("open connection")
        try:
            yield
        finally:
            events.append("close connection")

    @svc.lifespan
    async def counter(app: App) -> AsyncIterator[Counter]:
        events.append("open counter")
        if fail_in == "counter":
            raise OSError("disk full")
        try:
            yield Counter(opened_by=app.instance_id)
        finally:
            events.append("close counter")

    @svc.lifespan
    async def audit(app: App) -> AsyncIterator[None]:
        # A later lifespan sees what the earlier ones yielded.
        assert isinstance(app.state, Counter)
        events.append("open audit")
        if fail_in == "audit":
            raise RuntimeError("audit log unreachable")
        yield
        events.append("close audit")

    @svc.command("hit", en="Count")
    async def hit(ctx: Context[Counter], cmd: InboundCommand) -> str:
        ctx.state.hits += 1
        return f"{ctx.state.hits} by {ctx.state.opened_by}"

    return svc


async def test_state_is_shared_by_handlers_and_closed_in_reverse(
    nats_server: NatsServer, settings: Settings, gateway: Gateway, outbound: StreamReader
) -> None:
    events: list[str] = []
    async with ServiceApp(stateful_service(events), settings, url=nats_server.url) as app:
        assert events == ["open connection", "open counter", "open audit"]
        await gateway.command(make_command(command="hit"))
        assert texts(await outbound.actions(1)) == [f"1 by {app.instance_id}"]
        await gateway.command(make_command(command="hit"))
        assert texts(await outbound.actions(1)) == [f"2 by {app.instance_id}"]
    assert events[3:] == ["close audit", "close counter", "close connection"]


@pytest.mark.parametrize(
    ("fail_in", "closed"),
    [
        ("counter", ["close connection"]),
        ("audit", ["close counter", "close connection"]),
    ],
)
async def test_failed_start_closes_what_was_opened_in_reverse(
    nats_server: NatsServer, settings: Settings, topology: Client, fail_in: str, closed: list[str]
) -> None:
    events: list[str] = []
    app = ServiceApp(stateful_service(events, fail_in=fail_in), settings, url=nats_server.url)
    with pytest.raises(StartupError, match=f"lifespan {fail_in} failed") as raised:
        await app.start()
    assert raised.value.reason == "hook"
    opened = [e for e in events if e.startswith("open")]
    assert events == [*opened, *closed]
    assert app.nc.is_closed
