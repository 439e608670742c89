"""Fixtures of the gateway tests: nats-server + sandbox + a running gateway.

Everything is real: the gateway talks HTTP to the sandbox and NATS to a
nats-server started for the test. ``MiniService`` is a few lines of plain
nats-py that register with NATS micro and answer ``/echo`` like a service,
so the gateway is tested without depending on the SDK.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from nats.micro import add_service
from nats.micro.service import Service as MicroService

from botbus import subjects
from botbus.connect import close_within, connect_options
from botbus.gateway import Gateway
from botbus.models import (
    InboundCallback,
    InboundCommand,
    InboundMessage,
    SendText,
    decode_inbound,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxBot, SandboxClient, SandboxServer
from botbus.settings import Settings, load_settings

BOT_USERNAME = "botbus_gw_test_bot"


@pytest.fixture
async def quiet_sandbox() -> AsyncIterator[SandboxServer]:
    """A sandbox without flood limits (tests that want a 429 inject one)."""
    server = SandboxServer(Limits(enabled=False), webhook_retry_delay=0.05)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def bot(quiet_sandbox: SandboxServer) -> SandboxBot:
    """The bot the gateway runs as."""
    return quiet_sandbox.add_bot(username=BOT_USERNAME)


@pytest.fixture
async def user(quiet_sandbox: SandboxServer) -> AsyncIterator[SandboxClient]:
    """The Telegram users' side of the sandbox."""
    client = SandboxClient(quiet_sandbox.base_url)
    try:
        yield client
    finally:
        await client.close()


def gateway_settings(
    tmp_path: Path, nats_url: str, sandbox: SandboxServer, bot: SandboxBot, **extra: Any
) -> Settings:
    """Settings of a gateway pointed at ``sandbox`` and ``nats_url``."""
    return load_settings(
        _env_file=None,
        BOTBUS_DATA_DIR=str(tmp_path / "data"),
        NATS_URL=nats_url,
        TELEGRAM_BOT_TOKEN=bot.token,
        TELEGRAM_API_URL=sandbox.api_url,
        BOTBUS_GATEWAY_HTTP="127.0.0.1:0",
        **extra,
    )


@pytest.fixture
def gw_settings(
    tmp_path: Path, nats_server: NatsServer, quiet_sandbox: SandboxServer, bot: SandboxBot
) -> Settings:
    """Settings of the gateway under test (polling mode)."""
    return gateway_settings(tmp_path, nats_server.url, quiet_sandbox, bot, BOTBUS_ADMIN_IDS=[42])


@pytest.fixture
async def gateway(gw_settings: Settings) -> AsyncIterator[Gateway]:
    """A started gateway with fast discovery."""
    gw = Gateway(gw_settings, poll_timeout=5, discovery_interval=0.3)
    async with gw:
        yield gw


@dataclass
class MiniService:
    """A stand-in service: micro registration + a durable consumer answering /echo."""

    nc: Client
    name: str = "echo"
    micro: MicroService | None = None
    task: asyncio.Task[None] | None = None
    handled: int = 0
    stopping: bool = False

    async def start(self) -> None:
        """Register with micro discovery and start consuming commands."""
        commands = [
            {
                "command": "echo",
                "description": {"en": "Repeat TEXT", "es": "Repite TEXTO"},
                "admin_only": False,
            },
            {
                "command": "secret",
                "description": {"en": "Admins only", "es": "Solo admins"},
                "admin_only": True,
            },
        ]
        self.micro = await add_service(
            self.nc,
            name=self.name,
            version="1.0.0",
            metadata={
                "botbus.commands": json.dumps(commands),
                "botbus.listens": "false",
                "botbus.instance": "test-1",
            },
        )
        js = self.nc.jetstream()
        psub = await js.pull_subscribe(
            subjects.inbound_commands_of(self.name),
            durable=subjects.consumer_commands(self.name),
            stream=subjects.STREAM_INBOUND,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=10),
        )
        self.stopping = False
        self.task = asyncio.create_task(self._consume(psub))

    async def _consume(self, psub: Any) -> None:
        js = self.nc.jetstream()
        # Checked each round: on Python 3.11 a cancel landing as fetch() completes is
        # lost inside asyncio.wait_for, and the loop would run on (it hung teardowns).
        while not self.stopping:
            try:
                msgs = await psub.fetch(64, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error:
                await asyncio.sleep(0.2)  # NATS restarting (a fault test): try again
                continue
            try:
                await self._answer(js, msgs)
            except (TimeoutError, nats.errors.Error):
                # Unacked, so JetStream redelivers; like a real service riding out a restart.
                await asyncio.sleep(0.2)

    async def _answer(self, js: Any, msgs: list[Any]) -> None:
        for msg in msgs:
            cmd = decode_inbound(msg.data)
            reply = SendText(
                service=self.name,
                chat_id=cmd.chat.id,
                idempotency_key=f"{cmd.correlation_id}:0",
                correlation_id=cmd.correlation_id,
                text=getattr(cmd, "args", "") or "(nothing)",
            )
            await js.publish(
                subjects.outbound(self.name, reply.priority),
                encode(reply),
                headers={"Nats-Msg-Id": reply.idempotency_key},
            )
            await msg.ack()
            self.handled += 1

    async def stop(self) -> None:
        """Stop answering and leave discovery (the durable consumer stays)."""
        if self.task is not None:
            self.stopping = True
            self.task.cancel()
            await asyncio.wait({self.task})
            self.task = None
        if self.micro is not None:
            await self.micro.stop()
            self.micro = None


async def connect_admin(server: NatsServer, settings: Settings) -> Client:
    """An admin connection (tests inspect streams with it)."""
    login = connect_options(settings, "admin")
    return await nats.connect(
        server.url,
        **login,
    )


@pytest.fixture
async def echo(nats_server: NatsServer, gw_settings: Settings) -> AsyncIterator[MiniService]:
    """A running stand-in echo service."""
    nc = await connect_admin(nats_server, gw_settings)
    service = MiniService(nc)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        # nats-py's close() can wait forever on the socket's write buffer (it
        # hung CI teardowns for two minutes); the stand-in gives it 5 s.
        await close_within(nc, 5)


async def wait_until_live(gateway: Gateway, service: str, live: bool = True) -> None:
    """Wait (bounded) until the gateway's registry sees ``service`` (not) live."""
    assert gateway.registry is not None
    async with asyncio.timeout(10):
        while gateway.registry.is_live(service) != live:
            await gateway.registry.next_round()


Inbound = InboundCommand | InboundMessage | InboundCallback


class Inbox:
    """Every inbound the gateway publishes, read with a plain core subscription."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue()

    async def on_msg(self, msg: Msg) -> None:
        """Collect one inbound."""
        await self.queue.put(decode_inbound(msg.data))

    async def next(self) -> Inbound:
        """The next inbound, within 10 seconds."""
        async with asyncio.timeout(10):
            return await self.queue.get()


@pytest.fixture
async def inbox(nats_server: NatsServer, gw_settings: Settings) -> AsyncIterator[Inbox]:
    """Inbound commands, presses to echo and plain messages, as the services receive them."""
    nc: Client = await connect_admin(nats_server, gw_settings)
    box = Inbox()
    await nc.subscribe(subjects.inbound_commands_of("echo"), cb=box.on_msg)
    await nc.subscribe(subjects.INBOUND_MESSAGES, cb=box.on_msg)
    await nc.subscribe(subjects.inbound_callback("echo"), cb=box.on_msg)
    await nc.flush()
    try:
        yield box
    finally:
        await nc.close()
