"""Chat records in a JetStream KV bucket, changed only by compare-and-set.

Any instance of the service may handle any press. :meth:`GameStore.change`
reads a chat's record and its revision, applies a pure function, and writes
the result only if the revision is still the one it read; otherwise it reads
again and re-validates. Two simultaneous presses therefore never both apply:
the second is re-checked against the board the first produced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from services.games.engine import ChatRecord

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 20  # reads before giving up on a record under heavy contention
_KEY_PREFIX = "chat."

T = TypeVar("T")
# Returns the record to write (None: nothing to write) and the caller's result.
Change = Callable[[ChatRecord], tuple[ChatRecord | None, T]]


class ContentionError(RuntimeError):
    """A record kept changing under us; the SDK retries the message later."""


def chat_key(chat_id: int) -> str:
    """The KV key of a chat's record (negative group ids are fine: '-' is a key character)."""
    return f"{_KEY_PREFIX}{chat_id}"


class GameStore:
    """The chat records of one bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def load(self, chat_id: int) -> tuple[ChatRecord, int | None]:
        """The chat's record and its revision (None when the chat has no record yet)."""
        try:
            entry = await self.kv.get(chat_key(chat_id))
        except KeyNotFoundError:
            return ChatRecord(), None
        return ChatRecord.load(entry.value), entry.revision

    async def save(self, chat_id: int, record: ChatRecord, revision: int | None) -> bool:
        """Write ``record`` if the stored revision is still ``revision``; False if it moved."""
        key = chat_key(chat_id)
        try:
            if revision is None:
                await self.kv.create(key, record.dump())
            else:
                await self.kv.update(key, record.dump(), last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def change(self, chat_id: int, change: Change[T]) -> T:
        """Apply ``change`` atomically; its :class:`Refused` propagates with nothing written."""
        for attempt in range(1, MAX_CAS_ATTEMPTS + 1):
            record, revision = await self.load(chat_id)
            updated, result = change(record)
            if updated is None or await self.save(chat_id, updated, revision):
                return result
            log.debug("chat %s changed under us (attempt %d); re-validating", chat_id, attempt)
        raise ContentionError(
            f"chat {chat_id}'s game changed {MAX_CAS_ATTEMPTS} times while applying one move; "
            "the message will be retried"
        )

    async def chats(self) -> list[int]:
        """Every chat that has a record."""
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        return [int(k[len(_KEY_PREFIX) :]) for k in keys if k.startswith(_KEY_PREFIX)]
