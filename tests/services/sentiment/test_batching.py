"""KeyBatcher: changes to one key arriving together are written together, none lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.sentiment.batching import KeyBatcher


def _append(value: int) -> Callable[[list[int]], None]:
    """A change that appends ``value`` to the document."""

    def change(doc: list[int]) -> None:
        doc.append(value)

    return change


class Store:
    """A key -> list store recording each write, like one compare-and-set per call."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.docs: dict[str, list[int]] = {}
        self.writes: list[str] = []
        self.sizes: list[int] = []  # changes applied by each write
        self.writing: set[str] = set()
        self.fail_on = fail_on

    async def write(self, key: str, change: Callable[[list[int]], None]) -> list[int]:
        assert key not in self.writing, f"two writes of {key} at once would race"
        self.writing.add(key)
        await asyncio.sleep(0)  # a real write awaits the server
        self.writing.discard(key)
        if key == self.fail_on:
            raise RuntimeError(f"KV key {key} is too contended")
        before = self.docs.get(key, [])
        doc = list(before)
        change(doc)
        self.docs[key] = doc
        self.writes.append(key)
        self.sizes.append(len(doc) - len(before))
        return doc


async def test_concurrent_changes_to_one_key_share_one_write_and_all_count() -> None:
    store = Store()
    batcher: KeyBatcher[list[int]] = KeyBatcher(store.write)
    docs = await asyncio.gather(
        *(batcher.apply("chat.1", _append(i)) for i in range(20)),
        batcher.apply("user.2", lambda d: d.append(99)),
    )
    assert sorted(store.docs["chat.1"]) == list(range(20))
    assert store.docs["user.2"] == [99]
    assert sorted(store.writes) == ["chat.1", "user.2"]  # one write per key
    assert all(doc == store.docs["chat.1"] for doc in docs[:20])  # each sees its change stored
    assert batcher.pending == 0


async def test_changes_arriving_during_a_write_go_into_the_next_bounded_write() -> None:
    store = Store()
    batcher: KeyBatcher[list[int]] = KeyBatcher(store.write, max_batch=4)
    await asyncio.gather(*(batcher.apply("k", _append(i)) for i in range(10)))
    assert sorted(store.docs["k"]) == list(range(10))
    assert store.sizes == [4, 4, 2]  # one write at a time, at most max_batch changes each


async def test_a_failed_write_fails_every_change_in_it_and_stores_none() -> None:
    store = Store(fail_on="chat.1")
    batcher: KeyBatcher[list[int]] = KeyBatcher(store.write)
    results = await asyncio.gather(
        *(batcher.apply("chat.1", lambda d: d.append(1)) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, RuntimeError) and "too contended" in str(r) for r in results)
    assert "chat.1" not in store.docs
    # The batcher is still usable afterwards.
    store.fail_on = None
    assert await batcher.apply("chat.1", lambda d: d.append(5)) == [5]


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        KeyBatcher(Store().write, max_batch=0)
