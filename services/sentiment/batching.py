"""Coalesce the mood-document updates of one instance, per KV key (group commit).

Every scored message changes two documents (its chat's and its user's). An
instance writes only its own documents (see :mod:`.store`), but its handlers
run concurrently, and done one message at a time the handlers of one busy
chat would queue one write each behind one another. A :class:`KeyBatcher`
keeps at most one write per key in flight: a change that arrives while its
key is being written waits for that write and goes into the next one with
every other change that arrived meanwhile (at most ``max_batch`` per write).
A quiet key is written at once, so batching costs no latency; a busy key
costs one write per round trip instead of one per message.

Each caller awaits the write that holds its change, so a message is still
acked only after it is counted, and a drain (which waits for in-flight
handlers) waits for the pending writes too: nothing is lost. A failed write
fails every change in it, and their messages are retried (the service then
counts each only in the documents that do not hold it yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

DEFAULT_MAX_BATCH = 64  # changes written together at most (bounds one write's work)

T = TypeVar("T")


@dataclass
class _Queue(Generic[T]):
    """Changes of one key waiting for a write, each with the future of its caller."""

    changes: list[tuple[Callable[[T], None], asyncio.Future[T]]] = field(default_factory=list)


class KeyBatcher(Generic[T]):
    """Apply changes to keyed documents with at most one write in flight per key.

    ``write(key, change)`` is the single-document writer (read, ``change``,
    compare-and-set, retry on a race); the batcher calls it once per batch
    with a change that applies every batched one in arrival order.
    """

    def __init__(
        self,
        write: Callable[[str, Callable[[T], None]], Awaitable[T]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._write = write
        self._max_batch = max_batch
        self._queues: dict[str, _Queue[T]] = {}  # a key is here while its writer runs
        self._writers: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Changes accepted but not yet written."""
        return sum(len(q.changes) for q in self._queues.values())

    async def apply(self, key: str, change: Callable[[T], None]) -> T:
        """Apply ``change`` to the document at ``key``; return the document once stored."""
        return await self.submit(key, change)

    def submit(self, key: str, change: Callable[[T], None]) -> asyncio.Future[T]:
        """Queue ``change`` for ``key``; the future is the document once stored.

        Awaiting several futures with ``asyncio.gather`` costs no task each,
        unlike several :meth:`apply` coroutines.
        """
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
            writer = asyncio.create_task(self._drain(key, queue), name=f"kv-writer:{key}")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        queue.changes.append((change, waiter))
        return waiter

    async def _drain(self, key: str, queue: _Queue[T]) -> None:
        """Write ``key``'s queued changes batch by batch until none is left."""
        try:
            while queue.changes:
                # Let the handlers woken with ours queue their changes first.
                await asyncio.sleep(0)
                batch = queue.changes[: self._max_batch]
                del queue.changes[: self._max_batch]
                await self._write_batch(key, batch)
        finally:
            del self._queues[key]

    async def _write_batch(
        self, key: str, batch: list[tuple[Callable[[T], None], asyncio.Future[T]]]
    ) -> None:
        def apply_all(doc: T) -> None:
            for change, _ in batch:
                change(doc)

        try:
            doc = await self._write(key, apply_all)
        except Exception as exc:
            # Not swallowed: each waiting handler re-raises it, so its message is retried.
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for _, waiter in batch:
            if not waiter.done():
                waiter.set_result(doc)
