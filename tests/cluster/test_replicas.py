"""A JetStream cluster of three local nats-servers: replicas and client failover."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from botbus import subjects, topology
from botbus.connect import close_within, connect, server_list
from botbus.errors import ConfigError
from botbus.natsserver import NatsCluster, NatsServer
from botbus.settings import Settings
from tests.conftest import connect_as

MESSAGES = 300


def test_server_list_splits_a_cluster_url() -> None:
    assert server_list("nats://a:4222, nats://b:4222,") == ["nats://a:4222", "nats://b:4222"]
    with pytest.raises(ConfigError, match="NATS_URL"):
        server_list(" , ")


async def test_single_server_keeps_one_replica(nats_server: NatsServer, settings: Settings) -> None:
    nc = await connect_as(nats_server, settings, "admin")
    try:
        js = nc.jetstream()
        assert topology.replicas_for(js) == 1
        await topology.ensure_topology(js)
        info = await js.stream_info(subjects.STREAM_INBOUND)
        assert info.config.num_replicas == 1
    finally:
        await nc.close()


@pytest.mark.slow
async def test_cluster_replicates_streams_and_buckets(
    nats_cluster: NatsCluster, settings: Settings
) -> None:
    nc = await connect(settings, "admin", url=nats_cluster.url)
    try:
        js = nc.jetstream()
        assert topology.replicas_for(js) == 3
        await topology.ensure_topology(js)
        for spec in topology.STREAMS:
            info = await js.stream_info(spec.name)
            assert info.config.num_replicas == 3, spec.name
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        kv = await topology.open_bucket(
            js, KeyValueConfig(bucket="cluster_test", history=1, storage=StorageType.FILE)
        )
        await kv.put("k", b"v")
        bucket = await js.stream_info("KV_cluster_test")
        assert bucket.config.num_replicas == 3
    finally:
        await close_within(nc, 5)


@pytest.mark.slow
async def test_streams_scale_up_and_never_down(
    nats_cluster: NatsCluster, settings: Settings
) -> None:
    nc = await connect(settings, "admin", url=nats_cluster.url)
    try:
        js = nc.jetstream()
        await topology.ensure_topology(js, replicas=1)  # e.g. created before the cluster grew
        assert (await js.stream_info(subjects.STREAM_OUTBOUND)).config.num_replicas == 1
        await topology.ensure_topology(js)
        assert (await js.stream_info(subjects.STREAM_OUTBOUND)).config.num_replicas == 3
        await topology.ensure_topology(js, replicas=1)  # a client that saw one node
        assert (await js.stream_info(subjects.STREAM_OUTBOUND)).config.num_replicas == 3
    finally:
        await close_within(nc, 5)


@pytest.mark.slow
async def test_client_rides_out_the_death_of_its_node(
    nats_cluster: NatsCluster, settings: Settings
) -> None:
    """Publishing through a node that is killed -9: every message stored exactly once."""
    nc = await connect(settings, "gateway", url=nats_cluster.url)
    try:
        js = nc.jetstream()
        await topology.ensure_topology(js)
        killed: int | None = None
        for n in range(MESSAGES):
            if n == MESSAGES // 3:
                assert nc.connected_url is not None
                killed = nats_cluster.urls.index(f"nats://{nc.connected_url.netloc}")
                nats_cluster.kill(killed)
            if n == 2 * MESSAGES // 3:
                assert killed is not None
                await nats_cluster.restart(killed)
            await _publish_until_acked(js, n)
        info = await js.stream_info(subjects.STREAM_INBOUND)
        # Interest retention keeps nothing without consumers; count what was stored.
        assert info.state.last_seq == MESSAGES
    finally:
        await close_within(nc, 5)


async def _publish_until_acked(js: nats.js.JetStreamContext, n: int) -> None:
    """Publish message ``n`` with its dedupe id until JetStream acknowledges it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            await js.publish(
                subjects.INBOUND_MESSAGES,
                b"{}",
                timeout=2,
                headers={"Nats-Msg-Id": f"test:{n}"},
            )
            return
        except (nats.errors.Error, TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)
