"""Every button press of every bundled service with buttons is answered exactly once.

A press left unanswered keeps a spinner on the user's button until Telegram
gives up; answered twice, Telegram refuses the second answer. Valid, stale,
malformed, finished-game and inline-mode presses all count here: the sandbox
records each answerCallbackQuery call, so "once" is checked on what reached
Telegram.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.games.service import service as games_service
from services.search.service import service as search_service

from .conftest import Chat, Stack, StartStack

# the whole stack (sandbox, gateway, services) per test: in `make test`, not the fast loop
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ANA: dict[str, Any] = {"id": 5601, "first_name": "Ana"}


class Presses:
    """Button presses made by one user, and the answers Telegram got for them."""

    def __init__(self, stack: Stack, chat: Chat) -> None:
        self.stack, self.chat = stack, chat
        self.ids: list[str] = []

    async def press(self, message_id: int, **how: Any) -> None:
        """Press a button of the bot's message ``message_id`` (by ``label`` or ``data``)."""
        pressed = await self.stack.client.press(
            self.stack.bot.id, chat_id=self.chat.chat_id, message_id=message_id, user=ANA, **how
        )
        self.ids.append(pressed["callback_query_id"])

    async def press_inline(self, data: str) -> None:
        """Press a button under an inline-mode message (no chat, no message)."""
        pressed = await self.stack.client.press_inline(self.stack.bot.id, data, user=ANA)
        self.ids.append(pressed["callback_query_id"])

    async def answered_once(self, service: str) -> list[dict[str, Any]]:
        """Wait for every press's answer; check no press got two. The answers, in order."""
        client, bot = self.stack.client, self.stack.bot
        events = await client.wait_for(
            bot.id, ANA["id"], kind="callback_answer", count=len(self.ids), timeout=15
        )
        await self.stack.wait_handled(service, "callback", len(self.ids))
        by_id = {e["callback_query_id"]: e for e in events}
        assert sorted(by_id) == sorted(self.ids)
        # Telegram was asked once per press: no second answer (it would be refused).
        calls = (await client.stats(bot.id))["methods"].get("answerCallbackQuery", 0)
        assert calls == len(self.ids), f"{calls} answers for {len(self.ids)} presses"
        return [by_id[i] for i in self.ids]


async def test_every_games_press_is_answered_once(start_stack: StartStack) -> None:
    stack = await start_stack(games_service)
    chat = Chat(stack, ANA["id"])
    presses = Presses(stack, chat)
    board = (await chat.ask("/tictactoe", ANA))["message"]
    await presses.press(board["message_id"], label="5")  # a move
    await presses.press(board["message_id"], label="5")  # the same cell: a stale board
    await presses.press(board["message_id"], data="games:not-a-move")  # malformed
    assert (await chat.reply_text("/stop", ANA)).endswith("Game stopped.")
    await presses.press(board["message_id"], data=f"games:t:{'a' * 6}:1:0")  # game over
    await presses.press_inline("games:t:abcdef:0:4")  # inline mode: nothing to edit
    answers = await presses.answered_once("games")
    assert answers[0]["text"] == ""  # a move just stops the spinner; the board shows it
    assert all(a["text"] for a in answers[1:]), answers  # refusals say why


async def test_every_search_press_is_answered_once(start_stack: StartStack) -> None:
    stack = await start_stack(search_service)
    chat = Chat(stack, ANA["id"])
    presses = Presses(stack, chat)
    results = (await chat.ask("/search nats", ANA))["message"]
    await presses.press(results["message_id"], label="Next ▶")
    await presses.press(results["message_id"], data="search:q0000:2")  # an expired search
    await presses.press(results["message_id"], data="search:???")  # malformed
    await presses.press_inline("search:q0000:1")  # inline mode
    answers = await presses.answered_once("search")
    assert answers[0]["text"] == ""
    assert [a["text"] for a in answers[1:]] == ["This search has expired: run it again."] * 3


def has_buttons(message: dict[str, Any]) -> bool:
    """Whether the bot's message shows an inline keyboard."""
    return bool((message.get("reply_markup") or {}).get("inline_keyboard"))


async def test_stopped_and_replaced_boards_lose_their_buttons(start_stack: StartStack) -> None:
    stack = await start_stack(games_service)
    chat = Chat(stack, ANA["id"])
    # Never pressed: the service learns the board's id from its delivery receipt.
    board = (await chat.ask("/tictactoe", ANA))["message"]
    assert has_buttons(board)
    await stack.wait_handled("games", "delivery", 1)
    before = chat.seen
    hangman = (await chat.ask("/hangman", ANA))["message"]  # replaces the tic-tac-toe game
    replaced = await edit_of(stack, chat, board["message_id"], after=before)
    assert not has_buttons(replaced) and replaced["text"].endswith("⏹ Replaced by a new game.")
    await stack.wait_handled("games", "delivery", 2)
    before = chat.seen
    assert (await chat.reply_text("/stop", ANA)).endswith("Game stopped.")
    stopped = await edit_of(stack, chat, hangman["message_id"], after=before)
    assert not has_buttons(stopped)
    assert "The word was" in stopped["text"] and "Out of lives" not in stopped["text"]


async def edit_of(stack: Stack, chat: Chat, message_id: int, *, after: int) -> dict[str, Any]:
    """The first edit of the bot's message ``message_id`` after event ``after``."""
    edits = await stack.client.wait_for(
        stack.bot.id, chat.chat_id, kind="edit", after=after, timeout=10
    )
    [edit] = [e["message"] for e in edits if e["message"]["message_id"] == message_id]
    assert isinstance(edit, dict)
    return edit
