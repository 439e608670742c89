"""Forum topics, anonymous admins and the admin marks of /help with the real services."""

from __future__ import annotations

from typing import Any

import pytest

from services.alerts.service import service as alerts_service
from services.echo.service import service as echo_service
from services.games.service import service as games_service

from .conftest import ADMIN, Chat, StartStack

# the whole stack (sandbox, gateway, services) per test: in `make test`, not the fast loop
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

FORUM = -100610
OWNER: dict[str, Any] = {"id": 6101, "first_name": "Olga"}
MEMBER: dict[str, Any] = {"id": 6102, "first_name": "Max"}


async def in_topic(chat: Chat, text: str, user: dict[str, Any], topic: int) -> dict[str, Any]:
    """``user`` writes ``text`` in forum topic ``topic``; the bot's next message there."""
    await chat.stack.client.send_text(
        chat.stack.bot.id, text, user=user, chat_id=chat.chat_id, thread_id=topic
    )
    message: dict[str, Any] = (await chat.next())["message"]
    return message


async def test_service_answers_and_game_boards_stay_in_their_topic(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(echo_service, games_service)
    await stack.client.create_group(
        stack.bot.id, FORUM, "Forum", admins=[OWNER], members=[MEMBER], forum=True
    )
    forum = Chat(stack, FORUM)
    echoed = await in_topic(forum, "/echo hello topic", MEMBER, 31)
    assert echoed["text"] == "hello topic" and echoed["message_thread_id"] == 31
    board = await in_topic(forum, "/tictactoe bot", MEMBER, 32)
    assert board["message_thread_id"] == 32 and board["reply_markup"]["inline_keyboard"]
    await stack.client.press(
        stack.bot.id, chat_id=FORUM, message_id=board["message_id"], user=MEMBER["id"], label="1"
    )
    edited = (await forum.next("edit"))["message"]
    assert edited["message_id"] == board["message_id"] and edited["message_thread_id"] == 32


async def test_an_anonymous_admin_manages_the_groups_subscriptions(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(alerts_service)
    admin = Chat(stack, ADMIN["id"])
    created = await admin.reply_text("/newchannel storms Storm warnings", ADMIN)
    assert "Channel storms created" in created
    await stack.client.create_group(stack.bot.id, FORUM, "Team", admins=[OWNER], members=[MEMBER])
    team = Chat(stack, FORUM)
    refused = await team.reply_text("/subscribe storms", MEMBER)
    assert refused.startswith("In a group, only the group's admins")
    await stack.client.send_text(
        stack.bot.id, "/subscribe storms", user=OWNER, chat_id=FORUM, as_group=True
    )
    answer = (await team.next())["message"]["text"]
    assert answer.startswith("Subscribed to storms")


async def test_help_marks_admin_commands_once(start_stack: StartStack) -> None:
    stack = await start_stack(alerts_service)
    help_text = await Chat(stack, ADMIN["id"]).reply_text("/help", ADMIN)
    assert "/newchannel - Create channel NAME description (admin)" in help_text.splitlines()
    assert "(admins)" not in help_text


async def test_anonymous_admins_of_two_groups_do_not_share_reminders(
    start_stack: StartStack,
) -> None:
    stack = await start_stack(alerts_service)
    client, bot = stack.client, stack.bot
    await client.create_group(bot.id, FORUM, "Team A", admins=[OWNER])
    await client.create_group(bot.id, FORUM - 1, "Team B", admins=[MEMBER])
    team_a, team_b = Chat(stack, FORUM), Chat(stack, FORUM - 1)
    await client.send_text(bot.id, "/remind in 1h pay", user=OWNER, chat_id=FORUM, as_group=True)
    assert "Reminder r" in (await team_a.next())["message"]["text"]
    # Telegram sends both as GroupAnonymousBot; each group is its own sender here.
    await client.send_text(bot.id, "/reminders", user=MEMBER, chat_id=FORUM - 1, as_group=True)
    assert (await team_b.next())["message"]["text"] == "You have no reminders."
    await client.send_text(bot.id, "/reminders", user=OWNER, chat_id=FORUM, as_group=True)
    assert "— pay" in (await team_a.next())["message"]["text"]


async def test_a_reminder_set_in_a_topic_fires_in_that_topic(start_stack: StartStack) -> None:
    stack = await start_stack(alerts_service)
    await stack.client.create_group(
        stack.bot.id, FORUM, "Forum", admins=[OWNER], members=[MEMBER], forum=True
    )
    forum = Chat(stack, FORUM)
    confirmation = await in_topic(forum, "/remind in 1s stand up", MEMBER, 41)
    assert confirmation["message_thread_id"] == 41
    fired = (await forum.next())["message"]
    assert fired["text"] == "⏰ Reminder: stand up" and fired["message_thread_id"] == 41
