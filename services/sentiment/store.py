"""Where the mood documents live in KV, and which instance writes which.

Keys of the bucket ``svc_sentiment``:

- ``chat.<chat_id>.<slot>`` / ``user.<user_id>.<slot>``: the messages counted
  by the instance that holds slot ``<slot>``. Only that instance writes them,
  so two instances never race for a key: each keeps the documents it writes
  in memory with their KV revision (:class:`MoodStore`), and counting a
  message costs one write per document and no read. The write is still a
  compare-and-set on the remembered revision, so if anyone else wrote the key
  meanwhile (``/forgetme`` purged it, or a paused instance lost its slot to
  another) the write fails, the document is read afresh and the change
  applied again: nothing is lost or counted twice.
- ``chat.<chat_id>`` / ``user.<user_id>``: documents of the earlier layout,
  one shared by all instances. Still read and merged, never written again.
- ``slot.<n>``: the lease of slot ``n`` (:class:`SlotLease`).

A chat's (or a user's) mood is the sum of all its documents, merged at read
time (:meth:`MoodStore.load`: the bucket's stream lists the keys under
``chat.<chat_id>.>`` in one request, then each is read).

Slots keep the number of documents bounded. An instance takes the lowest
free slot when it starts, renews its lease every :data:`LEASE_RENEW` seconds
and frees it when it stops; a slot whose lease was not renewed for
:data:`LEASE_TTL` seconds (its instance crashed) is free too. A restarted
instance therefore continues the documents of a slot another one left, and a
chat has at most as many documents as instances ever ran at the same time
(plus the old one). Lease times are wall-clock times: the hosts' clocks must
agree to within a few seconds (NTP), or a slot may be taken from an instance
that is alive; that costs speed (the two then retry each other's writes),
never counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.sentiment.aggregate import MoodDoc, MoodDocError
from services.sentiment.background import end_task, stop_requested
from services.sentiment.batching import KeyBatcher

log = logging.getLogger(__name__)

# "chat": a chat's messages; "user": a user's private-chat messages; "member": a
# user's messages in one group, entity "<chat id>.<user id>" (so a user's
# /mood me in a group shows that group only, and their private view merges all).
Kind = Literal["chat", "user", "member"]
Entity = int | str

LEASE_TTL = 30.0  # seconds without renewal after which another instance may take a slot
LEASE_RENEW = 10.0  # seconds between two renewals of a lease
MAX_SLOTS = 256  # slots an instance looks at before giving up (instances at the same time)
CACHED_DOCS = 4096  # documents an instance keeps in memory (least recently written go first)
CAS_ATTEMPTS = 20  # compare-and-set retries of one write before giving up
CAS_BACKOFF = 0.002  # seconds: first jittered pause after losing a compare-and-set race
CAS_BACKOFF_MAX = 0.05  # seconds: longest pause between two attempts


class SlotError(RuntimeError):
    """No slot could be claimed: too many instances, or KV refused."""


def _parse(key: str, raw: bytes | None) -> MoodDoc | None:
    """The document stored at ``key``; None (and a warning) when it is unreadable."""
    try:
        return MoodDoc.from_json(raw)
    except MoodDocError as exc:
        log.warning("mood document %s is unreadable (%s); leaving it out", key, exc)
        return None


class SlotLease:
    """This instance's slot: the suffix of the mood documents it writes.

    ``slot.<n>`` holds ``{"instance": id, "renewed": unix time}``. See the
    module docstring for why slots exist and what happens when one is lost.
    """

    def __init__(
        self,
        kv: KeyValue,
        instance_id: str,
        *,
        ttl: float = LEASE_TTL,
        renew_every: float = LEASE_RENEW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kv = kv
        self._instance_id = instance_id
        self._ttl = ttl
        self._renew_every = renew_every
        self._clock = clock
        self._slot: int | None = None
        self._revision = 0
        self.fresh = False
        """True if the slot was never used before: none of its documents exists yet."""
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()  # ends the renewer even if it lost a cancel

    @property
    def slot(self) -> int:
        """The slot held now (it changes only if the lease was lost)."""
        if self._slot is None:
            raise RuntimeError("no slot claimed yet: call claim() first")
        return self._slot

    def _value(self) -> bytes:
        return json.dumps({"instance": self._instance_id, "renewed": self._clock()}).encode()

    async def claim(self) -> int:
        """Take the lowest free slot (free: absent, released or expired) and return it."""
        for n in range(MAX_SLOTS):
            key = f"slot.{n}"
            self.fresh = False
            try:
                # Revision 0: the key was never written, so no document of this slot exists.
                self._revision = await self._kv.update(key, self._value(), last=0)
                self.fresh = True
            except KeyWrongLastSequenceError:
                try:
                    self._revision = await self._kv.create(key, self._value())  # was freed
                except KeyWrongLastSequenceError:
                    if not await self._take_expired(key):
                        continue
            self._slot = n
            log.info("instance %s writes its mood documents as slot %s", self._instance_id, n)
            return n
        raise SlotError(
            f"all {MAX_SLOTS} sentiment slots are leased: run fewer sentiment instances, "
            f"or wait {self._ttl:g}s for the leases of stopped ones to expire"
        )

    async def _take_expired(self, key: str) -> bool:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return False  # freed between our two calls: the next claim round may get it
        try:
            renewed = float(json.loads(entry.value or b"{}")["renewed"])
        except (ValueError, KeyError, TypeError):
            renewed = 0.0  # an unreadable lease holds nothing
        if self._clock() - renewed < self._ttl or entry.revision is None:
            return False
        try:
            self._revision = await self._kv.update(key, self._value(), last=entry.revision)
        except KeyWrongLastSequenceError:
            return False  # another instance took it first
        return True

    async def renew(self) -> None:
        """Renew the lease; claim a new slot if it was taken from us."""
        try:
            self._revision = await self._kv.update(
                f"slot.{self.slot}", self._value(), last=self._revision
            )
        except KeyWrongLastSequenceError:
            lost = self.slot
            await self.claim()
            log.warning(
                "the lease of sentiment slot %s was taken (this instance was silent for over "
                "%ss?); now writing as slot %s",
                lost,
                self._ttl,
                self._slot,
            )

    def start(self) -> None:
        """Renew the lease every ``renew_every`` seconds until :meth:`stop`."""
        self._renewer = asyncio.create_task(self._renew_forever(), name="sentiment-slot-lease")

    async def _renew_forever(self) -> None:
        while not await stop_requested(self._stopping, self._renew_every):
            try:
                await self.renew()
            except (NatsError, TimeoutError, SlotError) as exc:
                # Not fatal: the next round tries again; until then the lease may lapse.
                log.warning("could not renew the lease of sentiment slot %s: %s", self._slot, exc)

    async def stop(self) -> None:
        """Stop renewing and free the slot for the next instance."""
        self._stopping.set()
        if self._renewer is not None:
            await end_task(self._renewer)
        if self._slot is None:
            return
        try:
            await self._kv.delete(f"slot.{self._slot}", last=self._revision)
        except KeyWrongLastSequenceError:
            pass  # someone else holds it now: theirs to free
        except (NatsError, TimeoutError) as exc:
            log.warning(
                "could not free sentiment slot %s (%s); it expires in %ss",
                self._slot,
                exc,
                self._ttl,
            )
        self._slot = None


class MoodStore:
    """One instance's access to the mood documents: its own for writing, all for reading."""

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        bucket: str,
        lease: SlotLease,
        *,
        cached: int = CACHED_DOCS,
    ) -> None:
        self._js = js
        self._kv = kv
        self._bucket = bucket
        self._lease = lease
        self._cached = cached
        # key -> (document as stored, its revision); only documents this instance writes.
        self._docs: OrderedDict[str, tuple[MoodDoc, int]] = OrderedDict()
        self._batcher: KeyBatcher[MoodDoc] = KeyBatcher(self._write)
        self._evicted = False  # a document was dropped from memory: it may exist unread
        # chat -> (merged documents of the other slots, monotonic time read)
        self._others: dict[int, tuple[MoodDoc, float]] = {}

    def own_key(self, kind: Kind, entity: Entity) -> str:
        """The key of this instance's document of ``kind`` ``entity``."""
        return f"{kind}.{entity}.{self._lease.slot}"

    def count(
        self, kind: Kind, entity: Entity, change: Callable[[MoodDoc], None]
    ) -> asyncio.Future[MoodDoc]:
        """Apply ``change`` to this instance's document; the future is the document once stored.

        Changes to one document arriving together share one write
        (:class:`~services.sentiment.batching.KeyBatcher`).
        """
        return self._batcher.submit(self.own_key(kind, entity), change)

    async def _write(self, key: str, change: Callable[[MoodDoc], None]) -> MoodDoc:
        for attempt in range(CAS_ATTEMPTS):
            # Taken out while written: a failed write must not leave its change behind.
            cached = self._docs.pop(key, None)
            if cached is not None:
                doc, revision = cached
            elif attempt == 0 and self._lease.fresh and not self._evicted:
                # Nobody ever wrote as this slot, and we forgot none of our documents:
                # the key cannot exist, so there is nothing to read.
                doc, revision = MoodDoc(), None
            else:
                doc, revision = await self._read_own(key)
            change(doc)
            try:
                if revision is None:
                    stored = await self._kv.create(key, doc.to_json())
                else:
                    stored = await self._kv.update(key, doc.to_json(), last=revision)
            except KeyWrongLastSequenceError:
                # Written by someone else since we last did (see the module docstring):
                # read it again. A pause only if it keeps happening.
                if attempt:
                    pause = min(CAS_BACKOFF_MAX, CAS_BACKOFF * 2 ** min(attempt - 1, 5))
                    await asyncio.sleep(random.uniform(0, pause))  # jitter, not a secret
                continue
            self._docs[key] = (doc, stored)
            if len(self._docs) > self._cached:
                self._docs.popitem(last=False)
                self._evicted = True
            return doc
        raise RuntimeError(
            f"KV key {key} kept changing under this instance: gave up after {CAS_ATTEMPTS} "
            "attempts; the message will be retried (are two instances sharing a slot?)"
        )

    async def _read_own(self, key: str) -> tuple[MoodDoc, int | None]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return MoodDoc(), None
        doc = _parse(key, entry.value)
        if doc is None:
            log.warning("mood document %s is unreadable; counting it afresh", key)
            doc = MoodDoc()
        return doc, entry.revision

    async def keys(self, kind: Kind, entity: Entity) -> list[str]:
        """The keys of every slot's document of ``kind`` ``entity`` (deleted ones included).

        One request, no consumer: the bucket's stream lists the subjects it holds.
        """
        prefix = f"$KV.{self._bucket}."
        info = await self._js.stream_info(
            f"KV_{self._bucket}", subjects_filter=f"{prefix}{kind}.{entity}.>"
        )
        return sorted(subject.removeprefix(prefix) for subject in info.state.subjects or {})

    async def parts(self, kind: Kind, entity: Entity) -> dict[str, bytes]:
        """Every stored document of ``kind`` ``entity``, unparsed: all slots and the old key."""
        keys = await self.keys(kind, entity)
        if "*" not in str(entity):  # a pattern names no single document of the old layout
            keys.append(f"{kind}.{entity}")
        values = await asyncio.gather(*(self._value(key) for key in keys))
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    async def _value(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None  # never written, deleted or purged
        return entry.value

    async def load(self, kind: Kind, entity: Entity, *, skip_own: bool = False) -> MoodDoc:
        """All counts of ``kind`` ``entity`` merged (unreadable documents left out)."""
        merged = MoodDoc()
        own = self.own_key(kind, entity)
        for key, raw in (await self.parts(kind, entity)).items():
            if skip_own and key == own:
                continue
            doc = _parse(key, raw)
            if doc is not None:
                merged.merge(doc)
        return merged

    async def others(self, chat_id: int, max_age: float) -> MoodDoc:
        """The chat's documents written by the other instances, re-read if older than max_age."""
        known = self._others.get(chat_id)
        now = time.monotonic()
        if known is not None and now - known[1] < max_age:
            return known[0]
        doc = await self.load("chat", chat_id, skip_own=True)
        self._others[chat_id] = (doc, now)
        return doc

    def cached_others(self, chat_id: int, max_age: float) -> MoodDoc | None:
        """The other instances' documents of the chat, if read less than max_age ago."""
        known = self._others.get(chat_id)
        if known is None or time.monotonic() - known[1] >= max_age:
            return None
        return known[0]

    async def forget(self, kind: Kind, entity: Entity) -> list[str]:
        """Purge every document of ``kind`` ``entity`` (every slot, and the old key)."""
        keys = sorted(await self.parts(kind, entity))
        for key in keys:
            self._docs.pop(key, None)
            await self._kv.purge(key)
        return keys
