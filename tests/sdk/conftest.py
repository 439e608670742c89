"""Fixtures for the SDK tests: topology, a gateway stand-in, outbound reader."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from botbus import subjects
from botbus.auth import credentials_for
from botbus.models import (
    InboundCommand,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.settings import Settings
from botbus.topology import ensure_topology
from tests.conftest import connect_as
from tests.support.builders import make_command, make_message
from tests.support.outbox import StreamReader, texts
from tests.support.waiting import eventually

__all__ = ["StreamReader", "eventually", "make_command", "make_message", "texts"]

REPO = Path(__file__).resolve().parents[2]
_update_ids = itertools.count(1000)


class Gateway:
    """Publishes inbound traffic as the gateway user does (durably, deduped)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()

    async def command(self, cmd: InboundCommand) -> None:
        """Publish ``cmd`` on its command subject."""
        await self.js.publish(
            subjects.inbound_command(cmd.service, cmd.command),
            encode(cmd),
            headers={"Nats-Msg-Id": cmd.correlation_id},
        )

    async def raw(self, subject: str, data: bytes, msg_id: str) -> None:
        """Publish arbitrary bytes (malformed payload tests)."""
        await self.js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})


@pytest.fixture
async def topology(admin_nc: Client) -> Client:
    """The shared streams, created as the gateway/admin would at start-up."""
    await ensure_topology(admin_nc.jetstream())
    return admin_nc


@pytest.fixture
async def gateway(
    nats_server: NatsServer, settings: Settings, topology: Client
) -> AsyncIterator[Gateway]:
    """A gateway stand-in connected as the gateway user."""
    nc = await connect_as(nats_server, settings, "gateway")
    try:
        yield Gateway(nc)
    finally:
        await nc.drain()


@pytest.fixture
async def outbound(topology: Client) -> AsyncIterator[StreamReader]:
    """Reader of echo's stored outbound actions."""
    reader = StreamReader(
        topology.jetstream(), subjects.STREAM_OUTBOUND, subjects.outbound_of("echo")
    )
    yield reader
    await reader.close()


@pytest.fixture
async def dlq(topology: Client) -> AsyncIterator[StreamReader]:
    """Reader of echo's dead letters."""
    reader = StreamReader(topology.jetstream(), subjects.STREAM_DLQ, subjects.dead_letter("echo"))
    yield reader
    await reader.close()


class ServiceProcess:
    """``python -m <module>`` (or a command line) as a child, settings via env vars."""

    def __init__(
        self,
        module: str,
        creds: Path,
        url: str,
        log_path: Path,
        extra_env: dict[str, str],
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "BOTBUS_"))}
        env.update(
            {
                "NATS_URL": url,
                "BOTBUS_NATS_CREDS": str(creds),
                "BOTBUS_LOG_LEVEL": "INFO",
                "PYTHONPATH": str(REPO / "tests" / "sdk") + os.pathsep + str(REPO),
                **extra_env,
            }
        )
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            module.split() if " " in module else [sys.executable, "-m", module],
            cwd=log_path.parent,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        """Everything the process logged so far."""
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, needle: str, timeout: float = 15.0) -> None:
        """Wait until ``needle`` appears in the log (or fail with the log)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.log():
            if self.proc.poll() is not None or loop.time() > deadline:
                raise AssertionError(f"{needle!r} not logged; log:\n{self.log()}")
            await asyncio.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        """Wait for the exit code."""
        code = await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL (cleanup)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


Spawn = Callable[..., ServiceProcess]


@pytest.fixture
def spawn(nats_server: NatsServer, settings: Settings, tmp_path: Path) -> Iterator[Spawn]:
    """Start services as subprocesses; all are killed at the end of the test.

    Each runs with the identity of ``name`` (a ``.creds`` file issued for it).
    """
    started: list[ServiceProcess] = []

    def start(module: str = "services.echo", name: str = "echo", **env: str) -> ServiceProcess:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        creds = credentials_for(settings, name)
        assert creds is not None
        proc = ServiceProcess(module, creds, nats_server.url, log_path, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


async def gather_replies(
    nc: Client, subject: str, expected: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Publish a request on ``subject`` and collect up to ``expected`` JSON replies."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    replies: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while len(replies) < expected and (left := deadline - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            replies.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return replies
