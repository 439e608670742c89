"""Sentiment as Telegram users see it: scores, a mood chart photo, and opting out."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image

from services.sentiment.service import service as sentiment_service

from .conftest import ADMIN, Chat, Stack, StartStack

# the whole stack (sandbox, gateway, services) per test: in `make test`, not the fast loop
pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]

ANA: dict[str, Any] = {"id": 5301, "first_name": "Ana"}
BEN: dict[str, Any] = {"id": 5302, "first_name": "Ben"}
TEAM = -100530
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COUNT_RE = re.compile(r"over (\d+) messages")


@pytest.fixture
async def stack(start_stack: StartStack) -> Stack:
    """Gateway + sentiment service; ADMIN is a bot admin."""
    return await start_stack(sentiment_service)


async def mood_count(stack: Stack, team: Chat) -> int:
    """Ask ``/mood`` in ``team``: check the photo is a real PNG; the messages it counts."""
    await team.write("/mood", BEN)
    photo = (await team.next("message"))["message"]
    assert "photo" in photo and "text" not in photo, photo  # sendPhoto, not a text message
    data = await stack.client.file(stack.bot.id, photo["photo"][-1]["file_id"])
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.verify()  # the whole file decodes, not only its header
    caption = str(photo["caption"])
    assert caption.startswith("Mood of Team in "), caption
    match = COUNT_RE.search(caption)
    return int(match.group(1)) if match else 0


async def test_sentiment_scores_text_with_its_driving_words(stack: Stack) -> None:
    ana = Chat(stack, ANA["id"])
    reply = await ana.reply_text("/sentiment I love this", ANA)
    verdict, drivers = reply.splitlines()
    assert verdict.startswith("Sentiment: positive (compound +0.")
    assert verdict.endswith("language en)")
    assert drivers.startswith("Driven by: love (+")

    reply = await ana.reply_text(
        "/sentiment Odio esta lluvia, qué día tan horrible", ANA, lang="es"
    )
    assert reply.startswith("Sentimiento: negativo"), reply
    assert "idioma es" in reply and "Palabras clave:" in reply

    usage = await ana.reply_text("/sentiment", ANA)
    assert usage.startswith("Usage: /sentiment TEXT")


async def test_mood_is_a_png_photo_and_opting_out_stops_scoring(stack: Stack) -> None:
    await stack.client.create_group(stack.bot.id, TEAM, "Team", admins=[ADMIN], members=[ANA, BEN])
    team = Chat(stack, TEAM)
    for text, user in (
        ("What a wonderful release, great work everyone!", ANA),
        ("This build is terrible and I hate flaky tests", BEN),
        ("Lunch is at noon", ANA),
    ):
        await team.write(text, user)
    await stack.wait_handled("sentiment", "message", 3)
    assert await mood_count(stack, team) == 3

    # Only an admin may switch a group off (ADMIN is the group's and the bot's admin);
    # a plain member is told so.
    refused = await team.reply_text("/sentiment off", BEN)
    assert "admin can switch sentiment scoring on or off" in refused  # Ben is neither admin
    off = await team.reply_text("/sentiment off", ADMIN)
    assert off.startswith("Sentiment scoring is OFF for this chat")
    for text in ("I absolutely love this!", "Worst day ever"):
        await team.write(text, ANA)
    await stack.wait_handled("sentiment", "message", 5)
    assert await mood_count(stack, team) == 3  # the two messages were not scored

    assert (await team.reply_text("/sentiment on", ADMIN)).startswith("Sentiment scoring is ON")
    await team.write("Back to happy scoring", ANA)
    await stack.wait_handled("sentiment", "message", 6)
    assert await mood_count(stack, team) == 4


async def test_a_gloomy_group_alerts_the_bot_admin_in_private(stack: Stack) -> None:
    await stack.client.create_group(stack.bot.id, TEAM, "Team", admins=[ADMIN], members=[BEN])
    team, admin_dm = Chat(stack, TEAM), Chat(stack, ADMIN["id"])
    # A bot may write to a person only after they started a private chat with it.
    assert "/sentiment" in await admin_dm.reply_text("/start", ADMIN)
    gloom = ["I hate this", "This is awful", "Terrible, horrible day", "So sad and angry", "Awful"]
    for text in gloom:
        await team.write(text, BEN)
    alert = (await admin_dm.next("message"))["message"]["text"]
    assert alert.startswith("Mood alert: the mood of 'Team' dropped to -0."), alert
    assert f"({len(gloom)} messages, {len(gloom)} negative)" in alert
    # The group itself is not told, and the alert is not repeated.
    await stack.wait_handled("sentiment", "message", len(gloom))
    assert not await team.rest()
    assert not await admin_dm.rest(0.5)


async def test_mood_me_in_a_group_counts_that_group_only(stack: Stack) -> None:
    await stack.client.create_group(stack.bot.id, TEAM, "Team", admins=[ADMIN], members=[ANA])
    team, ana_dm = Chat(stack, TEAM), Chat(stack, ANA["id"])
    for text in ("I love my private notes", "What a great morning", "Happy happy"):
        await ana_dm.write(text, ANA)
    await team.write("Nice work, team", ANA)
    await stack.wait_handled("sentiment", "message", 4)
    await team.write("/mood me", ANA)
    chart = (await team.next("message"))["message"]
    caption = str(chart.get("caption"))
    assert caption.startswith("Mood of Ana in "), chart
    assert " over 1 messages" in caption  # the group's message only, not the private ones
    await ana_dm.write("/mood me", ANA)
    chart = (await ana_dm.next("message"))["message"]
    assert " over 4 messages" in str(chart.get("caption")), chart  # in private: all of Ana's


async def test_an_empty_mood_is_a_sentence_not_an_empty_chart(stack: Stack) -> None:
    await stack.client.create_group(stack.bot.id, TEAM, "Team", admins=[ADMIN], members=[BEN])
    team = Chat(stack, TEAM)
    reply = (await team.ask("/mood week", BEN))["message"]
    assert "photo" not in reply
    assert reply["text"].startswith("No message in this chat was scored in the last 7 days")
    mine = (await team.ask("/mood me", BEN))["message"]
    assert mine["text"].startswith("None of your messages here were scored")
