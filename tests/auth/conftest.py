"""Fixtures of the identity tests: a connection that records permission violations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError

from botbus.auth import Authority, Credentials, authority_dir
from botbus.connect import connect_options, inbox_prefix
from botbus.natsserver import NatsServer
from botbus.settings import Settings
from tests.conftest import publisher_creds
from tests.sdk.conftest import gateway, topology

__all__ = ["DENIED", "REQUEST_TIMEOUT", "Component", "Connect", "LogIn", "gateway", "topology"]

DENIED = (NatsError, TimeoutError)
REQUEST_TIMEOUT = 1.0  # seconds: a denied JetStream request just gets no answer


class Component:
    """A connection with one issued identity that records permission violations."""

    def __init__(self, nc: Client, violations: list[str]) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=REQUEST_TIMEOUT)
        self.violations = violations

    async def denied(self, needle: str, timeout: float = 5.0) -> None:
        """Wait for the server to report a violation mentioning ``needle``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # nats-py reports "nats: permissions violation for publish to "<subject>"" in lowercase.
        while not any(needle.lower() in v.lower() for v in self.violations):
            assert loop.time() < deadline, f"no violation for {needle!r}: {self.violations}"
            await asyncio.sleep(0.02)

    async def allowed(self) -> None:
        """Round-trip to the server, then check no violation was reported."""
        await self.nc.flush()
        assert not self.violations, self.violations


Connect = Callable[[str], Awaitable[Component]]
LogIn = Callable[[Credentials], Awaitable[Component]]


@pytest.fixture
async def _open(nats_server: NatsServer) -> AsyncIterator[Callable[..., Awaitable[Component]]]:
    opened: list[Client] = []

    async def open_with(**login: Any) -> Component:
        violations: list[str] = []

        async def on_error(exc: Exception) -> None:
            violations.append(str(exc))

        nc = await nats.connect(
            nats_server.url, **login, error_cb=on_error, max_reconnect_attempts=0
        )
        opened.append(nc)
        return Component(nc, violations)

    yield open_with
    for nc in opened:
        await nc.close()


@pytest.fixture
def authority(nats_server: NatsServer, settings: Settings) -> Authority:
    """The authority the test broker trusts."""
    return Authority.load(authority_dir(settings))


@pytest.fixture
async def as_user(
    _open: Callable[..., Awaitable[Component]], settings: Settings, topology: Client
) -> Connect:
    """Connect as a component, with its own inbox prefix as botbus.connect does."""

    async def open_as(component: str) -> Component:
        if component == "publisher":
            return await _open(
                user_credentials=str(publisher_creds(settings)),
                inbox_prefix=inbox_prefix("publisher"),
            )
        return await _open(**connect_options(settings, component))

    return open_as


@pytest.fixture
async def log_in(_open: Callable[..., Awaitable[Component]], tmp_path: Path) -> LogIn:
    """Connect with the given credentials (written to a .creds file first)."""
    count = 0

    async def connect(creds: Credentials) -> Component:
        nonlocal count
        count += 1
        path = creds.write(tmp_path / f"{creds.name}-{count}.creds")
        return await _open(user_credentials=str(path), inbox_prefix=inbox_prefix(creds.name))

    return connect
