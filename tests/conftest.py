"""Shared fixtures: a real nats-server per test on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from botbus.auth import Authority, authority_dir
from botbus.connect import connect_options
from botbus.natsserver import NatsCluster, NatsServer
from botbus.provision import Provisioner
from botbus.sandbox import SandboxClient, SandboxServer
from botbus.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated from the developer's environment and .env file."""
    return load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path / "data"))


@pytest.fixture
async def nats_server(
    tmp_path: Path, settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[NatsServer]:
    """A real nats-server with JetStream, botbus's nats.conf, in operator mode.

    The core's provisioner of services' streams and buckets answers on it, on
    the gateway's identity as the gateway runs it, unless the test is marked
    ``no_provisioner``.
    """
    server = NatsServer(tmp_path / "nats", settings)
    await server.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if request.node.get_closest_marker("no_provisioner") is None:
                nc = await nats.connect(
                    server.url,
                    **connect_options(settings, "gateway"),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                )
                stack.push_async_callback(nc.close)
                await stack.enter_async_context(Provisioner(nc))
            yield server
    finally:
        await server.stop()


@pytest.fixture
async def nats_cluster(tmp_path: Path, settings: Settings) -> AsyncIterator[NatsCluster]:
    """Three real nats-servers forming one JetStream cluster (same nats.conf)."""
    cluster = NatsCluster(tmp_path / "cluster", settings, size=3)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


async def connect_as(server: NatsServer, settings: Settings, component: str) -> Client:
    """Connect to ``server`` with the identity of ``component``, issued by its authority."""
    login = connect_options(settings, component)
    return await nats.connect(server.url, **login, max_reconnect_attempts=2)


def publisher_creds(settings: Settings, service: str = "alerts") -> Path:
    """A publish-only identity for ``service``'s subjects (e.g. an alert publisher)."""
    authority = Authority.load(authority_dir(settings))
    return authority.issue_publisher(service).write(authority_dir(settings) / "publisher.creds")


@pytest.fixture
async def admin_nc(nats_server: NatsServer, settings: Settings) -> AsyncIterator[Client]:
    """A NATS connection as the admin user."""
    nc = await connect_as(nats_server, settings, "admin")
    try:
        yield nc
    finally:
        await nc.drain()


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    """A running Telegram Bot API sandbox on a free port (Telegram's default limits).

    Register a bot with ``sandbox.add_bot()``; point a Bot at ``sandbox.api_url``.
    """
    server = SandboxServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def sandbox_client(sandbox: SandboxServer) -> AsyncIterator[SandboxClient]:
    """The user side of ``sandbox``, over HTTP."""
    client = SandboxClient(sandbox.base_url)
    try:
        yield client
    finally:
        await client.close()
