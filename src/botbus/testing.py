"""Test a service's handlers against a real nats-server, in a few lines.

::

    from botbus.testing import ServiceHarness
    from weather.service import service

    async def test_forecast() -> None:
        async with ServiceHarness(service) as bus:
            reply = await bus.command("/weather Madrid")
            assert "Madrid" in reply.text

The harness starts an embedded nats-server (operator mode, in a temporary
directory), creates the shared streams and runs the provisioner of the
service's own streams and buckets as the gateway would, runs the
service with its own issued identity (so a permission it lacks fails the
test as it would in production), publishes inbound traffic as the gateway
does, and reads the actions the service publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from botbus import subjects
from botbus.connect import connect_options
from botbus.models import (
    Action,
    EditText,
    InboundCallback,
    InboundCommand,
    InboundMessage,
    SendText,
    decode_action,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.provision import Provisioner
from botbus.service import Service, ServiceApp
from botbus.settings import Settings, load_settings
from botbus.topology import ensure_topology

DEFAULT_REPLY_TIMEOUT = 10.0  # seconds to wait for a service's first action
DEFAULT_QUIET = 0.3  # seconds without a further action that end a reply
BOT_ID = 1

__all__ = ["Reply", "ServiceHarness"]


@dataclass(frozen=True)
class Reply:
    """The actions a service published in answer to one inbound message."""

    actions: list[Action]

    @property
    def texts(self) -> list[str]:
        """The texts sent or edited, in order."""
        return [a.text for a in self.actions if isinstance(a, SendText | EditText)]

    @property
    def text(self) -> str:
        """All texts joined by newlines ("" if the service only did something else)."""
        return "\n".join(self.texts)


class ServiceHarness:
    """A running ``service`` on its own embedded broker; see the module docstring.

    ``env`` adds settings (as environment names, e.g. ``{"BOTBUS_ADMIN_IDS": "[7]"}``).
    """

    def __init__(
        self,
        service: Service,
        *,
        env: dict[str, Any] | None = None,
        directory: Path | None = None,
    ) -> None:
        self.service = service
        self._env = dict(env or {})
        self._directory = directory
        self._stack = contextlib.AsyncExitStack()
        self._ids = itertools.count(1)
        self._actions: asyncio.Queue[Action] = asyncio.Queue()
        self.settings: Settings | None = None
        self.server: NatsServer | None = None
        self.app: ServiceApp | None = None
        self._nc: Client | None = None

    async def __aenter__(self) -> ServiceHarness:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        if self._directory is None:
            tmp = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="botbus-test-"))
            self._directory = Path(tmp)
        self.settings = load_settings(
            _env_file=None, BOTBUS_DATA_DIR=str(self._directory / "data"), **self._env
        )
        self.server = await self._stack.enter_async_context(
            NatsServer(self._directory / "nats", self.settings)
        )
        nc = await nats.connect(self.server.url, **connect_options(self.settings, "admin"))
        self._stack.push_async_callback(nc.close)
        self._nc = nc
        await ensure_topology(nc.jetstream())
        # The service's streams and buckets are made by the provisioner, as the gateway's.
        gateway = await nats.connect(self.server.url, **connect_options(self.settings, "gateway"))
        self._stack.push_async_callback(gateway.close)
        await self._stack.enter_async_context(Provisioner(gateway))
        sub: Subscription = await nc.subscribe(
            subjects.outbound_of(self.service.name), cb=self._on_action
        )
        self._stack.push_async_callback(sub.unsubscribe)
        self.app = ServiceApp(self.service, self.settings, url=self.server.url)
        await self.app.start()
        self._stack.push_async_callback(self.app.stop)

    async def _on_action(self, msg: Msg) -> None:
        await self._actions.put(decode_action(msg.data))

    def _base(
        self, chat_id: int, user_id: int | None, language: str, admin: bool
    ) -> dict[str, Any]:
        update_id = next(self._ids)
        user = chat_id if user_id is None else user_id
        return {
            "correlation_id": f"{BOT_ID}:{update_id}",
            "bot_id": BOT_ID,
            "update_id": update_id,
            "chat": {"id": chat_id, "type": "private" if user == chat_id else "group"},
            "user": {"id": user, "first_name": "Test", "language_code": language},
            "language": language,
            "is_admin": admin,
            "chat_admin": admin or user == chat_id,
        }

    async def _publish(self, subject: str, payload: Any, msg_id: str) -> None:
        assert self._nc is not None, "use the harness inside `async with`"
        await self._nc.jetstream().publish(
            subject, encode(payload), headers={"Nats-Msg-Id": msg_id}
        )

    async def send_raw(self, subject: str, data: bytes) -> None:
        """Publish bytes as they are (another version's payload, a malformed one)."""
        assert self._nc is not None, "use the harness inside `async with`"
        await self._nc.jetstream().publish(subject, data)

    async def command(
        self,
        text: str,
        *,
        chat_id: int = 42,
        user_id: int | None = None,
        language: str = "en",
        admin: bool = False,
        timeout: float = DEFAULT_REPLY_TIMEOUT,
    ) -> Reply:
        """Send ``/name args`` to the service as the gateway would; its reply."""
        name, _, args = text.removeprefix("/").partition(" ")
        base = self._base(chat_id, user_id, language, admin)
        cmd = InboundCommand.model_validate(
            {
                **base,
                "message_id": base["update_id"],
                "service": self.service.name,
                "command": name,
                "args": args.strip(),
            }
        )
        await self._publish(
            subjects.inbound_command(self.service.name, name), cmd, cmd.correlation_id
        )
        return await self.reply(timeout=timeout)

    async def message(
        self,
        text: str,
        *,
        chat_id: int = 42,
        user_id: int | None = None,
        language: str = "en",
    ) -> None:
        """A plain message in ``chat_id`` (fanned out to services that listen)."""
        base = self._base(chat_id, user_id, language, False)
        msg = InboundMessage.model_validate({**base, "message_id": base["update_id"], "text": text})
        await self._publish(subjects.INBOUND_MESSAGES, msg, msg.correlation_id)

    async def callback(
        self,
        data: str,
        *,
        chat_id: int = 42,
        user_id: int | None = None,
        message_id: int = 1,
        language: str = "en",
        timeout: float = DEFAULT_REPLY_TIMEOUT,
    ) -> Reply:
        """Press an inline button whose callback data is ``data``; the service's answer."""
        base = self._base(chat_id, user_id, language, False)
        press = InboundCallback.model_validate(
            {
                **base,
                "callback_query_id": f"cq{base['update_id']}",
                "message_id": message_id,
                "service": self.service.name,
                "data": data,
            }
        )
        await self._publish(
            subjects.inbound_callback(self.service.name), press, press.correlation_id
        )
        return await self.reply(timeout=timeout)

    async def reply(
        self, *, timeout: float = DEFAULT_REPLY_TIMEOUT, quiet: float = DEFAULT_QUIET
    ) -> Reply:
        """The next action(s): waits up to ``timeout`` for one, then takes what
        follows until ``quiet`` seconds pass without another."""
        try:
            first = await asyncio.wait_for(self._actions.get(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"service {self.service.name!r} published no action within {timeout:g}s"
            ) from None
        actions = [first]
        while True:
            try:
                actions.append(await asyncio.wait_for(self._actions.get(), quiet))
            except TimeoutError:
                return Reply(actions)

    async def actions(self, count: int, timeout: float = DEFAULT_REPLY_TIMEOUT) -> list[Action]:
        """Exactly ``count`` further actions, or an AssertionError after ``timeout``."""
        got: list[Action] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count:
            left = deadline - loop.time()
            try:
                got.append(await asyncio.wait_for(self._actions.get(), max(left, 0)))
            except TimeoutError:
                raise AssertionError(
                    f"expected {count} actions from {self.service.name!r}, got {len(got)}"
                ) from None
        return got
