"""Fixtures for the games tests: the streams, a gateway stand-in, the service, its outbox."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from botbus import subjects
from botbus.connect import connect
from botbus.models import (
    Action,
    AnswerCallback,
    EditText,
    ForgetUser,
    InboundCallback,
    InboundCommand,
    SendText,
    decode_action,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings
from botbus.topology import ensure_topology, service_bucket
from services.games.engine import ChatRecord
from services.games.service import service as games_service
from services.games.store import GameStore

GROUP = -100777
_ids = itertools.count(1)
NAMES = {1: "Ana", 2: "Ben", 3: "Carl"}


class Telegram:
    """Publishes what the gateway would (commands, presses, forget events) and
    collects the games service's stored actions from BOTBUS_OUT."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.actions: list[Action] = []
        self._changed = asyncio.Condition()
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self) -> None:
        """Follow the service's outbound subject from the start of the stream."""
        self._sub = await self.js.subscribe(
            subjects.outbound_of("games"),
            stream=subjects.STREAM_OUTBOUND,
            cb=self._collect,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )

    async def stop(self) -> None:
        """Stop following (before the connection drains, so the drain is quick)."""
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _collect(self, msg: Msg) -> None:
        async with self._changed:
            self.actions.append(decode_action(msg.data))
            self._changed.notify_all()

    def _base(self, user: int, chat: int, language: str) -> dict[str, object]:
        uid = next(_ids)
        return {
            "correlation_id": f"1:{uid}",
            "bot_id": 1,
            "update_id": uid,
            "chat": {"id": chat, "type": "supergroup" if chat < 0 else "private"},
            "user": {"id": user, "first_name": NAMES.get(user, f"U{user}")},
            "language": language,
        }

    async def command(
        self,
        command: str,
        args: str = "",
        *,
        user: int = 1,
        chat: int | None = None,
        language: str = "en",
    ) -> InboundCommand:
        """Publish ``/command args`` from ``user`` (in their private chat by default)."""
        fields = self._base(user, user if chat is None else chat, language)
        cmd = InboundCommand.model_validate(
            {
                **fields,
                "message_id": fields["update_id"],
                "service": "games",
                "command": command,
                "args": args,
            }
        )
        await self.js.publish(
            subjects.inbound_command("games", command),
            encode(cmd),
            headers={"Nats-Msg-Id": cmd.correlation_id},
        )
        return cmd

    def callback(
        self,
        data: str,
        *,
        user: int = 1,
        chat: int | None = None,
        message_id: int = 500,
        language: str = "en",
    ) -> InboundCallback:
        """A press of a button whose data (after ``games:``) is ``data``."""
        fields = self._base(user, user if chat is None else chat, language)
        return InboundCallback.model_validate(
            {
                **fields,
                "callback_query_id": f"cq{fields['update_id']}",
                "message_id": message_id,
                "service": "games",
                "data": data,
            }
        )

    async def publish(self, cb: InboundCallback) -> None:
        """Publish a press as the gateway does."""
        await self.js.publish(
            subjects.inbound_callback("games"),
            encode(cb),
            headers={"Nats-Msg-Id": cb.correlation_id},
        )

    async def answers(self, correlation_id: str, count: int, timeout: float = 10.0) -> list[Action]:
        """The actions answering one inbound, once ``count`` of them are stored."""

        def mine() -> list[Action]:
            return [a for a in self.actions if a.correlation_id == correlation_id]

        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(mine()) >= count), timeout
                )
            except TimeoutError:
                raise AssertionError(
                    f"expected {count} action(s) for {correlation_id}, got {mine()}"
                ) from None
        return mine()

    async def reply(self, cmd: InboundCommand) -> SendText:
        """The single text answering a command (a replaced game's board edit aside)."""

        def texts() -> list[SendText]:
            mine = [a for a in self.actions if a.correlation_id == cmd.correlation_id]
            return [a for a in mine if isinstance(a, SendText)]

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(texts())), 10.0)
            except TimeoutError:
                raise AssertionError(f"no text answered {cmd.correlation_id}") from None
        [action] = texts()
        return action

    async def press(
        self, data: str, *, expect_edit: bool = True, **kwargs: object
    ) -> tuple[AnswerCallback, EditText | None]:
        """Press a button and return the callback answer and the board edit (if any)."""
        cb = self.callback(data, **kwargs)  # type: ignore[arg-type]
        await self.publish(cb)
        got = await self.answers(cb.correlation_id, 2 if expect_edit else 1)
        answer = next(a for a in got if isinstance(a, AnswerCallback))
        assert answer.callback_query_id == cb.callback_query_id
        edit = next((a for a in got if isinstance(a, EditText)), None)
        return answer, edit

    async def forget(self, user: int) -> None:
        """Publish a /forgetme event for ``user``."""
        event = ForgetUser(user_id=user, correlation_id=f"forget:{user}")
        await self.js.publish(subjects.EVENT_FORGET, encode(event))

    async def record(self, chat: int) -> ChatRecord:
        """The chat's record as stored in the service's bucket."""
        record, _revision = await (await self.store()).load(chat)
        return record

    async def store(self) -> GameStore:
        """The service's chat records (the bucket is created on first use)."""
        return GameStore(await service_bucket(self.js, "games"))


@pytest.fixture
async def telegram(admin_nc: Client) -> AsyncIterator[Telegram]:
    """The streams (as the gateway creates them) and a gateway stand-in."""
    await ensure_topology(admin_nc.jetstream())
    tg = Telegram(admin_nc)
    await tg.start()
    try:
        yield tg
    finally:
        await tg.stop()


@pytest.fixture
async def games(
    nats_server: NatsServer, settings: Settings, telegram: Telegram
) -> AsyncIterator[ServiceApp]:
    """One running instance of the games service."""
    async with ServiceApp(games_service, settings, url=nats_server.url) as app:
        yield app


async def second_instance(nats_server: NatsServer, settings: Settings) -> ServiceApp:
    """Another instance, with its own connection (started; the caller stops it)."""
    app = ServiceApp(games_service, settings, url=nats_server.url)
    await app.start()
    return app


async def games_nc(nats_server: NatsServer, settings: Settings) -> Client:
    """A connection as the games user, as the service makes it (its own inbox prefix)."""
    return await connect(settings, "games", url=nats_server.url)
