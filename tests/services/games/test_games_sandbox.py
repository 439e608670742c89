"""Games through the whole stack: the sandbox (local Telegram), the real gateway, the bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from botbus.gateway import Gateway
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxBot, SandboxClient, SandboxServer
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from services.games.service import service as games_service
from services.games.trivia import load_bank

ANA_ID = 3001
ANA = {"id": ANA_ID, "first_name": "Ana"}
BEN = {"id": 3002, "first_name": "Ben"}
GROUP_ID = -100300


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxServer]:
    """Local Telegram without flood limits (a game is a burst of edits)."""
    server = SandboxServer(Limits(enabled=False))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stack(
    tmp_path: Path, nats_server: NatsServer, sandbox: SandboxServer
) -> AsyncIterator[tuple[SandboxClient, SandboxBot]]:
    """Gateway + games service running against the sandbox; yields the users' client."""
    bot = sandbox.add_bot(username="botbus_games_test_bot")
    settings: Settings = load_settings(
        _env_file=None,
        BOTBUS_DATA_DIR=str(tmp_path / "data"),
        NATS_URL=nats_server.url,
        TELEGRAM_BOT_TOKEN=bot.token,
        TELEGRAM_API_URL=sandbox.api_url,
        BOTBUS_GATEWAY_HTTP="127.0.0.1:0",
    )
    client = SandboxClient(sandbox.base_url)
    try:
        async with (
            Gateway(settings, poll_timeout=5, discovery_interval=0.3) as gateway,
            ServiceApp(games_service, settings, url=nats_server.url),
        ):
            assert gateway.registry is not None
            for _ in range(200):  # the gateway discovers the service within a few polls
                if gateway.registry.is_live("games"):
                    break
                await asyncio.sleep(0.05)
            yield client, bot
    finally:
        await client.close()


class Room:
    """One chat as its users see it: reads the bot's events in order, never twice."""

    def __init__(self, client: SandboxClient, bot: SandboxBot, chat: int) -> None:
        self.client, self.bot, self.chat = client, bot, chat
        self.seen = 0  # seq of the last event read

    async def next(self, kind: str) -> Any:
        """The next event of ``kind`` (skipping others)."""
        [event] = await self.client.wait_for(
            self.bot.id, self.chat, kind=kind, after=self.seen, timeout=10
        )
        self.seen = event["seq"]
        return event

    async def press(
        self, board: Any, label: str, user: Any, *, lang: str = "en", refused: bool = False
    ) -> tuple[str, Any | None]:
        """Press ``label`` on ``board``: the answer's text and the edit (None if refused)."""
        message_id = board["message"]["message_id"]
        await self.client.press(
            self.bot.id, chat_id=self.chat, message_id=message_id, user=user, label=label, lang=lang
        )
        start = self.seen
        answer = await self.next("callback_answer")
        if refused:
            # The service answers a refusal and stores nothing else for it.
            later = await self.client.messages(self.bot.id, self.chat, after=start, timeout=0)
            assert not [e for e in later if e["kind"] == "edit"], later
            return str(answer["text"]), None
        self.seen = start
        edit = await self.next("edit")
        self.seen = max(self.seen, answer["seq"])
        return str(answer["text"]), edit


@pytest.mark.slow  # 5 s: a whole game through Telegram
async def test_two_player_tictactoe_in_a_group_through_telegram(
    stack: tuple[SandboxClient, SandboxBot],
) -> None:
    client, bot = stack
    room = Room(client, bot, GROUP_ID)
    await client.create_group(bot.id, GROUP_ID, "Games", admins=[ANA], members=[BEN])
    await client.send_text(bot.id, "/tictactoe", user=ANA, chat_id=GROUP_ID)
    board = await room.next("message")
    message_id = board["message"]["message_id"]
    keys = [b["text"] for row in board["message"]["reply_markup"]["inline_keyboard"] for b in row]
    assert keys == ["·"] * 9
    # Cells by 1-based number: Ana takes the middle column (5, 2, 8), Ben 1 and 3.
    for user, cell in ((ANA, "5"), (BEN, "1"), (ANA, "2"), (BEN, "3")):
        notice, edit = await room.press(board, cell, user)
        assert notice == "" and edit is not None
        assert edit["message"]["message_id"] == message_id  # edited in place, never re-sent
        board = edit
    # Ben presses out of turn: refused with a notice, nothing edited.
    notice, _ = await room.press(board, "9", BEN, refused=True)
    assert notice == "It is not your turn."
    cell_9 = board["message"]["reply_markup"]["inline_keyboard"][2][2]["callback_data"]
    notice, edit = await room.press(board, "8", ANA)
    assert edit is not None and edit["message"]["text"].endswith("Ana wins!")
    # The finished board loses its buttons and shows the grid in its text instead.
    assert "reply_markup" not in edit["message"]
    assert "⭕❌⭕" in edit["message"]["text"].splitlines()
    # A client still showing the old buttons is told the game is over.
    await client.press(bot.id, chat_id=GROUP_ID, message_id=message_id, user=BEN, data=cell_9)
    assert (await room.next("callback_answer"))["text"] == "This game is over."


async def test_trivia_in_spanish_through_telegram(stack: tuple[SandboxClient, SandboxBot]) -> None:
    client, bot = stack
    await client.send_text(bot.id, "/trivia 1", user=ANA, lang="es")
    room = Room(client, bot, ANA_ID)
    board = await room.next("message")
    text = board["message"]["text"]
    assert "Pregunta 1/1" in text
    question = {q.question: q for q in load_bank("es")}[text.splitlines()[-1]]
    notice, edit = await room.press(board, str(question.answer + 1), ANA, lang="es")
    assert notice == "✅ ¡Correcto!" and edit is not None
    assert "🏁 ¡Ronda terminada!" in edit["message"]["text"]
    assert "reply_markup" not in edit["message"]  # the finished round has no buttons
    await client.send_text(bot.id, "/leaderboard", user=ANA, lang="es")
    scores = await room.next("message")
    assert scores["message"]["text"] == "🏆 Clasificación\n🥇 Ana — 1"
