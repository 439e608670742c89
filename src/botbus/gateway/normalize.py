"""Telegram update JSON -> a :class:`ParsedUpdate`, without trusting its shape.

Polling and the webhook both hand raw JSON here, so one function decides
what an update is. Anything that is not a text message, an edited text
message or an inline-button press is :class:`Ignored` (with the reason, for a
debug log); anything malformed raises :class:`MalformedUpdate`. Routing to
services happens later, in :mod:`botbus.gateway.router`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import ValidationError

from botbus.models import MAX_INBOUND_TEXT, Chat, User

# "/name", "/name@bot", then optional arguments (which may span lines).
_COMMAND_RE = re.compile(
    r"^/([A-Za-z0-9_]{1,64})(?:@([A-Za-z0-9_]{1,64}))?(?:\s+(.*))?$", re.DOTALL
)


# Telegram's stand-in sender of a group admin who writes as the group ("Remain
# anonymous"); such a message carries ``sender_chat`` = the group itself.
ANONYMOUS_ADMIN_ID = 1087968824


class MalformedUpdate(ValueError):
    """The update is not what Telegram documents; it is skipped and logged."""


@dataclass(frozen=True)
class Ignored:
    """An update kind the gateway does not route (joins, photos, polls, ...)."""

    update_id: int
    reason: str


@dataclass(frozen=True)
class ParsedUpdate:
    """The parts of an update that routing needs.

    ``kind`` is "command" (``command`` lower-cased, ``args``), "message"
    (``text``, ``edited``) or "callback" (``callback_query_id``, ``data``).
    ``thread_id`` is the forum topic the message or pressed board is in (None
    outside forum topics); ``addressed`` means a command named this bot
    (``/cmd@thisbot``) or replied to one of its messages; ``as_chat_admin``
    means an anonymous admin of the chat wrote it (as the group).
    """

    update_id: int
    kind: Literal["command", "message", "callback"]
    chat: Chat
    user: User
    message_id: int | None = None
    text: str = ""
    edited: bool = False
    reply_to_message_id: int | None = None
    command: str = ""
    args: str = ""
    callback_query_id: str = ""
    data: str = ""
    thread_id: int | None = None
    addressed: bool = False
    as_chat_admin: bool = False


def update_id_of(update: object) -> int | None:
    """The update_id of raw JSON, if it has a usable one."""
    if isinstance(update, dict):
        value = update.get("update_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedUpdate(f"{what} is not an object")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedUpdate(f"{what} is not an integer")
    return value


def _user(raw: object) -> User:
    fields = _dict(raw, "from")
    try:
        return User(
            id=_int(fields.get("id"), "from.id"),
            first_name=str(fields.get("first_name") or ""),
            last_name=fields.get("last_name") if isinstance(fields.get("last_name"), str) else None,
            username=fields.get("username") if isinstance(fields.get("username"), str) else None,
            language_code=(
                fields.get("language_code")
                if isinstance(fields.get("language_code"), str)
                else None
            ),
            is_bot=bool(fields.get("is_bot", False)),
        )
    except ValidationError as exc:
        raise MalformedUpdate(f"from: {exc.errors()[0]['msg']}") from exc


def _chat(raw: object) -> Chat:
    fields = _dict(raw, "chat")
    try:
        return Chat(
            id=_int(fields.get("id"), "chat.id"),
            type=fields.get("type", "private"),
            title=fields.get("title") if isinstance(fields.get("title"), str) else None,
        )
    except ValidationError as exc:
        raise MalformedUpdate(f"chat: {exc.errors()[0]['msg']}") from exc


def parse_command(text: str, bot_username: str) -> tuple[str, str] | None:
    """``(command, args)`` if ``text`` is a command for this bot, else None.

    ``/name@otherbot`` (a command for another bot in a group) returns None.
    """
    match = _COMMAND_RE.match(text.strip())
    if match is None:
        return None
    name, addressee, args = match.group(1), match.group(2), match.group(3)
    if addressee and addressee.lower() != bot_username.lower():
        return None
    return name.lower(), (args or "").strip()


def parse_update(update: object, bot_username: str) -> ParsedUpdate | Ignored:
    """Classify one raw update; raise :class:`MalformedUpdate` if it is broken."""
    update_id = update_id_of(update)
    if update_id is None:
        raise MalformedUpdate("update_id is missing or not an integer")
    assert isinstance(update, dict)
    for key, edited in (("message", False), ("edited_message", True)):
        if key in update:
            return _parse_message(update_id, _dict(update[key], key), edited, bot_username)
    if "callback_query" in update:
        return _parse_callback(update_id, _dict(update["callback_query"], "callback_query"))
    kinds = sorted(k for k in update if k != "update_id")
    return Ignored(update_id, f"update kind {', '.join(kinds) or 'empty'} is not routed")


def _parse_message(
    update_id: int, message: dict[str, Any], edited: bool, bot_username: str
) -> ParsedUpdate | Ignored:
    message_id = _int(message.get("message_id"), "message.message_id")
    chat = _chat(message.get("chat"))
    if "from" not in message:
        return Ignored(update_id, "message without a sender (channel post)")
    user = _on_behalf_of(message.get("sender_chat"), _user(message.get("from")))
    text = message.get("text")
    if not isinstance(text, str) or not text:
        kinds = sorted(k for k in message if k not in {"message_id", "chat", "from", "date"})
        return Ignored(update_id, f"message without text ({', '.join(kinds[:3])})")
    text = text[:MAX_INBOUND_TEXT]
    reply = message.get("reply_to_message")
    reply_to = reply.get("message_id") if isinstance(reply, dict) else None
    reply_to = reply_to if isinstance(reply_to, int) else None
    parsed = ParsedUpdate(
        update_id,
        "message",
        chat,
        user,
        message_id=message_id,
        text=text,
        edited=edited,
        reply_to_message_id=reply_to,
        thread_id=_thread_of(message),
        as_chat_admin=_from_anonymous_admin(message, chat),
    )
    command = None if edited else parse_command(text, bot_username)
    if command is None and text.startswith("/") and not edited:
        match = _COMMAND_RE.match(text.strip())
        if match is not None:
            return Ignored(update_id, "command addressed to another bot")
    if command is None:
        return parsed
    name, args = command
    named_us = "@" in text.strip().split(maxsplit=1)[0]
    addressed = named_us or _replies_to_bot(reply, bot_username)
    return replace(parsed, kind="command", command=name, args=args, addressed=addressed)


def _thread_of(message: dict[str, Any]) -> int | None:
    """The forum topic of ``message``; None outside forums (where Telegram refuses one)."""
    thread = message.get("message_thread_id")
    if message.get("is_topic_message") is True and isinstance(thread, int):
        return thread
    return None


def _on_behalf_of(sender_chat: object, user: User) -> User:
    """The sender as services should know it.

    A message sent on behalf of a chat (an anonymous admin writing as the
    group, a member posting as their channel) comes ``from`` a stand-in bot
    that Telegram shares among every such chat. Keyed by it, per-user state
    (reminders, ``/mood me``, flood control, language) would be shared by
    strangers in other groups; the chat itself, whose id is negative, is who
    wrote.
    """
    if not isinstance(sender_chat, dict) or not isinstance(sender_chat.get("id"), int):
        return user
    title, username = sender_chat.get("title"), sender_chat.get("username")
    return User(
        id=sender_chat["id"],
        first_name=title if isinstance(title, str) else "",
        username=username if isinstance(username, str) else None,
    )


def _from_anonymous_admin(message: dict[str, Any], chat: Chat) -> bool:
    """Whether an admin wrote as the group itself ("Remain anonymous")."""
    sender_chat = message.get("sender_chat")
    return (
        chat.is_group
        and isinstance(sender_chat, dict)
        and sender_chat.get("id") == chat.id
        and isinstance(message.get("from"), dict)
        and message["from"].get("id") == ANONYMOUS_ADMIN_ID
    )


def _replies_to_bot(reply: object, bot_username: str) -> bool:
    if not isinstance(reply, dict) or not isinstance(reply.get("from"), dict):
        return False
    username = reply["from"].get("username")
    return isinstance(username, str) and username.lower() == bot_username.lower()


def _parse_callback(update_id: int, query: dict[str, Any]) -> ParsedUpdate | Ignored:
    query_id = query.get("id")
    if not isinstance(query_id, str) or not query_id:
        raise MalformedUpdate("callback_query.id is missing")
    user = _user(query.get("from"))
    message = query.get("message")
    thread_id = None
    if isinstance(message, dict):
        chat = _chat(message.get("chat"))
        message_id = message.get("message_id")
        message_id = message_id if isinstance(message_id, int) else None
        thread_id = _thread_of(message)
    else:
        # Buttons under inline-mode messages have no chat; answer in private.
        chat = Chat(id=user.id, type="private")
        message_id = None
    data = query.get("data")
    if not isinstance(data, str):
        return Ignored(update_id, "callback query without data (game button)")
    return ParsedUpdate(
        update_id,
        "callback",
        chat,
        user,
        message_id=message_id,
        callback_query_id=query_id,
        data=data,
        thread_id=thread_id,
    )
