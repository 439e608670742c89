"""Search as a Telegram user sees it: sandbox -> gateway -> search service -> back."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.search.service import service as search_service

from .conftest import Chat, Stack, StartStack

# the whole stack (sandbox, gateway, services) per test: in `make test`, not the fast loop
pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]

ANA: dict[str, Any] = {"id": 5101, "first_name": "Ana"}
BEN: dict[str, Any] = {"id": 5102, "first_name": "Ben"}
TEAM = -100510  # Ana's and Ben's group
HEADER_RE = re.compile(r"(Results|Resultados) (\d+)–(\d+) (of|de) (\d+)")


def buttons(event: dict[str, Any]) -> list[str]:
    """The labels of the inline keyboard under the bot's message (none: [])."""
    markup = event["message"].get("reply_markup") or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


def marked(event: dict[str, Any], kind: str) -> list[str]:
    """The pieces of the bot's text shown with entity ``kind`` (e.g. ``"bold"``)."""
    message = event["message"]
    # Entity offsets count UTF-16 code units, as Telegram's do.
    units = message["text"].encode("utf-16-le")
    return [
        units[2 * e["offset"] : 2 * (e["offset"] + e["length"])].decode("utf-16-le")
        for e in message.get("entities", [])
        if e["type"] == kind
    ]


def header(event: dict[str, Any]) -> tuple[int, int, int]:
    """(first, last, total) of a results page."""
    match = HEADER_RE.search(event["message"]["text"])
    assert match is not None, event["message"]["text"]
    return int(match.group(2)), int(match.group(3)), int(match.group(5))


@pytest.fixture
async def stack(start_stack: StartStack) -> Stack:
    """Gateway + search service (which loads the bundled docs/kb on its first start)."""
    return await start_stack(search_service)


async def test_search_pages_with_next_button_edited_in_place(stack: Stack) -> None:
    chat = Chat(stack, ANA["id"])
    first = await chat.ask("/search nats", ANA)
    assert header(first)[:2] == (1, 5)
    total = header(first)[2]
    assert total > 5, "the bundled knowledge base should have more than one page about NATS"
    assert buttons(first) == ["Next ▶"]
    assert "<b>" not in first["message"]["text"]  # HTML was rendered, not shown raw
    message_id = first["message"]["message_id"]

    await stack.client.press(
        stack.bot.id, chat_id=chat.chat_id, message_id=message_id, user=ANA, label="Next ▶"
    )
    start = chat.seen
    second = await chat.next("edit")
    assert second["message"]["message_id"] == message_id  # the same message, edited
    assert header(second) == (6, min(10, total), total)
    assert buttons(second)[0] == "◀ Previous"
    assert second["message"]["text"] != first["message"]["text"]
    chat.seen = start
    answer = await chat.next("callback_answer")  # the button's spinner stops
    assert not answer.get("show_alert")
    # Paging never posts a new message.
    assert not [e for e in await chat.rest() if e["kind"] == "message"]


async def test_search_ignores_spanish_accents(stack: Stack) -> None:
    chat = Chat(stack, ANA["id"])
    event = await chat.ask("/search cancion", ANA, lang="es")
    reply = event["message"]["text"]
    assert "Resultados 1–" in reply
    # Ranked: the document about the song comes first, its accented word highlighted.
    assert "\n1. Una canción para probar las tildes\n" in reply
    assert "canción" in marked(event, "bold")
    # The plural finds the same document through the Spanish stem.
    reply = await chat.reply_text("/search canciones", ANA, lang="es")
    assert "Una canción para probar las tildes" in reply


BAD_QUERIES = [
    ('"key value', "A quote is not closed"),
    ("OR", "need a word on each side"),
    ("x" * 400, "That query is too long"),
    ("-jetstream", "Add at least one word to look for"),
    ("", "Usage: /search QUERY"),
]


async def test_bad_queries_get_advice_and_the_service_keeps_working(stack: Stack) -> None:
    chat = Chat(stack, ANA["id"])
    for query, advice in BAD_QUERIES:
        reply = await chat.reply_text(f"/search {query}".strip(), ANA)
        assert advice in reply, (query[:20], reply)
        assert "went wrong" not in reply
    # The same instance still answers a good query.
    assert "Results 1–" in await chat.reply_text("/search jetstream", ANA)


async def test_find_searches_only_this_chats_history(stack: Stack) -> None:
    await stack.client.create_group(stack.bot.id, TEAM, "Team", admins=[ANA], members=[BEN])
    team, private = Chat(stack, TEAM), Chat(stack, BEN["id"])
    await team.write("The deploy is on friday after lunch", ANA)
    await team.write("unrelated chatter about coffee", BEN)
    await private.write("my own deploy notes say monday", BEN)
    # The gateway fans plain text out to the service; wait until all three are indexed.
    await stack.wait_handled("search", "message", 3)

    found = (await team.ask("/find deploy", BEN))["message"]["text"]
    assert "Messages 1–1 of 1" in found
    assert "friday" in found and "Ana" in found
    assert "monday" not in found  # Ben's private chat is not the group's history

    found = await private.reply_text("/find deploy", BEN)
    assert "monday" in found and "friday" not in found

    nothing = await team.reply_text("/find monday", ANA)
    assert nothing.startswith("No message in this chat matches")
