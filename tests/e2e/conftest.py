"""The whole bot in one test: nats-server, sandbox, the real gateway and real services.

Every component connects as its OWN nats.conf user (the gateway as
``gateway``, each service as its name, publishers as ``publisher``), the way
``botbus up`` hands each child one credential, so every test that passes
also proves nats.conf lets each part do its job and nothing forces a
broader user. The sandbox runs without flood limits: these tests are about
what users see, not about Telegram's budgets (the scheduler tests cover those).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from botbus import subjects
from botbus.auth import Grants, credentials_for
from botbus.connect import connect_options
from botbus.gateway import Gateway
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxBot, SandboxClient, SandboxServer
from botbus.service import Service, ServiceApp
from botbus.settings import Settings, load_settings

BOT_USERNAME = "botbus_e2e_bot"
ADMIN: dict[str, Any] = {"id": 4242, "first_name": "Admin"}
EVENT_WAIT = 10.0  # seconds a test waits for the bot to answer one thing
DISCOVERY_WAIT = 10.0  # seconds the gateway gets to discover a started service
POLL_TIMEOUT = 2  # seconds of the gateway's getUpdates long poll: short, so restarts are quick


def component_settings(base: Settings, component: str, grants: Grants | None = None) -> Settings:
    """``base`` with the NATS identity of ``component`` only (its own ``.creds`` file)."""
    creds = credentials_for(base, component, grants)
    return base.model_copy(update={"nats_creds": creds})


class Stack:
    """A running bot: the sandbox's user side, the gateway, and service instances."""

    def __init__(
        self,
        sandbox: SandboxServer,
        client: SandboxClient,
        bot: SandboxBot,
        nats_server: NatsServer,
        settings: Settings,
    ) -> None:
        self.sandbox = sandbox
        self.client = client
        self.bot = bot
        self.nats_server = nats_server
        self.settings = settings
        self.gateway: Gateway | None = None
        self.apps: dict[str, ServiceApp] = {}
        self.acks = AckWatch()

    # -- lifecycle -------------------------------------------------------------

    async def start_gateway(self) -> Gateway:
        """Start the real gateway as NATS user ``gateway``."""
        gateway = Gateway(
            component_settings(self.settings, "gateway"),
            poll_timeout=POLL_TIMEOUT,
            discovery_interval=0.2,
        )
        await gateway.initialize()
        await gateway.start()
        self.gateway = gateway
        return gateway

    async def stop_gateway(self) -> None:
        """Stop the gateway (what is in flight is finished or left in JetStream)."""
        if self.gateway is not None:
            gateway, self.gateway = self.gateway, None
            await gateway.stop()

    async def start_service(self, service: Service) -> ServiceApp:
        """Start one instance of ``service`` as its own NATS user; wait until it is routed."""
        app = ServiceApp(
            service,
            component_settings(self.settings, service.name, service.grants),
            url=self.nats_server.url,
        )
        await app.start()
        self.apps[service.name] = app
        await self.wait_live(service.name)
        return app

    async def stop_service(self, name: str) -> None:
        """Stop the instance of service ``name`` (its durable consumers stay)."""
        app = self.apps.pop(name)
        await app.stop(timeout=5.0)

    async def wait_live(self, name: str) -> None:
        """Wait (bounded) until the gateway routes commands to service ``name``."""
        gateway = self.gateway
        assert gateway is not None and gateway.registry is not None
        async with asyncio.timeout(DISCOVERY_WAIT):
            while not gateway.registry.is_live(name):
                await gateway.registry.next_round()

    async def close(self) -> None:
        """Stop every service, then the gateway."""
        for name in list(self.apps):
            await self.stop_service(name)
        await self.stop_gateway()
        await self.acks.close()

    # -- waiting on the services' work ------------------------------------------

    async def wait_handled(self, service: str, kind: FeedKind, count: int) -> None:
        """Wait (bounded) until ``service`` has acked ``count`` deliveries of ``kind``.

        Plain messages fan out on their own consumer, so a command written
        right after them may be served first; tests that depend on earlier
        messages wait for this instead of sleeping.
        """
        await self.acks.wait(_consumer_of(service, kind), count)


FeedKind = Literal["message", "forget", "delivery", "callback"]


def _consumer_of(service: str, kind: FeedKind) -> str:
    if kind == "message":
        return subjects.consumer_messages(service)
    if kind == "callback":
        return subjects.consumer_callbacks(service)
    if kind == "forget":
        return subjects.consumer_forget(service)
    return subjects.consumer_events(service)


class AckWatch:
    """Counts the acks JetStream consumers receive, watched as the admin user.

    A service acks an inbound message only after its handler finished, so an
    ack is the event "the service has dealt with it"; watching the acks on
    the bus needs no hook inside the service.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._changed = asyncio.Condition()
        self._nc: Client | None = None

    async def start(self, nats_server: NatsServer, settings: Settings) -> None:
        """Subscribe to the ack subjects of the inbound and event streams."""
        login = connect_options(settings, "admin")
        self._nc = await nats.connect(
            nats_server.url,
            **login,
        )
        for stream in (subjects.STREAM_INBOUND, subjects.STREAM_EVENTS):
            await self._nc.subscribe(f"$JS.ACK.{stream}.*.>", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...; the body of an
        # ack is empty or "+ACK" (a nak or "working on it" is not an ack).
        if msg.data not in (b"", b"+ACK"):
            return
        consumer = msg.subject.split(".")[3]
        async with self._changed:
            self.counts[consumer] += 1
            self._changed.notify_all()

    async def wait(self, consumer: str, count: int) -> None:
        """Wait (bounded) until ``consumer`` has been acked ``count`` times."""
        async with asyncio.timeout(EVENT_WAIT), self._changed:
            await self._changed.wait_for(lambda: self.counts[consumer] >= count)

    async def close(self) -> None:
        """Stop watching."""
        if self._nc is not None:
            await self._nc.close()


class Chat:
    """One chat as its users see it: the bot's events read in order, never twice."""

    def __init__(self, stack: Stack, chat_id: int) -> None:
        self.stack = stack
        self.chat_id = chat_id
        self.seen = 0  # seq of the last event read

    async def write(
        self, text: str, user: int | dict[str, Any], *, lang: str = "en"
    ) -> dict[str, Any]:
        """``user`` writes ``text`` in this chat."""
        group = self.chat_id if self.chat_id < 0 else None
        return await self.stack.client.send_text(
            self.stack.bot.id, text, user=user, chat_id=group, lang=lang
        )

    async def next(self, kind: str = "message", timeout: float = EVENT_WAIT) -> dict[str, Any]:
        """The bot's next event of ``kind`` here (other kinds are skipped)."""
        [event] = await self.stack.client.wait_for(
            self.stack.bot.id, self.chat_id, kind=kind, after=self.seen, timeout=timeout
        )
        self.seen = event["seq"]
        return event

    async def ask(
        self, text: str, user: int | dict[str, Any], *, lang: str = "en", kind: str = "message"
    ) -> dict[str, Any]:
        """Write ``text`` and return the bot's next event of ``kind``."""
        await self.write(text, user, lang=lang)
        return await self.next(kind)

    async def reply_text(self, text: str, user: int | dict[str, Any], *, lang: str = "en") -> str:
        """Write ``text`` and return the text of the bot's next message."""
        event = await self.ask(text, user, lang=lang)
        return str(event["message"].get("text") or event["message"].get("caption") or "")

    async def rest(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Every event not read yet (waiting up to ``wait`` for one)."""
        events = await self.stack.client.messages(
            self.stack.bot.id, self.chat_id, after=self.seen, timeout=wait
        )
        if events:
            self.seen = events[-1]["seq"]
        return events


StartStack = Callable[..., Awaitable[Stack]]


async def launch_stack(
    data_dir: Path,
    nats_server: NatsServer,
    sandbox: SandboxServer,
    client: SandboxClient,
    *services: Service,
    **extra: Any,
) -> Stack:
    """A new bot in ``sandbox`` with the gateway and ``services`` running for it.

    Extra keyword arguments are settings by environment name. The caller
    closes the stack (``await stack.close()``); the browser tests share one
    per module, the e2e tests one per test (``start_stack``).
    """
    bot = sandbox.add_bot(username=BOT_USERNAME)
    values: dict[str, Any] = {
        "BOTBUS_DATA_DIR": str(data_dir),
        "NATS_URL": nats_server.url,
        "TELEGRAM_BOT_TOKEN": bot.token,
        "TELEGRAM_API_URL": sandbox.api_url,
        "BOTBUS_GATEWAY_HTTP": "127.0.0.1:0",
        "BOTBUS_ALERTS_HTTP": "127.0.0.1:0",
        "BOTBUS_ADMIN_IDS": [ADMIN["id"]],
        # Tests write faster than people do; flood control has its own tests.
        "BOTBUS_FLOOD_RATE": 100.0,
        "BOTBUS_FLOOD_BURST": 100,
    }
    values.update(extra)
    settings = load_settings(_env_file=None, **values)
    stack = Stack(sandbox, client, bot, nats_server, settings)
    try:
        await stack.acks.start(nats_server, settings)
        await stack.start_gateway()
        for service in services:
            await stack.start_service(service)
    except BaseException:
        await stack.close()
        raise
    return stack


@pytest.fixture
async def e2e_sandbox() -> AsyncIterator[SandboxServer]:
    """The local Telegram, without flood limits."""
    server = SandboxServer(Limits(enabled=False))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def start_stack(
    tmp_path: Path, nats_server: NatsServer, e2e_sandbox: SandboxServer
) -> AsyncIterator[StartStack]:
    """``await start_stack(service, ..., **settings)``: the gateway plus those services.

    Extra keyword arguments are settings by environment name, e.g.
    ``BOTBUS_ALERTS_HTTP="127.0.0.1:0"``. ``ADMIN`` is always a bot admin.
    """
    client = SandboxClient(e2e_sandbox.base_url)
    stacks: list[Stack] = []

    async def start(*services: Service, **extra: Any) -> Stack:
        stack = await launch_stack(
            tmp_path / "data", nats_server, e2e_sandbox, client, *services, **extra
        )
        stacks.append(stack)
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            await stack.close()
        await client.close()
