"""The record of what Telegram accepted: which idempotency keys were sent.

Keys live in the gateway's KV bucket ``botbus_sent`` (one small value per
key, expiring with the bucket's TTL). The relay looks up every action it
fetches before sending it, so reads are on every reply's path and, during a
broadcast, a thousand times a second. :class:`SentKeys` reads them the
cheap way:

* one *batch direct get* per fetched batch (JetStream's ``multi_last``
  request on ``$JS.API.DIRECT.GET.<stream>``, nats-server 2.11+): the
  server streams back the keys it holds and ends with an ``EOB`` status,
  so a batch of 128 actions costs one request instead of 128;
* replies arrive on one wildcard inbox subscription made at start, so a
  lookup costs no SUB/UNSUB and no task.

Writes (:meth:`SentKeys.record`) are plain publishes to the key's KV
subject, not awaited for their PubAck (a request each, at broadcast rates a
large share of the gateway's CPU). The relay records a key before it acks
the action. A record lost on the way (the connection dropping at that
instant) can only matter if the same action is published again later, and
then Telegram gets it twice: the same window as a crash between Telegram's
answer and the record, which the gateway already accepts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Iterable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError

log = logging.getLogger(__name__)

MAX_KEYS_PER_LOOKUP = 256  # subjects in one multi_last request (the server caps it at 1024)
LOOKUP_TIMEOUT = 5.0  # seconds for the server to stream one lookup's answer
_END_STATUSES = {"204", "404"}  # end of batch; nothing found


class SentKeyLookupError(Exception):
    """The server refused or did not finish a lookup (the caller retries the action)."""


class SentKeys:
    """Lookups and records of sent idempotency keys in one KV bucket."""

    def __init__(self, nc: Client, bucket: str, *, timeout: float = LOOKUP_TIMEOUT) -> None:
        self._nc = nc
        self._bucket = bucket
        self._api = f"$JS.API.DIRECT.GET.KV_{bucket}"
        self._timeout = timeout
        self._inbox = nc.new_inbox()
        self._ids = itertools.count()
        self._pending: dict[str, tuple[asyncio.Future[set[str]], set[str]]] = {}
        self._sub: Subscription | None = None

    def subject(self, key: str) -> str:
        """The KV subject that stores ``key``."""
        return f"$KV.{self._bucket}.{key}"

    async def start(self) -> None:
        """Subscribe to the lookups' answers."""
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._answer)

    async def stop(self) -> None:
        """Stop listening; lookups still waiting fail."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(SentKeyLookupError("the gateway is stopping"))
        self._pending.clear()

    async def find(self, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` that is recorded as sent."""
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        for start in range(0, len(wanted), MAX_KEYS_PER_LOOKUP):
            chunk = wanted[start : start + MAX_KEYS_PER_LOOKUP]
            found |= await self._lookup(chunk)
        return found

    async def record(self, key: str) -> None:
        """Record ``key`` as sent (a publish; see the module notes)."""
        await self._nc.publish(self.subject(key), b"1")

    async def _lookup(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        if self._sub is None:
            raise SentKeyLookupError("SentKeys.start() was not called")
        token = str(next(self._ids))
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._pending[token] = (future, set())
        request = {"multi_last": [self.subject(k) for k in keys], "batch": len(keys)}
        try:
            await self._nc.publish(
                self._api, json.dumps(request).encode(), reply=f"{self._inbox}.{token}"
            )
            async with asyncio.timeout(self._timeout):
                return await future
        except (TimeoutError, NatsTimeoutError) as exc:
            raise SentKeyLookupError(
                f"no complete answer to a sent-keys lookup within {self._timeout:g}s"
            ) from exc
        finally:
            self._pending.pop(token, None)

    async def _answer(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        waiting = self._pending.get(token)
        if waiting is None:
            return  # a lookup that already timed out
        future, found = waiting
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            subject = headers.get("Nats-Subject", "")
            if headers.get("KV-Operation") is None:  # a delete or purge marker is no record
                found.add(subject.removeprefix(f"$KV.{self._bucket}."))
            return
        if future.done():
            return
        if status in _END_STATUSES:
            future.set_result(found)
        else:
            description = headers.get("Description", "")
            future.set_exception(
                SentKeyLookupError(f"sent-keys lookup refused: {status} {description}".strip())
            )
