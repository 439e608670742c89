"""Fixtures for the alerts service tests: a running service, a user, the outbox."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from botbus import subjects
from botbus.models import InboundCommand, SendText, encode
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from botbus.topology import ensure_topology
from services.alerts.service import service
from tests.support.outbox import Outbox as SharedOutbox

ADMIN_ID = 777
_ids = itertools.count(1)


def command(
    text: str,
    *,
    chat_id: int = 100,
    user_id: int | None = None,
    chat_type: str = "private",
    language: str = "en",
    admin: bool = False,
    group_admin: bool = False,
    thread_id: int | None = None,
) -> InboundCommand:
    """``/name args`` as the gateway would publish it for the alerts service.

    ``admin``: a bot admin. ``group_admin``: an admin of the group ``chat_id``
    (the gateway sets ``chat_admin`` so in groups; in a private chat it is
    always set, the user owning their chat).
    """
    name, _, args = text.lstrip("/").partition(" ")
    uid = next(_ids)
    return InboundCommand.model_validate(
        {
            "correlation_id": f"1:{uid}",
            "bot_id": 1,
            "update_id": uid,
            "chat": {"id": chat_id, "type": chat_type},
            "user": {"id": user_id if user_id is not None else chat_id, "first_name": "Ana"},
            "language": language,
            "message_id": uid,
            "service": "alerts",
            "command": name,
            "args": args,
            "is_admin": admin,
            "chat_admin": group_admin or chat_type == "private",
            "message_thread_id": thread_id,
        }
    )


class Outbox(SharedOutbox):
    """The alerts service's stored outbound actions, read in order."""

    def __init__(self, js: JetStreamContext) -> None:
        super().__init__(js, "alerts")

    async def reply(self, timeout: float = 10.0) -> str:
        """The text of the next action, which must be a SendText."""
        actions = await self.take(1, timeout)
        assert actions, "the alerts service did not answer"
        action = actions[0]
        assert isinstance(action, SendText), action
        return action.text


class Bot:
    """Drives the alerts service the way the gateway does."""

    def __init__(self, js: JetStreamContext, outbox: Outbox) -> None:
        self.js = js
        self.outbox = outbox

    async def send(self, text: str, **kwargs: Any) -> None:
        """Publish a command without waiting for the answer."""
        cmd = command(text, **kwargs)
        await self.js.publish(
            subjects.inbound_command("alerts", cmd.command),
            encode(cmd),
            headers={"Nats-Msg-Id": cmd.correlation_id},
        )

    async def ask(self, text: str, **kwargs: Any) -> str:
        """Publish a command and return the service's reply text."""
        await self.send(text, **kwargs)
        return await self.outbox.reply()


@pytest.fixture
def alerts_settings(tmp_path: Path) -> Settings:
    """Settings of the service under test: a free HTTP port, one bot admin."""
    return load_settings(
        _env_file=None,
        BOTBUS_DATA_DIR=str(tmp_path / "data"),
        BOTBUS_ALERTS_HTTP="127.0.0.1:0",
        BOTBUS_ADMIN_IDS=[ADMIN_ID],
        # The data directory holds the broker's authority: the service issues itself
        # its own identity, so its permissions are proven by every test that passes.
    )


StartApp = Callable[[], Awaitable[ServiceApp]]


@pytest.fixture
async def start_alerts(
    nats_server: NatsServer, admin_nc: Client, alerts_settings: Settings
) -> AsyncIterator[StartApp]:
    """Start (and at the end stop) alerts service instances in this process."""
    await ensure_topology(admin_nc.jetstream())
    apps: list[ServiceApp] = []

    async def start() -> ServiceApp:
        app = ServiceApp(service, alerts_settings, url=nats_server.url)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(timeout=5.0)


@pytest.fixture
async def bot(start_alerts: StartApp, admin_nc: Client) -> AsyncIterator[tuple[Bot, ServiceApp]]:
    """One running alerts instance and a way to talk to it."""
    app = await start_alerts()
    js = admin_nc.jetstream()
    outbox = Outbox(js)
    yield Bot(js, outbox), app
    await outbox.close()
