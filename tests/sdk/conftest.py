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
from nats.js.api import ConsumerConfig, DeliverPolicy

from botbus import subjects
from botbus.models import (
    Action,
    DeadLetter,
    InboundCommand,
    InboundMessage,
    SendText,
    decode_action,
    decode_as,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.settings import Settings
from botbus.topology import ensure_topology
from tests.conftest import connect_as

REPO = Path(__file__).resolve().parents[2]
_update_ids = itertools.count(1000)


def make_command(
    args: str = "hello",
    *,
    command: str = "echo",
    service: str = "echo",
    language: str = "en",
    chat_id: int = 42,
    update_id: int | None = None,
) -> InboundCommand:
    """An inbound command as the gateway would publish it."""
    uid = update_id if update_id is not None else next(_update_ids)
    return InboundCommand.model_validate(
        {
            "correlation_id": f"1:{uid}",
            "bot_id": 1,
            "update_id": uid,
            "chat": {"id": chat_id, "type": "private"},
            "user": {"id": chat_id, "first_name": "Ana", "language_code": language},
            "language": language,
            "message_id": uid,
            "service": service,
            "command": command,
            "args": args,
        }
    )


def make_message(text: str = "hi", *, chat_id: int = 42) -> InboundMessage:
    """A plain inbound message."""
    uid = next(_update_ids)
    return InboundMessage.model_validate(
        {
            "correlation_id": f"1:{uid}",
            "bot_id": 1,
            "update_id": uid,
            "chat": {"id": chat_id},
            "user": {"id": chat_id},
            "message_id": uid,
            "text": text,
        }
    )


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


class StreamReader:
    """Reads what was STORED on a subject, from the start of its stream."""

    def __init__(self, js: JetStreamContext, stream: str, subject: str) -> None:
        self.js, self.stream, self.subject = js, stream, subject
        self._sub: JetStreamContext.PullSubscription | None = None

    async def _raw(self, count: int, timeout: float) -> list[bytes]:
        if self._sub is None:
            self._sub = await self.js.pull_subscribe(
                self.subject,
                stream=self.stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count and (left := deadline - loop.time()) > 0:
            try:
                msgs = await self._sub.fetch(batch=min(100, count - len(got)), timeout=left)
            except TimeoutError:
                break
            for msg in msgs:
                await msg.ack()
                got.append(msg.data)
        return got

    async def close(self) -> None:
        """Remove the reader's consumer subscription."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def actions(self, count: int, timeout: float = 10.0) -> list[Action]:
        """Up to ``count`` actions stored within ``timeout`` seconds."""
        return [decode_action(d) for d in await self._raw(count, timeout)]

    async def dead_letters(self, count: int, timeout: float = 10.0) -> list[DeadLetter]:
        """Up to ``count`` dead-letter records."""
        return [decode_as(DeadLetter, d) for d in await self._raw(count, timeout)]


def texts(actions: list[Action]) -> list[str]:
    """The texts of the SendText actions."""
    return [a.text for a in actions if isinstance(a, SendText)]


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
        self, module: str, name: str, url: str, log_path: Path, extra_env: dict[str, str]
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "BOTBUS_"))}
        env.update(
            {
                "NATS_URL": url,
                "BOTBUS_NATS_USER": name,
                "BOTBUS_NATS_PASSWORD": f"dev-only-{name}-password",
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
def spawn(nats_server: NatsServer, tmp_path: Path) -> Iterator[Spawn]:
    """Start services as subprocesses; all are killed at the end of the test."""
    started: list[ServiceProcess] = []

    def start(module: str = "services.echo", name: str = "echo", **env: str) -> ServiceProcess:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        proc = ServiceProcess(module, name, nats_server.url, log_path, env)
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


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds (counters are updated just after the ack)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
