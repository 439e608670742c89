"""The world one bot lives in: users, chats, messages, pending updates, sent events.

Everything here is plain data plus small helpers; the HTTP layers (bot side
and user side) change it and :class:`Signal` wakes whoever long-polls.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import secrets
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from botbus.sandbox._limits import Limits, RateLimiter

Json = dict[str, Any]

# Update types getUpdates delivers when allowed_updates is empty (Telegram's default).
DEFAULT_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)


# Event kinds that record what a user did, beside the bot's own (message, edit, ...).
USER_EVENT_KINDS = frozenset({"user_message", "user_edit", "chat"})


@dataclass(frozen=True)
class SandboxBot:
    """A bot registered in the sandbox: its token, numeric id and username."""

    token: str
    id: int
    username: str
    first_name: str = "botbus"

    def to_json(self) -> Json:
        """The bot as a Telegram User object (``from`` of its messages)."""
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }


class Signal:
    """Wakes every waiter at once; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Wake all current waiters."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate()`` is true or ``timeout`` seconds pass; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return bool(predicate())
            event = self._event
            try:
                # asyncio.timeout, unlike wait_for on 3.11, never swallows a cancellation
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                return bool(predicate())
        return True


@dataclass
class User:
    """A human user of the sandbox."""

    id: int
    first_name: str
    language_code: str = "en"
    username: str | None = None
    last_name: str | None = None

    def to_json(self) -> Json:
        """The Telegram User object."""
        data: Json = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code:
            data["language_code"] = self.language_code
        return data


@dataclass
class Chat:
    """A private chat (id = user id) or a group (negative id)."""

    id: int
    type: str
    title: str | None = None
    user: User | None = None
    members: set[int] = field(default_factory=set)
    admins: set[int] = field(default_factory=set)
    creator: int | None = None  # the group's owner; also in ``admins``
    is_forum: bool = False  # a supergroup with topics
    topics: set[int] = field(default_factory=set)  # message_thread_ids users wrote in
    next_message_id: int = 1

    def to_json(self) -> Json:
        """The Telegram Chat object."""
        data: Json = {"id": self.id, "type": self.type}
        if self.type == "private" and self.user is not None:
            data["first_name"] = self.user.first_name
            if self.user.last_name:
                data["last_name"] = self.user.last_name
            if self.user.username:
                data["username"] = self.user.username
        else:
            data["title"] = self.title or ""
        if self.is_forum:
            data["is_forum"] = True
        return data


@dataclass
class StoredFile:
    """Bytes a bot or a user uploaded (or the bot fetched), served back to readers."""

    file_id: str
    file_unique_id: str
    data: bytes
    content_type: str
    width: int  # 0 for files that are not images
    height: int
    file_name: str = ""


@dataclass
class StoredMessage:
    """A message in a chat, sent by a user or by the bot."""

    message_id: int
    chat: Chat
    sender: Json
    date: int
    text: str | None = None
    entities: list[Json] = field(default_factory=list)
    reply_markup: Json | None = None
    photo: list[Json] | None = None
    caption: str | None = None
    caption_entities: list[Json] = field(default_factory=list)
    reply_to: StoredMessage | None = None
    edit_date: int | None = None
    new_chat_members: list[Json] | None = None
    thread_id: int | None = None  # the forum topic (message_thread_id)
    sender_chat: Json | None = None  # the group itself, for an anonymous admin
    document: Json | None = None
    location: Json | None = None
    sticker: Json | None = None

    @property
    def from_bot(self) -> bool:
        """Whether the bot itself sent this message."""
        return bool(self.sender.get("is_bot"))

    def to_json(self, *, nested: bool = False) -> Json:
        """The Telegram Message object (``nested`` omits the reply's own reply)."""
        data: Json = {
            "message_id": self.message_id,
            "from": self.sender,
            "chat": self.chat.to_json(),
            "date": self.date,
        }
        if self.edit_date is not None:
            data["edit_date"] = self.edit_date
        if self.thread_id is not None:
            data["message_thread_id"] = self.thread_id
            data["is_topic_message"] = True
        if self.sender_chat is not None:
            data["sender_chat"] = self.sender_chat
        if self.reply_to is not None and not nested:
            data["reply_to_message"] = self.reply_to.to_json(nested=True)
        if self.text is not None:
            data["text"] = self.text
            if self.entities:
                data["entities"] = self.entities
        for media in ("photo", "document", "sticker", "location"):
            value = getattr(self, media)
            if value is not None:
                data[media] = value
        if (self.photo is not None or self.document is not None) and self.caption:
            data["caption"] = self.caption
            if self.caption_entities:
                data["caption_entities"] = self.caption_entities
        if self.new_chat_members is not None:
            data["new_chat_members"] = self.new_chat_members
        if self.reply_markup is not None:
            data["reply_markup"] = self.reply_markup
        return data


@dataclass
class CallbackQuery:
    """A button press waiting for answerCallbackQuery."""

    id: str
    user: User
    message: StoredMessage | None  # None under an inline-mode message (inline_message_id)
    data: str | None
    answered: bool = False


@dataclass
class Fault:
    """An injected failure for the next matching call(s)."""

    method: str
    error_code: int  # 0: no refusal, the call is only held for ``delay``
    description: str
    retry_after: int | None
    chat_id: int | None
    times: int
    delay: float = 0.0  # seconds the call is held before it answers (a slow Telegram)


@dataclass
class Webhook:
    """The webhook a bot set."""

    url: str
    secret_token: str | None
    max_connections: int


def now() -> int:
    """Unix time in whole seconds, as Telegram's ``date`` fields."""
    return int(time.time())


class BotState:
    """All state of one bot: separate bots never see each other's data."""

    def __init__(self, bot: SandboxBot, limits: Limits) -> None:
        self.bot = bot
        self.limiter = RateLimiter(limits)
        self.signal = Signal()
        self.users: dict[int, User] = {}
        self.chats: dict[int, Chat] = {}
        self.messages: dict[tuple[int, int], StoredMessage] = {}
        self.blocked: set[int] = set()
        self.updates: deque[Json] = deque()
        self.next_update_id = secrets.randbelow(900_000) + 100_000
        self.allowed_updates: frozenset[str] = DEFAULT_UPDATE_TYPES
        self.poll_generation = 0
        self.webhook: Webhook | None = None
        self.webhook_task: asyncio.Task[None] | None = None
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.events: list[Json] = []
        self.chat_events: defaultdict[int, list[Json]] = defaultdict(list)  # the same, per chat
        self.next_seq = 1
        self.commands: dict[tuple[str, str], list[Json]] = {}
        self.files: dict[str, StoredFile] = {}
        self.callbacks: dict[str, CallbackQuery] = {}
        self.faults: list[Fault] = []
        self.method_counts: Counter[str] = Counter()
        self.error_counts: Counter[int] = Counter()
        self.updates_created = 0

    # -- users and chats -------------------------------------------------
    def user(self, spec: Json) -> User:
        """Create or refresh a user from ``{"id", "first_name", "language_code", ...}``."""
        user_id = int(spec["id"])
        known = self.users.get(user_id)
        user = User(
            id=user_id,
            first_name=str(spec.get("first_name") or (known.first_name if known else "")),
            language_code=str(spec.get("language_code") or (known.language_code if known else "")),
            username=spec.get("username") or (known.username if known else None),
            last_name=spec.get("last_name") or (known.last_name if known else None),
        )
        if not user.first_name:
            user.first_name = f"User {user_id}"
        self.users[user_id] = user
        chat = self.chats.get(user_id)
        if chat is not None:
            chat.user = user
        return user

    def private_chat(self, user: User) -> Chat:
        """The private chat between ``user`` and the bot (created on first contact)."""
        chat = self.chats.get(user.id)
        if chat is None:
            chat = Chat(id=user.id, type="private", user=user, members={user.id})
            self.chats[user.id] = chat
        return chat

    # -- updates ---------------------------------------------------------
    def add_update(self, kind: str, payload: Json) -> int:
        """Queue an update for getUpdates/webhook; returns its update_id (or -1 if filtered)."""
        if kind not in self.allowed_updates:
            return -1
        update_id = self.next_update_id
        self.next_update_id += 1
        self.updates.append({"update_id": update_id, kind: payload})
        self.updates_created += 1
        self.signal.fire()
        return update_id

    def confirm(self, offset: int) -> None:
        """Forget updates as getUpdates' ``offset`` says (negative: keep the last -offset)."""
        if offset < 0:
            keep = -offset
            while len(self.updates) > keep:
                self.updates.popleft()
        elif offset > 0:
            while self.updates and self.updates[0]["update_id"] < offset:
                self.updates.popleft()

    # -- bot -> chat events ----------------------------------------------
    def add_event(self, chat_id: int, kind: str, **payload: Any) -> Json:
        """Record something the bot did in a chat, for the user-side readers."""
        event: Json = {"seq": self.next_seq, "kind": kind, "chat_id": chat_id, "date": now()}
        event.update(payload)
        self.next_seq += 1
        self.events.append(event)
        self.chat_events[chat_id].append(event)
        self.signal.fire()
        return event

    def restore_events(self, events: list[Json]) -> None:
        """Put saved events back (oldest first), with the per-chat index."""
        self.events = list(events)
        self.chat_events.clear()
        for event in self.events:
            self.chat_events[event["chat_id"]].append(event)

    def events_after(self, chat_id: int, after: int, *, users: bool = False) -> list[Json]:
        """Events in ``chat_id`` whose seq is above ``after``, oldest first.

        What users did (``USER_EVENT_KINDS``) is left out unless ``users``:
        readers that wait for the bot's answer must not see their own message.
        """
        in_chat = self.chat_events.get(chat_id, [])
        # seqs grow, so only the tail after ``after`` is read, not the whole history
        start = bisect.bisect_right(in_chat, after, key=lambda e: int(e["seq"]))
        return [e for e in in_chat[start:] if users or e["kind"] not in USER_EVENT_KINDS]

    def new_message(self, chat: Chat, sender: Json, **fields_: Any) -> StoredMessage:
        """Store a new message in ``chat`` with the chat's next message_id."""
        message_id = chat.next_message_id
        chat.next_message_id += 1
        message = StoredMessage(
            message_id=message_id, chat=chat, sender=sender, date=now(), **fields_
        )
        self.messages[(chat.id, message.message_id)] = message
        return message

    def store_file(
        self,
        data: bytes,
        content_type: str,
        *,
        width: int = 0,
        height: int = 0,
        file_name: str = "",
        prefix: str = "AgAC",
    ) -> StoredFile:
        """Keep uploaded bytes under a fresh file_id (``prefix`` as Telegram's kinds)."""
        digest = hashlib.sha256(data).hexdigest()
        stored = StoredFile(
            file_id=f"{prefix}{digest[:24]}{secrets.token_hex(6)}",
            file_unique_id=f"AQAD{digest[:12]}",
            data=data,
            content_type=content_type,
            width=width,
            height=height,
            file_name=file_name,
        )
        self.files[stored.file_id] = stored
        return stored

    def stats(self) -> Json:
        """Counters the user-side API reports."""
        return {
            "bot_id": self.bot.id,
            "methods": dict(self.method_counts),
            "errors": {str(code): n for code, n in self.error_counts.items()},
            "too_many_requests": self.error_counts.get(429, 0),
            "updates_created": self.updates_created,
            "pending_updates": len(self.updates),
            "events": len(self.events),
            "webhook": self.webhook.url if self.webhook else "",
        }
