"""Who administers a group, as Telegram says, cached so ingest stays fast.

Services decide group-level actions (subscribe a group to alerts, opt it out
of sentiment scoring) by the inbound's ``chat_admin`` flag; the gateway fills
it from ``getChatAdministrators``. One call answers for every admin of the
chat, so the list is cached per chat for :data:`DEFAULT_TTL` seconds, in a
cache bounded to :data:`DEFAULT_MAX_CHATS` chats (least recently used go
first). A user missing from a cached list triggers an early refresh once the
list is :data:`DEFAULT_MISS_REFRESH` seconds old, so someone promoted a
moment ago is recognised quickly without a non-admin being able to make the
gateway call Telegram for every command they send.

A lookup never holds ingest for long: after :data:`DEFAULT_TIMEOUT` seconds,
or on any Telegram error, the user counts as *not* an admin (the safe
answer), the failure is logged, and the failure itself is cached for
:data:`DEFAULT_FAILURE_TTL` seconds so a burst of commands in that chat does
not wait on Telegram once per command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from telegram import Bot
from telegram.error import TelegramError

from botbus.models import Chat

log = logging.getLogger(__name__)

DEFAULT_TTL = 60.0  # seconds a chat's admin list is trusted
DEFAULT_MISS_REFRESH = 5.0  # seconds before a "not an admin" answer may be re-checked
DEFAULT_FAILURE_TTL = 5.0  # seconds a failed lookup is remembered (answer: not an admin)
DEFAULT_TIMEOUT = 2.0  # seconds one getChatAdministrators may take
DEFAULT_MAX_CHATS = 10_000  # chats whose admin lists are kept
ADMIN_STATUSES = frozenset({"creator", "administrator"})


@dataclass(frozen=True)
class _Entry:
    admins: frozenset[int]
    fetched_at: float  # clock() when it was fetched
    failed: bool = False


class ChatAdmins:
    """Answers "does this user administer this chat?" for the router."""

    def __init__(
        self,
        bot: Bot,
        *,
        ttl: float = DEFAULT_TTL,
        miss_refresh: float = DEFAULT_MISS_REFRESH,
        failure_ttl: float = DEFAULT_FAILURE_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        max_chats: int = DEFAULT_MAX_CHATS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bot = bot
        self.ttl = ttl
        self.miss_refresh = miss_refresh
        self.failure_ttl = failure_ttl
        self.timeout = timeout
        self.max_chats = max_chats
        self._clock = clock
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        # One lookup per chat at a time: concurrent callers share its answer.
        self._pending: dict[int, asyncio.Task[_Entry]] = {}
        self.lookups = 0  # calls made to Telegram (for tests and metrics)
        self.failures = 0

    def __len__(self) -> int:
        return len(self._cache)

    async def is_admin(self, chat: Chat, user_id: int) -> bool:
        """True if ``user_id`` administers ``chat``; a private chat's user always does."""
        if chat.type == "private":
            return True
        if not chat.is_group:
            return False  # channels have no commands from users
        entry = self._fresh(chat.id)
        if entry is not None and (
            user_id in entry.admins or entry.failed or self._age(entry) < self.miss_refresh
        ):
            return user_id in entry.admins
        entry = await self._lookup(chat.id)
        return user_id in entry.admins

    def forget(self, chat_id: int) -> None:
        """Drop a chat's cached list (e.g. after Telegram reported a change)."""
        self._cache.pop(chat_id, None)

    def _age(self, entry: _Entry) -> float:
        return self._clock() - entry.fetched_at

    def _fresh(self, chat_id: int) -> _Entry | None:
        entry = self._cache.get(chat_id)
        if entry is None:
            return None
        if self._age(entry) >= (self.failure_ttl if entry.failed else self.ttl):
            del self._cache[chat_id]
            return None
        self._cache.move_to_end(chat_id)
        return entry

    async def _lookup(self, chat_id: int) -> _Entry:
        task = self._pending.get(chat_id)
        if task is None:
            task = asyncio.create_task(self._fetch(chat_id), name=f"chat-admins-{chat_id}")
            self._pending[chat_id] = task
            task.add_done_callback(lambda _t: self._pending.pop(chat_id, None))
        # shield: one caller being cancelled must not cancel the lookup the others await
        entry = await asyncio.shield(task)
        return entry

    async def _fetch(self, chat_id: int) -> _Entry:
        self.lookups += 1
        try:
            async with asyncio.timeout(self.timeout):
                members = await self._bot.get_chat_administrators(
                    chat_id, read_timeout=self.timeout, connect_timeout=self.timeout
                )
        except (TimeoutError, TelegramError) as exc:
            self.failures += 1
            log.warning(
                "could not read the admins of chat %s (%s); treating its users as non-admins "
                "for %.0fs. Is the bot still in that group and Telegram reachable?",
                chat_id,
                exc if str(exc) else type(exc).__name__,
                self.failure_ttl,
            )
            entry = _Entry(frozenset(), self._clock(), failed=True)
        else:
            admins = frozenset(m.user.id for m in members if m.status in ADMIN_STATUSES)
            entry = _Entry(admins, self._clock())
        self._store(chat_id, entry)
        return entry

    def _store(self, chat_id: int, entry: _Entry) -> None:
        self._cache[chat_id] = entry
        self._cache.move_to_end(chat_id)
        while len(self._cache) > self.max_chats:
            self._cache.popitem(last=False)
