"""A plain python-telegram-bot Bot drives every sandbox method and meets every refusal."""

from __future__ import annotations

import asyncio

import pytest
import telegram
from telegram import (
    BotCommand,
    BotCommandScopeAllGroupChats,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    ReplyParameters,
)
from telegram.error import BadRequest, Conflict, EndPointNotFound, Forbidden, InvalidToken

from tests.sandbox.conftest import USER, World, png


def keyboard(*labels: str) -> InlineKeyboardMarkup:
    """One row of callback buttons whose data is the lower-cased label."""
    row = [InlineKeyboardButton(x, callback_data=x.lower()) for x in labels]
    return InlineKeyboardMarkup([row])


async def test_get_me_describes_the_registered_bot(world: World) -> None:
    me = await world.ptb.get_me()
    assert me.id == world.bot.id
    assert me.is_bot
    assert me.username == "sandbox_test_bot"
    assert me.can_join_groups is True
    assert me.supports_inline_queries is False


async def test_unknown_token_is_unauthorized(world: World) -> None:
    stranger = telegram.Bot("123:not-registered", base_url=world.server.api_url)
    with pytest.raises(InvalidToken, match="Unauthorized"):
        await stranger.get_me()


async def test_unknown_method_is_not_found(world: World) -> None:
    with pytest.raises(EndPointNotFound):
        await world.ptb.do_api_request("sendTelepathicMessage", api_kwargs={"chat_id": USER})


async def test_user_text_arrives_with_command_entity_and_language(world: World) -> None:
    await world.client.send_text(world.bot.id, "/start now", user=USER, lang="es")
    updates = await world.ptb.get_updates(timeout=2)
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None
    assert message.text == "/start now"
    assert message.chat.type == "private" and message.chat.id == USER
    assert message.from_user is not None and message.from_user.language_code == "es"
    assert message.parse_entities(["bot_command"]) == {message.entities[0]: "/start"}


async def test_update_ids_increase_by_one_and_offset_confirms(world: World) -> None:
    first = await world.user_says("one")
    second = await world.user_says("two")
    third = await world.user_says("three")
    assert (second, third) == (first + 1, first + 2)
    updates = await world.ptb.get_updates()
    assert [u.update_id for u in updates] == [first, second, third]
    # unconfirmed updates come again; an offset confirms everything below it
    assert len(await world.ptb.get_updates()) == 3
    updates = await world.ptb.get_updates(offset=second + 1)
    assert [u.update_id for u in updates] == [third]
    assert await world.ptb.get_updates(offset=third + 1) == ()


async def test_negative_offset_keeps_only_the_last_updates(world: World) -> None:
    ids = [await world.user_says(f"m{i}") for i in range(5)]
    updates = await world.ptb.get_updates(offset=-2)
    assert [u.update_id for u in updates] == ids[-2:]
    assert [u.update_id for u in await world.ptb.get_updates()] == ids[-2:]


async def test_limit_returns_the_oldest_updates_first(world: World) -> None:
    ids = [await world.user_says(f"m{i}") for i in range(4)]
    updates = await world.ptb.get_updates(limit=2)
    assert [u.update_id for u in updates] == ids[:2]


async def test_long_poll_returns_as_soon_as_a_user_writes(world: World) -> None:
    poll = asyncio.create_task(world.ptb.get_updates(timeout=10))
    await asyncio.sleep(0.1)  # give the poll time to reach the server
    assert not poll.done()
    await world.user_says("hello")
    updates = await asyncio.wait_for(poll, 5)
    assert updates[0].message is not None and updates[0].message.text == "hello"


async def test_long_poll_with_nothing_returns_empty_after_timeout(world: World) -> None:
    assert await world.ptb.get_updates(timeout=1) == ()


async def test_second_poller_terminates_the_first_with_conflict(world: World) -> None:
    other = telegram.Bot(world.bot.token, base_url=world.server.api_url)
    first = asyncio.create_task(world.ptb.get_updates(timeout=10))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(other.get_updates(timeout=1))
    with pytest.raises(Conflict, match="terminated by other getUpdates request"):
        await asyncio.wait_for(first, 5)
    assert await second == ()


async def test_allowed_updates_filters_update_types(world: World) -> None:
    await world.ptb.get_updates(allowed_updates=["callback_query"])
    await world.user_says("ignored")
    assert await world.ptb.get_updates() == ()
    await world.ptb.get_updates(allowed_updates=[])
    await world.user_says("seen")
    (update,) = await world.ptb.get_updates()
    assert update.message is not None and update.message.text == "seen"


async def test_send_message_is_seen_by_the_user(world: World) -> None:
    await world.user_says("hi")
    sent = await world.ptb.send_message(USER, "Hello <b>you</b>", parse_mode="HTML")
    assert sent.text == "Hello you"
    assert sent.entities[0].type == "bold" and sent.entities[0].offset == 6
    (event,) = await world.client.wait_for(world.bot.id, USER)
    assert event["kind"] == "message"
    assert event["message"]["message_id"] == sent.message_id
    assert event["message"]["text"] == "Hello you"


async def test_send_to_unknown_chat_is_chat_not_found(world: World) -> None:
    with pytest.raises(BadRequest, match="Chat not found"):
        await world.ptb.send_message(424242, "anyone?")


async def test_send_to_blocked_user_is_forbidden(world: World) -> None:
    await world.user_says("hi")
    await world.client.block(world.bot.id, USER)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await world.ptb.send_message(USER, "still there?")
    (update,) = [u for u in await world.ptb.get_updates() if u.my_chat_member]
    assert update.my_chat_member is not None
    assert update.my_chat_member.new_chat_member.status == "kicked"
    await world.client.unblock(world.bot.id, USER)
    assert (await world.ptb.send_message(USER, "welcome back")).text == "welcome back"


async def test_empty_and_too_long_texts_are_refused(world: World) -> None:
    await world.user_says("hi")
    with pytest.raises(BadRequest, match="Message text is empty"):
        await world.ptb.send_message(USER, "   ")
    with pytest.raises(BadRequest, match="Message text is empty"):
        await world.ptb.send_message(USER, "<b></b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match="Message is too long"):
        await world.ptb.send_message(USER, "x" * 4097)
    # the limit counts characters after entity parsing
    sent = await world.ptb.send_message(USER, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    assert sent.text is not None and len(sent.text) == 4096


async def test_unparsable_entities_are_refused_with_telegrams_reason(world: World) -> None:
    await world.user_says("hi")
    with pytest.raises(BadRequest, match=r'(?i)can\'t parse entities: unsupported start tag "foo"'):
        await world.ptb.send_message(USER, "a <foo>b</foo>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)character '\.' is reserved"):
        await world.ptb.send_message(USER, "Done.", parse_mode="MarkdownV2")
    with pytest.raises(BadRequest, match=r"(?i)can't find end of bold entity at byte offset 0"):
        await world.ptb.send_message(USER, "*bold", parse_mode="MarkdownV2")


async def test_markdown_v2_entities_in_utf16_units(world: World) -> None:
    await world.user_says("hi")
    sent = await world.ptb.send_message(
        USER, "😀 *bold* [link](https://example.org) 1\\.5", parse_mode="MarkdownV2"
    )
    assert sent.text == "😀 bold link 1.5"
    bold, link = sent.entities
    assert (bold.type, bold.offset, bold.length) == ("bold", 3, 4)  # the emoji is 2 units
    assert (link.type, link.url, link.offset) == ("text_link", "https://example.org", 8)


async def test_inline_keyboard_and_callback_round_trip(world: World) -> None:
    await world.user_says("menu")
    sent = await world.ptb.send_message(USER, "Pick", reply_markup=keyboard("Yes", "No"))
    pressed = await world.client.press(
        world.bot.id, chat_id=USER, message_id=sent.message_id, label="No"
    )
    updates = await world.ptb.get_updates()
    query = updates[-1].callback_query
    assert query is not None
    assert query.id == pressed["callback_query_id"]
    assert query.data == "no"
    assert query.message is not None and query.message.message_id == sent.message_id
    assert await world.ptb.answer_callback_query(query.id, text="Noted", show_alert=True)
    (answer,) = await world.client.wait_for(world.bot.id, USER, kind="callback_answer")
    assert answer["text"] == "Noted" and answer["show_alert"] is True
    with pytest.raises(BadRequest, match="Query is too old"):
        await world.ptb.answer_callback_query(query.id)


async def test_callback_data_over_64_bytes_is_button_data_invalid(world: World) -> None:
    await world.user_says("hi")
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="é" * 33)]])
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await world.ptb.send_message(USER, "too much data", reply_markup=markup)


async def test_edit_message_text_and_not_modified(world: World) -> None:
    await world.user_says("hi")
    sent = await world.ptb.send_message(USER, "v1", reply_markup=keyboard("Ok"))
    edited = await world.ptb.edit_message_text(
        "v2", chat_id=USER, message_id=sent.message_id, reply_markup=keyboard("Ok")
    )
    assert isinstance(edited, telegram.Message)
    assert edited.text == "v2" and edited.edit_date is not None
    with pytest.raises(BadRequest, match="Message is not modified"):
        await world.ptb.edit_message_text(
            "v2", chat_id=USER, message_id=sent.message_id, reply_markup=keyboard("Ok")
        )
    # editing without reply_markup drops the keyboard, as on Telegram
    dropped = await world.ptb.edit_message_text("v2", chat_id=USER, message_id=sent.message_id)
    assert isinstance(dropped, telegram.Message) and dropped.reply_markup is None
    events = await world.client.wait_for(world.bot.id, USER, kind="edit", count=2)
    assert [e["message"]["text"] for e in events] == ["v2", "v2"]
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await world.ptb.edit_message_text("x", chat_id=USER, message_id=999)


async def test_edit_reply_markup(world: World) -> None:
    await world.user_says("hi")
    sent = await world.ptb.send_message(USER, "choose", reply_markup=keyboard("A"))
    edited = await world.ptb.edit_message_reply_markup(
        chat_id=USER, message_id=sent.message_id, reply_markup=keyboard("A", "B")
    )
    assert isinstance(edited, telegram.Message) and edited.reply_markup is not None
    assert [b.text for b in edited.reply_markup.inline_keyboard[0]] == ["A", "B"]
    with pytest.raises(BadRequest, match="Message is not modified"):
        await world.ptb.edit_message_reply_markup(
            chat_id=USER, message_id=sent.message_id, reply_markup=keyboard("A", "B")
        )


async def test_reply_parameters_and_missing_reply_target(world: World) -> None:
    sent_by_user = await world.client.send_text(world.bot.id, "question", user=USER)
    reply = await world.ptb.send_message(
        USER, "answer", reply_parameters=ReplyParameters(sent_by_user["message_id"])
    )
    assert reply.reply_to_message is not None
    assert reply.reply_to_message.text == "question"
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await world.ptb.send_message(USER, "x", reply_parameters=ReplyParameters(9999))
    loose = await world.ptb.send_message(
        USER,
        "x",
        reply_parameters=ReplyParameters(9999, allow_sending_without_reply=True),
    )
    assert loose.reply_to_message is None


async def test_send_photo_upload_is_readable_by_the_user(world: World) -> None:
    await world.user_says("photo please")
    image = png(200, 100)
    sent = await world.ptb.send_photo(USER, image, caption="<i>cat</i>", parse_mode="HTML")
    assert sent.caption == "cat" and sent.caption_entities[0].type == "italic"
    largest = sent.photo[-1]
    assert (largest.width, largest.height) == (200, 100)
    assert sent.photo[0].width == 90  # a thumbnail, like Telegram's
    (event,) = await world.client.wait_for(world.bot.id, USER)
    assert event["message"]["photo"][-1]["file_id"] == largest.file_id
    assert await world.client.file(world.bot.id, largest.file_id) == image
    # the same photo again by file_id, and downloaded through getFile
    again = await world.ptb.send_photo(USER, largest.file_id)
    assert again.photo[-1].file_unique_id == largest.file_unique_id
    downloaded = await (await world.ptb.get_file(largest.file_id)).download_as_bytearray()
    assert bytes(downloaded) == image


async def test_send_photo_refuses_non_images_and_missing_photo(world: World) -> None:
    await world.user_says("hi")
    with pytest.raises(BadRequest, match="Image_process_failed"):
        await world.ptb.send_photo(USER, b"definitely not an image")
    with pytest.raises(BadRequest, match="Wrong file identifier"):
        await world.ptb.send_photo(USER, "no-such-file-id")


async def test_chat_action_and_delete_message(world: World) -> None:
    await world.user_says("hi")
    assert await world.ptb.send_chat_action(USER, "typing")
    sent = await world.ptb.send_message(USER, "short-lived")
    assert await world.ptb.delete_message(USER, sent.message_id)
    events = await world.client.wait_for(world.bot.id, USER, count=3)
    assert [e["kind"] for e in events] == ["chat_action", "message", "delete"]
    assert events[0]["action"] == "typing"
    assert events[2]["message_id"] == sent.message_id
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await world.ptb.delete_message(USER, sent.message_id)
    with pytest.raises(BadRequest, match="Wrong parameter action"):
        await world.ptb.send_chat_action(USER, "dancing")


async def test_commands_by_scope_and_language(world: World) -> None:
    english = [BotCommand("help", "Show help"), BotCommand("search", "Search messages")]
    spanish = [BotCommand("help", "Mostrar ayuda")]
    assert await world.ptb.set_my_commands(english)
    assert await world.ptb.set_my_commands(spanish, language_code="es")
    group_only = [BotCommand("game", "Start a game")]
    assert await world.ptb.set_my_commands(group_only, scope=BotCommandScopeAllGroupChats())
    assert await world.ptb.get_my_commands() == tuple(english)
    assert await world.ptb.get_my_commands(language_code="es") == tuple(spanish)
    assert await world.ptb.get_my_commands(scope=BotCommandScopeAllGroupChats()) == tuple(
        group_only
    )
    # what users see: their language first, then the default
    assert [c["command"] for c in await world.client.commands(world.bot.id, lang="es")] == ["help"]
    assert len(await world.client.commands(world.bot.id, lang="de")) == 2
    assert await world.ptb.delete_my_commands(language_code="es")
    assert await world.ptb.get_my_commands(language_code="es") == ()
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await world.ptb.set_my_commands([BotCommand("Bad Command!", "x")])
    with pytest.raises(BadRequest, match="Chat not found"):
        await world.ptb.set_my_commands(english, scope=BotCommandScopeChat(-999))


async def test_groups_join_and_group_messages(world: World) -> None:
    group = -100500
    await world.client.create_group(world.bot.id, group, "Friends", admins=[1], members=[2])
    joined = await world.client.join(world.bot.id, group, {"id": 3, "first_name": "Ana"})
    await world.client.send_text(world.bot.id, "/help@sandbox_test_bot", user=2, chat_id=group)
    updates = await world.ptb.get_updates()
    join_message, text_message = (u.message for u in updates)
    assert join_message is not None and text_message is not None
    assert join_message.message_id == joined["message_id"]
    assert [u.first_name for u in join_message.new_chat_members] == ["Ana"]
    assert text_message.chat.type == "supergroup" and text_message.chat.title == "Friends"
    assert text_message.entities[0].type == "bot_command"
    sent = await world.ptb.send_message(group, "Hi all")
    assert sent.chat.id == group
    (event,) = await world.client.wait_for(world.bot.id, group)
    assert event["message"]["text"] == "Hi all"


async def test_several_bots_keep_separate_state(world: World) -> None:
    other_bot = await world.client.create_bot(username="second_bot")
    other = telegram.Bot(other_bot.token, base_url=world.server.api_url)
    async with other:
        await world.client.send_text(other_bot.id, "to the second bot")
        await world.user_says("to the first bot")
        (mine,) = await world.ptb.get_updates()
        (theirs,) = await other.get_updates()
        assert mine.message is not None and mine.message.text == "to the first bot"
        assert theirs.message is not None and theirs.message.text == "to the second bot"
        assert (await other.get_me()).username == "second_bot"
