"""The bulk backlog: which bulk actions to a chat are still in the stream, unfetched.

The relay fetches each lane with its own durable consumer, so a reply is
fetched at once while a broadcast waits in BOTBUS_OUT (the bulk consumer holds
at most its ``max_ack_pending`` window). Per-chat order needs more: a reply
must not overtake a bulk action to the same chat that was stored before it,
however far back in the backlog that action waits. :class:`BulkBacklog`
answers "which bulk actions to these chats, stored before these replies, has
the bulk consumer not finished?" so the relay can send them first.

How, cheaply:

* one request per batch of replies in the common case: the bulk consumer's
  info says whether anything is unfinished at all (nothing ack-pending and
  nothing pending: no lookup);
* otherwise an index of the unfinished range of the bulk lane, chat id ->
  stream sequences, built by reading the stream once with an ephemeral pull
  consumer (no acks) and extended only as far as the replies need it; the
  range below the bulk consumer's ack floor is dropped as it advances. Its
  memory follows the backlog: a few dozen bytes per bulk action scanned;
* the few actions found are read back one by one (an ephemeral consumer
  starting at each sequence), since only their chat ids were kept.

The range scanned starts at the bulk consumer's *ack floor*, not at what it
delivered: actions a crashed gateway held (delivered, never acked) are
found too, not only those still waiting in the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Container, Mapping
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from botbus import subjects

log = logging.getLogger(__name__)

SCAN_BATCH = 1000  # messages per fetch while indexing
# Seconds to wait for messages known to be there (a fetch asks only for as many
# as are pending, so it returns as soon as they arrive, never at its timeout).
READ_TIMEOUT = 2.0
SCANNER_INACTIVE = 60.0  # seconds before the server drops an unused scanner consumer
READER_INACTIVE = 5.0  # seconds before the server drops a one-shot reader consumer


class BacklogError(Exception):
    """The backlog could not be looked up (the caller goes on without it)."""


@dataclass(frozen=True)
class Stored:
    """A bulk action read back from the stream."""

    seq: int  # stream sequence
    subject: str
    data: bytes


def _chat_of(data: bytes) -> int | None:
    # Only the chat id is kept; an unreadable payload is left to the relay,
    # which terminates it when the bulk consumer hands it over.
    try:
        value = json.loads(data).get("chat_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _stream_seq(msg: Msg) -> int:
    return int(msg.metadata.sequence.stream)


class BulkBacklog:
    """Looks up unfinished bulk actions to given chats in BOTBUS_OUT."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._lane = subjects.outbound_lane("bulk")
        self._durable = subjects.CONSUMER_GATEWAY_OUTBOUND["bulk"]
        self._scanner: JetStreamContext.PullSubscription | None = None
        self._scanner_pending = 0  # bulk actions known to wait for the scanner
        self._scanned = 0  # the index covers the bulk lane's sequences (floor, scanned]
        self._floor = 0
        self._index: dict[int, list[int]] = {}
        self._indexed = 0
        self._lock = asyncio.Lock()  # one lookup at a time extends the index
        # Set by each lookup: the bulk lane had nothing unfinished at all (every
        # bulk action stored until then was acked).
        self.lane_clear = False

    @property
    def indexed(self) -> int:
        """Bulk actions in the index (for logs and tests)."""
        return self._indexed

    async def earlier(
        self, before: Mapping[int, int], known: Container[int] = frozenset()
    ) -> list[Stored]:
        """Unfinished bulk actions to each chat stored before ``before[chat]``.

        ``before`` maps a chat id to a stream sequence (the reply's); ``known``
        holds the stream sequences the caller fetched itself, which are not
        read back. The result is in stream order. Actions the bulk consumer
        acked are never returned; others it delivered may be.
        """
        self.lane_clear = False
        if not before:
            return []
        async with self._lock:
            try:
                return await self._earlier(before, known)
            except (NatsError, NatsTimeoutError, TimeoutError) as exc:
                await self._drop_scanner()
                raise BacklogError(f"bulk backlog lookup failed: {exc}") from exc

    async def _earlier(self, before: Mapping[int, int], known: Container[int]) -> list[Stored]:
        try:
            info = await self._js.consumer_info(subjects.STREAM_OUTBOUND, self._durable)
        except NotFoundError:
            return []  # no bulk consumer yet (the lane's state is unknown)
        floor = int(info.ack_floor.stream_seq if info.ack_floor else 0)
        delivered = int(info.delivered.stream_seq if info.delivered else 0)
        limit = max(before.values())
        if (info.num_pending or 0) == 0 and floor >= delivered:
            self.lane_clear = True
            await self._reset(floor)
            return []  # every bulk action stored so far was acked
        if floor >= limit - 1:
            return []  # everything before the replies was acked
        await self._advance_floor(floor)
        await self._scan_to(limit - 1)
        seqs = sorted(
            seq
            for chat, reply_seq in before.items()
            for seq in self._index.get(chat, ())
            if floor < seq < reply_seq and seq not in known
        )
        if not seqs:
            return []
        found = await asyncio.gather(*(self._read(seq) for seq in seqs))
        return [stored for stored in found if stored is not None]

    async def close(self) -> None:
        """Drop the scanner consumer and the index."""
        await self._reset(0)

    # -- the index -------------------------------------------------------------

    async def _reset(self, floor: int) -> None:
        self._index.clear()
        self._indexed = 0
        self._floor = self._scanned = max(floor, self._floor)
        await self._drop_scanner()

    async def _advance_floor(self, floor: int) -> None:
        if floor <= self._floor:
            return
        if floor >= self._scanned:
            await self._reset(floor)  # everything indexed was acked meanwhile
            return
        self._floor = floor
        # Dropping acked entries costs a pass over the index: do it once the
        # dead part is as big as the live one.
        live = self._scanned - floor
        if self._indexed > 2 * live:
            self._index = {
                chat: kept
                for chat, seqs in self._index.items()
                if (kept := [s for s in seqs if s > floor])
            }
            self._indexed = sum(len(seqs) for seqs in self._index.values())

    async def _scan_to(self, target: int) -> None:
        """Extend the index until it covers every bulk action up to ``target``."""
        while self._scanned < target:
            scanner = await self._scanner_sub()
            if self._scanner_pending == 0:
                # Asked after the replies were stored: nothing pending means every
                # bulk action before them was indexed.
                self._scanner_pending = int((await scanner.consumer_info()).num_pending or 0)
                if self._scanner_pending == 0:
                    self._scanned = target
                    return
            msgs = await scanner.fetch(min(self._scanner_pending, SCAN_BATCH), timeout=READ_TIMEOUT)
            for msg in msgs:
                seq = _stream_seq(msg)
                chat = _chat_of(msg.data)
                if chat is not None:
                    self._index.setdefault(chat, []).append(seq)
                    self._indexed += 1
                self._scanned = max(self._scanned, seq)
            self._scanner_pending = int(msgs[-1].metadata.num_pending or 0) if msgs else 0

    async def _scanner_sub(self) -> JetStreamContext.PullSubscription:
        if self._scanner is None:
            self._scanner = await self._js.pull_subscribe(
                self._lane,
                stream=subjects.STREAM_OUTBOUND,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.NONE,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=self._scanned + 1,
                    inactive_threshold=SCANNER_INACTIVE,
                    mem_storage=True,
                ),
            )
        return self._scanner

    async def _drop_scanner(self) -> None:
        scanner, self._scanner = self._scanner, None
        self._scanner_pending = 0
        if scanner is None:
            return
        try:
            await scanner.unsubscribe()
        except NatsError as exc:  # the server drops it after SCANNER_INACTIVE anyway
            log.debug("bulk backlog scanner not unsubscribed: %s", exc)

    # -- reading one action back ------------------------------------------------

    async def _read(self, seq: int) -> Stored | None:
        reader = await self._js.pull_subscribe(
            self._lane,
            stream=subjects.STREAM_OUTBOUND,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=seq,
                inactive_threshold=READER_INACTIVE,
                mem_storage=True,
            ),
        )
        try:
            [msg] = await reader.fetch(1, timeout=READ_TIMEOUT)
        except (TimeoutError, NatsTimeoutError):
            return None  # gone (the stream's limits removed it)
        finally:
            try:
                await reader.unsubscribe()
            except NatsError as exc:
                log.debug("bulk backlog reader not unsubscribed: %s", exc)
        if _stream_seq(msg) != seq:
            return None  # that one is gone; the next one is not what was asked for
        return Stored(seq=seq, subject=msg.subject, data=msg.data)
