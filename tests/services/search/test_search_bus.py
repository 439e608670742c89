"""The search service on the bus: what a user sees for /search, /find and the buttons.

Inbound traffic is published as the gateway publishes it (models, subjects,
Nats-Msg-Id); the replies are read back from the BOTBUS_OUT stream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from botbus import subjects
from botbus.models import (
    Action,
    AnswerCallback,
    EditText,
    ForgetUser,
    InboundCallback,
    InboundCommand,
    InboundMessage,
    InlineKeyboard,
    SendText,
    decode_action,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings
from botbus.topology import ensure_topology
from services.search.index import SearchIndex
from services.search.kb import Document
from services.search.service import service as search_service
from tests.support.waiting import eventually

SUPERGROUP = -1001234567
PRIVATE = 555
_ids = itertools.count(1)


class Bus:
    """The gateway's side of the bus: publishes inbound traffic, reads search's actions."""

    def __init__(self, nc: Client) -> None:
        self.js = nc.jetstream()
        self._reader: JetStreamContext.PullSubscription | None = None

    async def _publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})

    async def command(
        self, command: str, args: str, *, chat: int = PRIVATE, language: str = "en"
    ) -> InboundCommand:
        uid = next(_ids)
        cmd = InboundCommand.model_validate(
            {
                "correlation_id": f"1:{uid}",
                "bot_id": 1,
                "update_id": uid,
                "chat": {"id": chat, "type": "supergroup" if chat < 0 else "private"},
                "user": {"id": 7, "first_name": "Ana", "language_code": language},
                "language": language,
                "message_id": uid,
                "service": "search",
                "command": command,
                "args": args,
            }
        )
        await self._publish(
            subjects.inbound_command("search", command), encode(cmd), cmd.correlation_id
        )
        return cmd

    async def message(self, text: str, *, chat: int, user: int = 7, name: str = "Ana") -> int:
        uid = next(_ids)
        msg = InboundMessage.model_validate(
            {
                "correlation_id": f"1:{uid}",
                "bot_id": 1,
                "update_id": uid,
                "chat": {"id": chat, "type": "supergroup" if chat < 0 else "private"},
                "user": {"id": user, "first_name": name},
                "message_id": uid,
                "text": text,
            }
        )
        await self._publish(subjects.INBOUND_MESSAGES, encode(msg), msg.correlation_id)
        return uid

    async def press(self, data: str, *, chat: int = PRIVATE, message_id: int = 900) -> str:
        uid = next(_ids)
        cb = InboundCallback.model_validate(
            {
                "correlation_id": f"1:{uid}",
                "bot_id": 1,
                "update_id": uid,
                "chat": {"id": chat},
                "user": {"id": 7},
                "callback_query_id": f"cq{uid}",
                "message_id": message_id,
                "service": "search",
                "data": data,
            }
        )
        await self._publish(subjects.inbound_callback("search"), encode(cb), cb.correlation_id)
        return cb.correlation_id

    async def forget(self, user_id: int) -> None:
        event = ForgetUser(user_id=user_id, correlation_id=f"1:{next(_ids)}")
        await self._publish(subjects.EVENT_FORGET, encode(event), event.correlation_id)

    async def actions(self, count: int, timeout: float = 10.0) -> list[Action]:
        """The next ``count`` actions search stored (fails if they do not come)."""
        if self._reader is None:
            self._reader = await self.js.pull_subscribe(
                subjects.outbound_of("search"),
                stream=subjects.STREAM_OUTBOUND,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
        reader = self._reader
        got: list[Action] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count and (left := deadline - loop.time()) > 0:
            try:
                msgs = await reader.fetch(batch=count - len(got), timeout=left)
            except TimeoutError:
                break
            for msg in msgs:
                await msg.ack()
                got.append(decode_action(msg.data))
        assert len(got) == count, f"expected {count} actions, got {got}"
        return got

    async def reply_to(self, cmd: InboundCommand) -> SendText:
        [action] = await self.actions(1)
        assert isinstance(action, SendText) and action.correlation_id == cmd.correlation_id
        return action


def buttons(keyboard: InlineKeyboard | None) -> list[tuple[str, str]]:
    """(label, callback data) of every button."""
    if keyboard is None:
        return []
    return [(b.text, b.callback_data or "") for row in keyboard.rows for b in row]


@pytest.fixture
async def bus(admin_nc: Client) -> Bus:
    await ensure_topology(admin_nc.jetstream())
    return Bus(admin_nc)


@pytest.fixture
def seeded(settings: Settings) -> Settings:
    """An index holding our own small knowledge base (so the bundled one is not loaded)."""
    docs = [
        Document("kb", f"Gateway note {i}", f"The gateway relays action {i}.", f"https://e.org/{i}")
        for i in range(7)
    ]
    docs.append(Document("kb", "Canción de cuna", "Una canción para dormir & soñar <3"))
    with SearchIndex.in_data_dir(settings.data_dir) as index:
        index.replace_file("kb", docs)
    return settings


Start = Callable[[Settings], Awaitable[ServiceApp]]


@pytest.fixture
async def start(nats_server: NatsServer, bus: Bus) -> AsyncIterator[Start]:
    apps: list[ServiceApp] = []

    async def run(settings: Settings) -> ServiceApp:
        app = ServiceApp(search_service, settings, url=nats_server.url)
        await app.start()
        apps.append(app)
        return app

    yield run
    for app in apps:
        await app.stop()


async def test_search_pages_with_next_and_previous_buttons(
    start: Start, bus: Bus, seeded: Settings
) -> None:
    await start(seeded)
    cmd = await bus.command("search", "gateway")
    first = await bus.reply_to(cmd)
    assert first.parse_mode == "HTML"
    assert first.text.startswith("🔎 <b>Results 1–5 of 7</b>: <i>gateway</i>")
    assert '🔗 <a href="https://e.org/' in first.text
    assert "The <b>gateway</b> relays action" in first.text
    [(label, data)] = buttons(first.keyboard)
    assert label == "Next ▶" and data.startswith("search:") and len(data.encode()) <= 64

    await bus.press(data.removeprefix("search:"), message_id=321)
    edit, answer = await bus.actions(2)
    assert isinstance(edit, EditText) and isinstance(answer, AnswerCallback)
    assert edit.message_id == 321 and edit.parse_mode == "HTML"
    assert edit.text.startswith("🔎 <b>Results 6–7 of 7</b>")
    assert "6. <b>" in edit.text and "7. <b>" in edit.text
    [(back, back_data)] = buttons(edit.keyboard)
    assert back == "◀ Previous"

    await bus.press(back_data.removeprefix("search:"), message_id=321)
    edit, _answer = await bus.actions(2)
    assert isinstance(edit, EditText)
    assert edit.text.startswith("🔎 <b>Results 1–5 of 7</b>")


async def test_spanish_query_without_accents_finds_the_accented_word(
    start: Start, bus: Bus, seeded: Settings
) -> None:
    await start(seeded)
    cmd = await bus.command("search", "cancion", language="es")
    reply = await bus.reply_to(cmd)
    assert reply.text.startswith("🔎 <b>Resultados 1–1 de 1</b>")
    assert "<b>Canción de cuna</b>" in reply.text
    assert "Una <b>canción</b> para dormir &amp; soñar &lt;3" in reply.text
    assert reply.keyboard is None


BAD_QUERIES = [
    ('"unclosed phrase', "en", "A quote is not closed"),
    ("OR", "en", "OR, AND and NOT need a word on each side"),
    ("nats OR", "es", "OR, AND y NOT necesitan una palabra"),
    ("x" * 4096, "en", "That query is too long"),
    ("-gateway", "en", "Add at least one word to look for"),
    ("!!!", "en", "There is no word to look for"),
    ("", "en", "Usage: /search QUERY"),
    ("", "es", "Uso: /search CONSULTA"),
]


async def test_bad_queries_get_a_clear_reply_and_the_service_keeps_working(
    start: Start, bus: Bus, seeded: Settings
) -> None:
    await start(seeded)
    sent = [await bus.command("search", args, language=lang) for args, lang, _ in BAD_QUERIES]
    good = await bus.command("search", "gateway")
    replies = {a.correlation_id: a for a in await bus.actions(len(sent) + 1)}
    for cmd, (_args, _lang, expected) in zip(sent, BAD_QUERIES, strict=True):
        refusal = replies[cmd.correlation_id]
        assert isinstance(refusal, SendText)
        assert refusal.text.startswith(expected), refusal.text
        assert refusal.parse_mode is None
    answer = replies[good.correlation_id]
    assert isinstance(answer, SendText) and "Results 1–5 of 7" in answer.text


async def test_find_searches_only_this_chats_messages_and_links_them(
    start: Start, bus: Bus, seeded: Settings
) -> None:
    app = await start(seeded)
    deploy = await bus.message("The deploy failed: rollback <now>", chat=SUPERGROUP, name="Ben")
    await bus.message("deploy elsewhere", chat=PRIVATE)
    await bus.message("lunch?", chat=SUPERGROUP)
    index = app.state.index
    await eventually(lambda: index.message_count() == 3)

    reply = await bus.reply_to(await bus.command("find", "deploy", chat=SUPERGROUP))
    assert reply.text.startswith("🔎 <b>Messages 1–1 of 1</b>")
    assert "<b>Ben</b> · " in reply.text
    assert f'<a href="https://t.me/c/1234567/{deploy}">open</a>' in reply.text
    assert "The <b>deploy</b> failed: rollback &lt;now&gt;" in reply.text

    private = await bus.reply_to(await bus.command("find", "DEPLOY", chat=PRIVATE))
    assert "deploy</b> elsewhere" in private.text and "t.me" not in private.text

    nothing = await bus.reply_to(await bus.command("find", "lunch", chat=PRIVATE))
    assert nothing.text.startswith("No message in this chat matches")


async def test_forgetme_removes_the_users_indexed_messages(
    start: Start, bus: Bus, seeded: Settings
) -> None:
    app = await start(seeded)
    await bus.message("my secret plan", chat=SUPERGROUP, user=7)
    await bus.message("another secret", chat=SUPERGROUP, user=8, name="Eve")
    index = app.state.index
    await eventually(lambda: index.message_count() == 2)
    await bus.forget(7)
    await eventually(lambda: index.message_count() == 1)
    reply = await bus.reply_to(await bus.command("find", "secret", chat=SUPERGROUP))
    assert "1–1 of 1" in reply.text and "<b>Eve</b>" in reply.text


async def test_expired_page_button_is_answered_not_ignored(
    start: Start, bus: Bus, seeded: Settings
) -> None:
    await start(seeded)
    await bus.press("AAAAAAAA:1")
    [answer] = await bus.actions(1)
    assert isinstance(answer, AnswerCallback) and answer.show_alert
    assert answer.text == "This search has expired: run it again."


async def test_bundled_kb_seeds_an_empty_index_which_survives_a_restart(
    start: Start, bus: Bus, settings: Settings
) -> None:
    first = await start(settings)
    documents = first.state.index.document_count()
    assert documents >= 30
    await bus.message("notes from the retro", chat=SUPERGROUP)
    await eventually(lambda: first.state.index.message_count() == 1)
    reply = await bus.reply_to(await bus.command("search", "jetstream consumers"))
    assert "JetStream" in reply.text
    await first.stop()

    second = await start(settings)
    assert second.state.index.document_count() == documents  # reopened, not re-seeded
    again = await bus.reply_to(await bus.command("find", "retro", chat=SUPERGROUP))
    assert "notes from the <b>retro</b>" in again.text
    assert datetime.now(UTC).strftime("%Y-%m-%d") in again.text
