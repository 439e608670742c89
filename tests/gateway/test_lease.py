"""The active-gateway lease on a real nats-server: one holder, handover, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from botbus import topology
from botbus.gateway.lease import Lease, LeaseInvalid, LeaseLost

TTL = 1.2  # seconds; short so expiry happens within the test
RENEW = 0.2
MARGIN = 0.5


@pytest.fixture
async def kv(admin_nc: Client) -> AsyncIterator[KeyValue]:
    config = KeyValueConfig(bucket="lease_test", history=1, ttl=TTL, storage=StorageType.FILE)
    yield await topology.open_bucket(admin_nc.jetstream(), config)


def lease(kv: KeyValue, holder: str) -> Lease:
    return Lease(
        kv, "gateway.1", holder, ttl=TTL, renew_every=RENEW, margin=MARGIN, standby_poll=0.1
    )


@pytest.mark.slow  # 3 s: waits out lease TTLs
async def test_one_holder_at_a_time_and_a_clean_handover(kv: KeyValue) -> None:
    a, b = lease(kv, "a"), lease(kv, "b")
    await a.acquire()
    keeping = asyncio.create_task(a.keep())
    standby = asyncio.create_task(b.acquire())
    # Several TTLs pass with a renewing holder: the standby never gets in.
    done, _ = await asyncio.wait({standby, keeping}, timeout=2 * TTL)
    assert not done and a.held and not b.held
    keeping.cancel()
    await a.release()
    async with asyncio.timeout(1):  # a release hands over at once, no TTL to wait
        await standby
    assert b.held and not a.held


async def test_a_dead_holder_expires_and_loses_its_lease(kv: KeyValue) -> None:
    a, b = lease(kv, "a"), lease(kv, "b")
    await a.acquire()
    loop = asyncio.get_running_loop()
    died = loop.time()  # a never renews: as if killed -9 right after taking it
    async with asyncio.timeout(5 * TTL):
        await b.acquire()
    assert loop.time() - died >= TTL - MARGIN  # never before the lease could have expired
    with pytest.raises(LeaseLost):
        async with asyncio.timeout(2):
            await a.keep()
    assert not a.held


async def test_guard_cancels_work_once_the_lease_is_not_renewed(kv: KeyValue) -> None:
    a = lease(kv, "a")
    await a.acquire()
    cancelled = asyncio.Event()

    async def long_poll() -> list[object]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return []

    # No keep(): the lease is not renewed, so the guard ends the poll by itself.
    with pytest.raises(LeaseInvalid):
        async with asyncio.timeout(TTL + 1):
            await a.guard(long_poll())
    assert cancelled.is_set() and not a.held


async def test_guard_passes_results_while_held(kv: KeyValue) -> None:
    a = lease(kv, "a")
    await a.acquire()

    async def poll() -> list[object]:
        return [1, 2]

    assert await a.guard(poll()) == [1, 2]


async def test_a_gateway_restarted_in_place_takes_its_lease_back(kv: KeyValue) -> None:
    before = lease(kv, "host:/data")
    await before.acquire()  # then killed -9: never released
    after, other = lease(kv, "host:/data"), lease(kv, "elsewhere:/data")
    async with asyncio.timeout(TTL - MARGIN):  # well before the lease could expire
        await after.acquire()
    assert after.held
    standby = asyncio.create_task(other.acquire())
    done, _ = await asyncio.wait({standby}, timeout=0.3)
    assert not done  # a different gateway still waits its turn
    standby.cancel()
