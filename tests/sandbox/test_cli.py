"""`botbus chat --send` against a tiny bot running in the test, and `botbus sandbox`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner, Result
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from botbus.sandbox.chat import chat
from tests.sandbox.conftest import World


async def _tiny_bot(world: World) -> None:
    """Echo texts; /menu shows a button; a press edits the message and answers."""
    offset = 0
    while True:
        for update in await world.ptb.get_updates(offset=offset, timeout=5):
            offset = update.update_id + 1
            if update.message and update.message.text == "/menu":
                markup = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="go")]])
                await update.message.reply_text("Menu", reply_markup=markup)
            elif update.message and update.message.text:
                lang = update.message.from_user.language_code if update.message.from_user else ""
                await update.message.reply_text(f"echo ({lang}): {update.message.text}")
            elif update.callback_query:
                await update.callback_query.answer("went")
                await update.callback_query.edit_message_text("Gone")


@pytest.fixture
async def running_bot(world: World) -> AsyncIterator[World]:
    task = asyncio.create_task(_tiny_bot(world))
    try:
        yield world
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_chat(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, chat, list(args))


async def test_chat_send_prints_the_answer(running_bot: World) -> None:
    url = running_bot.server.base_url
    result = await run_chat("--url", url, "--send", "hola", "--lang", "es", "--timeout", "5")
    assert result.exit_code == 0, result.output
    assert "bot: echo (es): hola" in result.output


async def test_chat_lang_takes_any_language_code(running_bot: World) -> None:
    url = running_bot.server.base_url
    result = await run_chat("--url", url, "--send", "olá", "--lang", "pt-BR", "--timeout", "5")
    assert result.exit_code == 0, result.output
    assert "bot: echo (pt-BR): olá" in result.output
    result = await run_chat("--url", url, "--send", "salut", "--lang", "fr", "--timeout", "5")
    assert "bot: echo (fr): salut" in result.output
    refused = await run_chat("--url", url, "--send", "x", "--lang", "english please")
    assert refused.exit_code == 2 and "not a language code" in refused.output
    assert "any language code" in (await run_chat("--help")).output


async def test_chat_json_and_press(running_bot: World) -> None:
    url = running_bot.server.base_url
    result = await run_chat("--url", url, "--send", "/menu", "--press", "Go", "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "message" and events[0]["message"]["text"] == "Menu"
    assert "callback_answer" in kinds and "edit" in kinds
    assert next(e for e in events if e["kind"] == "edit")["message"]["text"] == "Gone"


async def test_chat_exits_non_zero_when_nobody_answers_a_command(world: World) -> None:
    url = world.server.base_url
    result = await run_chat("--url", url, "--send", "/anyone", "--timeout", "0.5")
    assert result.exit_code == 1
    assert "did not answer '/anyone'" in result.output


async def test_a_command_for_another_bot_is_said_to_be_ignored(world: World) -> None:
    url = world.server.base_url
    result = await run_chat("--url", url, "--send", "/echo@otherbot hi", "--timeout", "0.5")
    assert result.exit_code == 0, result.output
    assert "addressed to @otherbot, not to this bot (@sandbox_test_bot)" in result.output
    assert "gateway" not in result.output
    # Named for this bot (any case), it is a command like any other.
    mine = await run_chat("--url", url, "--send", "/anyone@Sandbox_Test_Bot", "--timeout", "0.5")
    assert mine.exit_code == 1 and "is the gateway" in mine.output


async def test_unanswered_plain_text_is_not_an_error(world: World) -> None:
    url = world.server.base_url
    result = await run_chat("--url", url, "--send", "anyone?", "--timeout", "0.5")
    assert result.exit_code == 0, result.output
    assert "no reply: the bot does not answer plain text here" in result.output


async def test_chat_without_url_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_API_URL", raising=False)
    monkeypatch.chdir("/")  # no .env file here
    result = await run_chat("--send", "x")
    assert result.exit_code != 0
    assert "pass --url" in result.output


async def test_chat_with_several_bots_asks_for_bot_id(world: World) -> None:
    await world.client.create_bot(username="another_bot")
    result = await run_chat("--url", world.server.base_url, "--send", "x")
    assert result.exit_code != 0 and "--bot-id" in result.output
