"""The sent-keys record: batch lookups against a real nats-server."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig

from botbus import topology
from botbus.gateway.sentkeys import MAX_KEYS_PER_LOOKUP, SentKeyLookupError, SentKeys


async def stored(nc: Client, count: int) -> None:
    """Wait until the bucket's stream holds ``count`` records (records are not acked)."""
    for _ in range(200):
        if (await nc.jetstream().stream_info("KV_t_sent")).state.messages >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the bucket never held {count} records")


@pytest.fixture
async def keys(admin_nc: Client) -> SentKeys:
    await topology.open_bucket(admin_nc.jetstream(), KeyValueConfig(bucket="t_sent", history=1))
    sent = SentKeys(admin_nc, "t_sent", timeout=2.0)
    await sent.start()
    return sent


async def test_find_returns_only_recorded_keys(keys: SentKeys, admin_nc: Client) -> None:
    assert await keys.find(["echo.a", "echo.b"]) == set()  # nothing recorded yet
    await keys.record("echo.a")
    await keys.record("echo.c.1")
    await stored(admin_nc, 2)
    assert await keys.find(["echo.a", "echo.b", "echo.c.1", "echo.c.2"]) == {"echo.a", "echo.c.1"}
    assert await keys.find([]) == set()


async def test_a_deleted_key_is_not_a_record(keys: SentKeys, admin_nc: Client) -> None:
    await keys.record("echo.gone")
    await stored(admin_nc, 1)
    kv = await admin_nc.jetstream().key_value("t_sent")
    await kv.delete("echo.gone")
    assert await keys.find(["echo.gone"]) == set()


async def test_lookups_larger_than_one_request_are_split(keys: SentKeys, admin_nc: Client) -> None:
    wanted = [f"svc.k{i}" for i in range(MAX_KEYS_PER_LOOKUP * 2 + 10)]
    recorded = set(wanted[::7])
    for key in recorded:
        await keys.record(key)
    await stored(admin_nc, len(recorded))
    assert await keys.find(wanted) == recorded


async def test_a_missing_bucket_is_a_clear_error(admin_nc: Client) -> None:
    sent = SentKeys(admin_nc, "t_no_such_bucket", timeout=1.0)
    await sent.start()
    with pytest.raises(SentKeyLookupError):
        await sent.find(["svc.k"])
    await sent.stop()
