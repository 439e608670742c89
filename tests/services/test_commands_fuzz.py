"""Every command of every bundled service, fed random text, answers the user.

Property: whatever follows ``/command`` — odd digits ("²"), doubled signs
("--5"), huge numbers, control characters, other scripts — the service answers
with a message of its own: a result or a refusal that says what to type. It
never crashes into the SDK's retries, whose end is a dead letter and
"Sorry, something went wrong" 18 s later.

Each service runs as it does in production (a real nats-server, its own NATS
user); commands are published as the gateway publishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg

from botbus import subjects
from botbus.models import (
    Action,
    AnswerCallback,
    EditText,
    InboundCallback,
    InboundCommand,
    SendPhoto,
    SendText,
    decode_action,
)
from botbus.models import encode as encode_model
from botbus.natsserver import NatsServer
from botbus.service import Service, ServiceApp
from botbus.settings import load_settings
from botbus.topology import ensure_topology
from services.alerts.service import service as alerts_service
from services.echo.service import service as echo_service
from services.games.service import service as games_service
from services.search.service import service as search_service
from services.sentiment.service import service as sentiment_service

BUNDLED: dict[str, Service] = {
    s.name: s
    for s in (echo_service, search_service, alerts_service, games_service, sentiment_service)
}
ANSWER_WAIT = 10.0  # seconds; a crashing handler never answers (its retries crash too)
SORRY = ("something went wrong", "algo salió mal")
BOT_ADMIN = 4242
_ids = itertools.count(1)

# Tokens people (and fat fingers) type after commands, mixed with free text.
TRICKY = [
    "²",
    "³",
    "٣",
    "--5",
    "-0",
    "+3",
    "0",
    "1",
    "5",
    "50",
    "-1",
    "999999999999",
    "9" * 5000,
    "1e9",
    "0x10",
    "in",
    "en",
    "at",
    "a las",
    "every day",
    "cada día",
    "1d",
    "99999999999d",
    "in 99999999999d x",
    "in 9999999d9999999h x",
    "2h30m",
    "25:99",
    "18:30",
    "me",
    "day",
    "week",
    "month",
    "on",
    "off",
    "bot",
    "all",
    "news",
    "Europe/Madrid",
    '"',
    "*",
    "-",
    "(",
    ")",
    "NEAR",
    "OR",
    "AND",
    "NOT",
    "<b>",
    "_",
    "\n",
    "\u200b",
    "🙂",
]
ARGS = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=8)), max_size=5).map(" ".join),
)


class Answers:
    """Every action the service under test stores, grouped by the inbound it answers."""

    def __init__(self) -> None:
        self.by_correlation: defaultdict[str, list[Action]] = defaultdict(list)
        self._changed = asyncio.Condition()

    async def collect(self, msg: Msg) -> None:
        """One stored action (core NATS sees the publish JetStream stores)."""
        action = decode_action(msg.data)
        async with self._changed:
            self.by_correlation[action.correlation_id or ""].append(action)
            self._changed.notify_all()

    async def first_message(self, correlation_id: str) -> Action | None:
        """The first message (text, photo or board edit) answering ``correlation_id``."""

        def found() -> Action | None:
            actions = self.by_correlation.get(correlation_id, [])
            return next(
                (a for a in actions if isinstance(a, SendText | SendPhoto | EditText)), None
            )

        async with self._changed:
            try:
                async with asyncio.timeout(ANSWER_WAIT):
                    await self._changed.wait_for(lambda: found() is not None)
            except TimeoutError:
                return None
        return found()

    async def answers_to_press(self, correlation_id: str) -> list[AnswerCallback]:
        """The press answers stored for ``correlation_id``, once there is one."""

        def found() -> list[AnswerCallback]:
            actions = self.by_correlation.get(correlation_id, [])
            return [a for a in actions if isinstance(a, AnswerCallback)]

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ANSWER_WAIT):
                    await self._changed.wait_for(lambda: bool(found()))
        return found()


class Running:
    """One bundled service running, with what it answers."""

    def __init__(self, service: Service, admin_nc: Client, answers: Answers) -> None:
        self.service = service
        self.nc = admin_nc
        self.answers = answers
        self.dead_letters: list[bytes] = []

    async def on_dead_letter(self, msg: Msg) -> None:
        """A message the service gave up on."""
        self.dead_letters.append(msg.data)


@pytest.fixture(params=sorted(BUNDLED))
async def running(
    request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer, admin_nc: Client
) -> AsyncIterator[Running]:
    """One bundled service as its own NATS user, and subscriptions to its answers."""
    service = BUNDLED[request.param]
    await ensure_topology(admin_nc.jetstream())
    answers = Answers()
    run = Running(service, admin_nc, answers)
    await admin_nc.subscribe(subjects.outbound_of(service.name), cb=answers.collect)
    await admin_nc.subscribe(subjects.dead_letter(service.name), cb=run.on_dead_letter)
    await admin_nc.flush()
    service_settings = load_settings(
        _env_file=None,
        BOTBUS_DATA_DIR=str(tmp_path / "data"),
        BOTBUS_ALERTS_HTTP="127.0.0.1:0",
        BOTBUS_ADMIN_IDS=[BOT_ADMIN],
        # same data directory as the broker's authority: the service issues its own identity
    )
    async with ServiceApp(service, service_settings, url=nats_server.url):
        yield run


def command(
    service: str, name: str, args: str, *, chat: int, user: int, language: str = "en"
) -> InboundCommand:
    """``/name args`` as the gateway publishes it (arguments stripped, 4096 characters)."""
    uid = next(_ids)
    group = chat < 0
    admin = user == BOT_ADMIN
    return InboundCommand.model_validate(
        {
            "correlation_id": f"1:{uid}",
            "bot_id": 1,
            "update_id": uid,
            "chat": {"id": chat, "type": "supergroup" if group else "private"},
            "user": {"id": user, "first_name": "Fuzz"},
            "language": language,
            "message_id": uid,
            "service": service,
            "command": name,
            "args": args.strip()[:4096],
            "is_admin": admin,
            "chat_admin": not group or admin,
        }
    )


async def send(running: Running, cmd: InboundCommand) -> None:
    """Publish ``cmd`` to the service, as the gateway does."""
    await running.nc.jetstream().publish(
        subjects.inbound_command(cmd.service, cmd.command),
        encode_model(cmd),
        headers={"Nats-Msg-Id": cmd.correlation_id},
    )


async def problem(running: Running, cmd: InboundCommand) -> str | None:
    """What is wrong with the service's answer to ``cmd`` (None: it answered well)."""
    said = f"/{cmd.command} {cmd.args!r}"
    answer = await running.answers.first_message(cmd.correlation_id)
    if answer is None:
        return f"{said} got no answer within {ANSWER_WAIT}s"
    shown = answer.caption if isinstance(answer, SendPhoto) else getattr(answer, "text", None)
    if any(s in (shown or "").lower() for s in SORRY):
        return f"{said} crashed"
    return None


async def test_tricky_arguments_after_each_command_started(running: Running) -> None:
    """Every command, run bare (starting its game, listing...), then with each tricky token."""
    service = running.service
    for index, name in enumerate(sorted(service.commands)):
        # One chat per command, so a /stop does not end the /guess game being probed.
        user = BOT_ADMIN if service.commands[name].admin_only else 2000 + index
        chat = user if user != BOT_ADMIN else -3000 - index
        first = command(service.name, name, "", chat=chat, user=user)
        await send(running, first)
        assert await problem(running, first) is None
        probes = [command(service.name, name, tok, chat=chat, user=user) for tok in TRICKY]
        for probe in probes:
            await send(running, probe)
        problems = [p for p in await asyncio.gather(*(problem(running, c) for c in probes)) if p]
        assert not problems, problems
    assert not running.dead_letters


@settings(
    max_examples=25,
    deadline=None,
    # The service is started once per parameter and serves every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_every_command_answers_any_text(running: Running, data: st.DataObject) -> None:
    """A bare command (it may start a game) then any command with any text, in one chat."""
    names = sorted(running.service.commands)
    before = data.draw(st.sampled_from(names), label="first command")
    name = data.draw(st.sampled_from(names), label="command")
    args = data.draw(ARGS, label="args")
    group = data.draw(st.booleans(), label="group")
    language = data.draw(st.sampled_from(["en", "es"]), label="language")
    user = BOT_ADMIN if data.draw(st.booleans(), label="bot admin") else 1000 + next(_ids)
    chat = -100_000 - next(_ids) if group else user
    for cmd in (
        command(running.service.name, before, "", chat=chat, user=user, language=language),
        command(running.service.name, name, args, chat=chat, user=user, language=language),
    ):
        await send(running, cmd)
        assert await problem(running, cmd) is None
    assert not running.dead_letters


WITH_BUTTONS = sorted(name for name, s in BUNDLED.items() if s.callback_handler is not None)


@pytest.mark.parametrize("running", WITH_BUTTONS, indirect=True)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_button_press_is_answered_once(running: Running, data: st.DataObject) -> None:
    """Whatever a press carries (Telegram delivers any data up to 64 bytes), one answer."""
    service = running.service.name
    payload = data.draw(
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(["t:abcdef:0:4", "q:abcdef:0:1", "h:abcdef:0:a", "q0000:2", "x:1"]),
        ).filter(lambda d: len(d.encode()) <= 64 - len(service) - 1),
        label="data",
    )
    in_group = data.draw(st.booleans(), label="group")
    uid = next(_ids)
    chat = -200_000 - uid if in_group else 3000 + uid
    press = InboundCallback.model_validate(
        {
            "correlation_id": f"1:{uid}",
            "bot_id": 1,
            "update_id": uid,
            "chat": {"id": chat, "type": "supergroup" if in_group else "private"},
            "user": {"id": 3000 + uid, "first_name": "Fuzz"},
            "callback_query_id": f"cq{uid}",
            "message_id": data.draw(st.one_of(st.none(), st.integers(1, 10**6)), label="message"),
            "service": service,
            "data": payload,
        }
    )
    await running.nc.jetstream().publish(
        subjects.inbound_callback(service),
        encode_model(press),
        headers={"Nats-Msg-Id": press.correlation_id},
    )
    answers = await running.answers.answers_to_press(press.correlation_id)
    assert [a.callback_query_id for a in answers] == [press.callback_query_id], payload
    assert not running.dead_letters
