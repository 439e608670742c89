"""Users send more than text: photos, documents, locations, stickers, replies and edits.

Each reaches the bot in the update shape Telegram gives (read here through
python-telegram-bot's own parsing), and files can be downloaded by the bot.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from click.testing import CliRunner
from telegram import Update

from botbus.sandbox import UserApiError
from botbus.sandbox.chat import chat
from tests.sandbox.conftest import USER, World, png

GROUP = -100321


async def _next_update(world: World, offset: int = 0) -> Update:
    (update,) = await world.ptb.get_updates(offset=offset, timeout=5)
    await world.ptb.get_updates(offset=update.update_id + 1, timeout=0)  # confirm it
    return update


async def test_a_photo_with_caption_reaches_the_bot_and_can_be_downloaded(world: World) -> None:
    sent = await world.client.send_photo(world.bot.id, png(300, 200), caption="see https://x.org")
    message = (await _next_update(world)).message
    assert message is not None and message.message_id == sent["message_id"]
    assert [(p.width, p.height) for p in message.photo] == [(90, 60), (300, 200)]
    assert message.caption == "see https://x.org"
    assert [e.type for e in message.caption_entities] == ["url"]
    file = await world.ptb.get_file(message.photo[-1].file_id)
    assert bytes(await file.download_as_bytearray()) == png(300, 200)


async def test_a_document_keeps_its_name_type_and_bytes(world: World) -> None:
    data = b"name,score\nana,3\n"
    await world.client.send_document(world.bot.id, data, "scores.csv", caption="results")
    message = (await _next_update(world)).message
    assert message is not None and message.document is not None
    assert message.document.file_name == "scores.csv"
    assert message.document.mime_type == "text/csv"
    assert message.document.file_size == len(data)
    assert message.caption == "results"
    file = await world.ptb.get_file(message.document.file_id)
    assert bytes(await file.download_as_bytearray()) == data


async def test_location_sticker_and_reply_in_a_group(world: World) -> None:
    await world.client.create_group(world.bot.id, GROUP, "Team", admins=[USER])
    first = await world.client.send_text(world.bot.id, "meet here?", chat_id=GROUP)
    await world.client.send_location(world.bot.id, 40.4168, -3.7038, chat_id=GROUP)
    await world.client.send_sticker(world.bot.id, "👍", chat_id=GROUP, reply_to=first["message_id"])
    updates = await world.ptb.get_updates(timeout=5)
    messages = [u.message for u in updates if u.message is not None]
    location, sticker = messages[-2], messages[-1]
    assert location.location is not None
    assert (location.location.latitude, location.location.longitude) == (40.4168, -3.7038)
    assert sticker.sticker is not None and sticker.sticker.emoji == "👍"
    assert sticker.sticker.type == "regular" and sticker.sticker.width == 512
    assert sticker.reply_to_message is not None
    assert sticker.reply_to_message.text == "meet here?"


async def test_an_edit_is_an_edited_message_update(world: World) -> None:
    sent = await world.client.send_text(world.bot.id, "helo")
    first = await _next_update(world)
    await world.client.edit_text(world.bot.id, USER, sent["message_id"], "hello")
    edited = (await _next_update(world, first.update_id + 1)).edited_message
    assert edited is not None and edited.message_id == sent["message_id"]
    assert edited.text == "hello" and edited.edit_date is not None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"text": "a", "location": {"latitude": 1, "longitude": 2}}, "exactly one of"),
        ({"photo": "no-such-file"}, "file_id of an upload"),
        ({"location": {"latitude": 91, "longitude": 0}}, "within ±90"),
        ({"location": "here"}, "'location' must be"),
        ({"sticker": ""}, "'sticker' must be an emoji"),
        ({"text": "x" * 5000}, "longer than 4096"),
    ],
)
async def test_bad_inputs_are_refused_with_what_to_send(
    world: World, body: dict[str, Any], error: str
) -> None:
    with pytest.raises(UserApiError, match=error):
        await world.client._request("POST", f"/bots/{world.bot.id}/messages", json=body)


async def test_bad_uploads_and_edits_are_refused(world: World) -> None:
    with pytest.raises(UserApiError, match="must be a PNG, JPEG"):
        await world.client.send_photo(world.bot.id, b"not an image", filename="x.png")
    with pytest.raises(UserApiError, match="multipart/form-data"):
        await world.client._request("POST", f"/bots/{world.bot.id}/files", json={})
    theirs = await world.client.send_text(world.bot.id, "mine", user=2002)
    with pytest.raises(UserApiError, match="not user 1001's to edit"):
        await world.client.edit_text(world.bot.id, 2002, theirs["message_id"], "yours")
    with pytest.raises(UserApiError, match="same as the old one"):
        await world.client.edit_text(world.bot.id, 2002, theirs["message_id"], "mine", user=2002)


async def _answer_late(world: World) -> None:
    """Hold /later; on /now, first answer /later (late), then /now."""
    held: int | None = None
    offset = 0
    while True:
        for update in await world.ptb.get_updates(offset=offset, timeout=5):
            offset = update.update_id + 1
            message = update.message
            if message is None:
                continue
            if message.text == "/later":
                held = message.message_id
            elif message.text == "/now":
                await world.ptb.send_message(USER, "late answer", reply_to_message_id=held)
                await message.reply_text("answer to now", reply_to_message_id=message.message_id)
                await world.ptb.send_message(USER, "and more for now")


async def test_chat_send_prints_the_answer_to_its_own_message(world: World) -> None:
    bot = asyncio.create_task(_answer_late(world))
    try:
        await world.client.send_text(world.bot.id, "/later")
        args = ["--url", world.server.base_url, "--send", "/now", "--timeout", "5"]
        result = await asyncio.to_thread(CliRunner().invoke, chat, args)
    finally:
        bot.cancel()
    assert result.exit_code == 0, result.output
    assert "answer to now" in result.output and "and more for now" in result.output
    assert "late answer" not in result.output
