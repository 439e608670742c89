"""The sandbox's state on disk, so a restarted dev loop finds its chats again.

One directory per sandbox (``<BOTBUS_DATA_DIR>/sandbox``): ``state.json``
(bots, users, chats, messages, pending updates, the bot's events, command
menus), ``files/`` (the bytes of photos and documents) and, while a sandbox
runs, ``server.json`` (its URL, for ``botbus chat``) and an exclusive lock
on ``lock``, so two sandboxes never write the same state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections import deque
from pathlib import Path
from typing import IO, Any

from botbus.sandbox._errors import SandboxBusy, SandboxError
from botbus.sandbox._limits import Limits
from botbus.sandbox._state import (
    BotState,
    Chat,
    Json,
    SandboxBot,
    StoredFile,
    StoredMessage,
    User,
)

FORMAT_VERSION = 1
MAX_SAVED_EVENTS = 5000  # per bot; older history is dropped at save
STATE_FILE = "state.json"
SERVER_FILE = "server.json"
LOCK_FILE = "lock"


def state_dir(data_dir: Path) -> Path:
    """Where the sandbox keeps its state inside ``BOTBUS_DATA_DIR``."""
    return data_dir / "sandbox"


class StateDir:
    """Reads and writes one sandbox's state directory; holds its lock while open."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock: IO[str] | None = None

    # -- lock and address ------------------------------------------------
    @property
    def locked(self) -> bool:
        """Whether this process holds the directory (and may write it)."""
        return self._lock is not None

    def acquire(self) -> None:
        """Take the directory's lock, or raise :class:`SandboxBusy`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = (self.directory / LOCK_FILE).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise SandboxBusy(self.directory, running_url(self.directory)) from None
        self._lock = handle

    def release(self) -> None:
        """Forget the address and drop the lock."""
        (self.directory / SERVER_FILE).unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def announce(self, base_url: str) -> None:
        """Tell ``botbus chat`` (and a second sandbox) where this one listens."""
        _write_atomic(
            self.directory / SERVER_FILE, json.dumps({"base_url": base_url, "pid": os.getpid()})
        )

    # -- state -----------------------------------------------------------
    def load(self, limits: Limits) -> list[BotState]:
        """The saved bots with their worlds; none when nothing was saved yet."""
        path = self.directory / STATE_FILE
        if not path.exists():
            return []
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {saved.get('version')!r}")
            return [self._load_bot(b, limits) for b in saved["bots"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SandboxError(
                f"cannot read the sandbox state in {path}: {exc}; "
                "move the file away to start afresh (or use --ephemeral)"
            ) from exc

    def save(self, states: list[BotState]) -> None:
        """Write every bot's world (files first, then the JSON that names them)."""
        files_dir = self.directory / "files"
        files_dir.mkdir(parents=True, exist_ok=True)
        bots = [self._dump_bot(state, files_dir) for state in states]
        _write_atomic(
            self.directory / STATE_FILE,
            json.dumps({"version": FORMAT_VERSION, "bots": bots}, ensure_ascii=False),
        )

    # -- one bot ---------------------------------------------------------
    @staticmethod
    def _dump_bot(state: BotState, files_dir: Path) -> Json:
        files: dict[str, Json] = {}
        for file_id, stored in state.files.items():
            blob = files_dir / stored.file_unique_id
            if not blob.exists():
                _write_atomic_bytes(blob, stored.data)
            files[file_id] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "content_type": stored.content_type,
                "width": stored.width,
                "height": stored.height,
                "file_name": stored.file_name,
            }
        messages = [_dump_message(m) for m in state.messages.values()]
        return {
            "bot": vars(state.bot),
            "users": [vars(u) for u in state.users.values()],
            "chats": [_dump_chat(c) for c in state.chats.values()],
            "messages": messages,
            "blocked": sorted(state.blocked),
            "updates": list(state.updates),
            "next_update_id": state.next_update_id,
            "allowed_updates": sorted(state.allowed_updates),
            "events": state.events[-MAX_SAVED_EVENTS:],
            "next_seq": state.next_seq,
            "commands": [
                {"scope": scope, "language_code": lang, "commands": commands}
                for (scope, lang), commands in state.commands.items()
            ],
            "files": files,
        }

    def _load_bot(self, saved: Json, limits: Limits) -> BotState:
        state = BotState(SandboxBot(**saved["bot"]), limits)
        for user in saved["users"]:
            state.users[int(user["id"])] = User(**user)
        for raw in saved["chats"]:
            user = state.users.get(raw["id"]) if raw["type"] == "private" else None
            chat = Chat(
                id=raw["id"],
                type=raw["type"],
                title=raw.get("title"),
                user=user,
                members=set(raw["members"]),
                admins=set(raw["admins"]),
                creator=raw.get("creator"),
                next_message_id=raw["next_message_id"],
                is_forum=raw.get("is_forum", False),
                topics=set(raw.get("topics", [])),
            )
            state.chats[chat.id] = chat
        for raw in saved["messages"]:
            message = _load_message(raw, state)
            state.messages[(message.chat.id, message.message_id)] = message
        for raw in saved["messages"]:  # replies once every message exists
            reply_to = raw.get("reply_to")
            if reply_to is not None:
                message = state.messages[(raw["chat_id"], raw["message_id"])]
                message.reply_to = state.messages.get((raw["chat_id"], reply_to))
        state.blocked = set(saved["blocked"])
        state.updates = deque(saved["updates"])
        state.next_update_id = saved["next_update_id"]
        state.allowed_updates = frozenset(saved["allowed_updates"])
        state.restore_events(saved["events"])
        state.next_seq = saved["next_seq"]
        for menu in saved["commands"]:
            state.commands[(menu["scope"], menu["language_code"])] = menu["commands"]
        files_dir = self.directory / "files"
        for file_id, meta in saved["files"].items():
            blob = files_dir / meta["file_unique_id"]
            with contextlib.suppress(FileNotFoundError):  # a lost file is a 404, not a crash
                state.files[file_id] = StoredFile(data=blob.read_bytes(), **meta)
        return state


def running_url(directory: Path) -> str | None:
    """The URL of the sandbox running on ``directory``, or None if none runs there."""
    lock = directory / LOCK_FILE
    if not lock.exists():
        return None
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # held: a sandbox is running; read its address below
        else:
            return None  # nobody holds it: whatever server.json says is stale
    try:
        base_url = json.loads((directory / SERVER_FILE).read_text())["base_url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(base_url)


_MESSAGE_FIELDS = (
    "text",
    "entities",
    "reply_markup",
    "photo",
    "caption",
    "caption_entities",
    "edit_date",
    "new_chat_members",
    "document",
    "location",
    "sticker",
    "thread_id",
    "sender_chat",
)


def _dump_message(message: StoredMessage) -> Json:
    data: Json = {
        "message_id": message.message_id,
        "chat_id": message.chat.id,
        "sender": message.sender,
        "date": message.date,
        "reply_to": message.reply_to.message_id if message.reply_to else None,
    }
    for name in _MESSAGE_FIELDS:
        data[name] = getattr(message, name)
    return data


def _load_message(raw: Json, state: BotState) -> StoredMessage:
    fields: dict[str, Any] = {name: raw[name] for name in _MESSAGE_FIELDS if name in raw}
    return StoredMessage(
        message_id=raw["message_id"],
        chat=state.chats[raw["chat_id"]],
        sender=raw["sender"],
        date=raw["date"],
        **fields,
    )


def _dump_chat(chat: Chat) -> Json:
    return {
        "id": chat.id,
        "type": chat.type,
        "title": chat.title,
        "members": sorted(chat.members),
        "admins": sorted(chat.admins),
        "creator": chat.creator,
        "next_message_id": chat.next_message_id,
        "is_forum": chat.is_forum,
        "topics": sorted(chat.topics),
    }


def _write_atomic(path: Path, text: str) -> None:
    _write_atomic_bytes(path, text.encode("utf-8"))


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename: a crash leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
