"""Issued identities: each component can do its job and nothing more.

Every identity comes from the broker's authority (botbus.auth): the gateway and
admin with their own permission lists, services through the scoped signing key's
template, publishers through theirs. None of them is listed in any configuration.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StreamConfig

from botbus import subjects
from botbus.models import encode
from botbus.provision import service_bucket
from botbus.topology import STREAMS
from services.alerts.bus import ALERTS_ANY, STREAM_ALERTS, alert_channel
from tests.auth.conftest import DENIED, REQUEST_TIMEOUT, Connect
from tests.sdk.conftest import Gateway
from tests.support.builders import make_command, make_message


async def last_seq(admin: Client, stream: str) -> int:
    """The last sequence stored in ``stream`` (counts messages even once removed)."""
    info = await admin.jetstream().stream_info(stream)
    return info.state.last_seq


@pytest.mark.slow  # 3 s of real waiting under load
async def test_a_service_cannot_consume_another_services_commands(
    as_user: Connect, topology: Client, gateway: Gateway
) -> None:
    js_admin = topology.jetstream()
    await js_admin.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(
            durable_name="search_cmd",
            filter_subject=subjects.inbound_commands_of("search"),
            deliver_policy=DeliverPolicy.NEW,
        ),
    )
    await gateway.command(make_command("cats", service="search", command="search"))
    echo = await as_user("echo")

    # Its own consumer: allowed (the control that proves the user works).
    await echo.js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(
            name="echo_cmd",
            durable_name="echo_cmd",
            filter_subject=subjects.inbound_commands_of("echo"),
        ),
    )
    # Its own consumer name over search's commands: denied.
    with pytest.raises(DENIED):
        await echo.js.add_consumer(
            subjects.STREAM_INBOUND,
            ConsumerConfig(
                name="echo_cmd",
                durable_name="echo_cmd",
                filter_subject=subjects.inbound_commands_of("search"),
            ),
        )
    # An ephemeral consumer, or pulling from search's durable: denied.
    with pytest.raises(DENIED):
        await echo.js.pull_subscribe(
            subjects.inbound_commands_of("search"), stream=subjects.STREAM_INBOUND
        )
    stolen = await echo.js.pull_subscribe_bind(durable="search_cmd", stream=subjects.STREAM_INBOUND)
    with pytest.raises(DENIED):
        await stolen.fetch(1, timeout=REQUEST_TIMEOUT)
    # Listening to the subject itself: denied.
    await echo.nc.subscribe(subjects.INBOUND_ALL)
    await echo.denied(f'subscription to "{subjects.INBOUND_ALL}"')

    info = await js_admin.consumer_info(subjects.STREAM_INBOUND, "search_cmd")
    assert info.num_pending == 1 and info.num_ack_pending == 0  # still waiting for search


@pytest.mark.slow  # 3 s of real waiting under load
async def test_a_service_cannot_read_the_gateways_buckets(
    as_user: Connect, gateway: Gateway
) -> None:
    users = await gateway.js.create_key_value(KeyValueConfig(bucket=subjects.KV_GATEWAY_USERS))
    await gateway.js.create_key_value(KeyValueConfig(bucket=subjects.service_bucket("search")))
    await users.put("lang.42", b"es")
    echo = await as_user("echo")

    own = await service_bucket(echo.nc, "echo")  # its own bucket, provisioned: fine
    await own.put("k", b"v")
    assert (await own.get("k")).value == b"v"
    with pytest.raises(DENIED):
        await echo.js.key_value(subjects.KV_GATEWAY_USERS)
    with pytest.raises(DENIED):
        await echo.js.get_last_msg(f"KV_{subjects.KV_GATEWAY_USERS}", "$KV.botbus_users.lang.42")
    with pytest.raises(DENIED):
        await echo.js.key_value(subjects.service_bucket("search"))  # nor another service's
    await echo.nc.subscribe(f"$KV.{subjects.KV_GATEWAY_USERS}.>")
    await echo.denied(f'subscription to "$KV.{subjects.KV_GATEWAY_USERS}.>"')


async def test_only_the_gateway_can_publish_inbound_traffic(
    as_user: Connect, topology: Client, gateway: Gateway
) -> None:
    before = await last_seq(topology, subjects.STREAM_INBOUND)
    for name in ("echo", "search", "publisher", "alerts"):
        intruder = await as_user(name)
        await intruder.nc.publish(subjects.INBOUND_MESSAGES, encode(make_message()))
        await intruder.nc.publish(subjects.inbound_command("echo", "echo"), encode(make_command()))
        await intruder.denied(f'publish to "{subjects.INBOUND_MESSAGES}"')
        await intruder.denied(f'publish to "{subjects.inbound_command("echo", "echo")}"')
    assert await last_seq(topology, subjects.STREAM_INBOUND) == before

    await gateway.command(make_command())
    assert await last_seq(topology, subjects.STREAM_INBOUND) == before + 1


async def test_an_alert_publisher_can_publish_only_to_alert_channels(
    as_user: Connect, topology: Client
) -> None:
    publisher = await as_user("publisher")
    # The alerts service creates its feed stream at start-up; here the admin does.
    await topology.jetstream().add_stream(name=STREAM_ALERTS, subjects=[ALERTS_ANY])
    names = [s.name for s in STREAMS] + [STREAM_ALERTS]
    before = {name: await last_seq(topology, name) for name in names}

    ack = await publisher.js.publish(alert_channel("news"), b'{"title": "hi"}')
    assert ack.stream == STREAM_ALERTS
    for subject in (
        subjects.outbound("echo", "interactive"),
        subjects.EVENT_FORGET,
        subjects.dead_letter("echo"),
        subjects.INBOUND_MESSAGES,
        f"$JS.API.STREAM.DELETE.{STREAM_ALERTS}",
        "alerts.remind.fired",  # the alerts service's reminders are not a publisher's
    ):
        await publisher.nc.publish(subject, b"{}")
        await publisher.denied(f'"{subject}"')
    await publisher.nc.subscribe(ALERTS_ANY)
    await publisher.denied(f'subscription to "{ALERTS_ANY}"')

    after = {name: await last_seq(topology, name) for name in names}
    assert after[STREAM_ALERTS] == before[STREAM_ALERTS] + 1
    assert {k: v for k, v in after.items() if k != STREAM_ALERTS} == {
        k: v for k, v in before.items() if k != STREAM_ALERTS
    }


@pytest.mark.slow  # 3 s of real waiting under load
async def test_a_service_publishes_only_its_own_actions_and_cannot_touch_streams(
    as_user: Connect, topology: Client
) -> None:
    echo = await as_user("echo")
    await echo.js.publish(subjects.outbound("echo", "interactive"), b"{}")  # its own: stored
    before = await last_seq(topology, subjects.STREAM_OUTBOUND)
    await echo.nc.publish(subjects.outbound("search", "interactive"), b"{}")
    await echo.denied(subjects.outbound("search", "interactive"))
    await echo.nc.publish(subjects.dead_letter("search"), b"{}")
    await echo.denied(subjects.dead_letter("search"))
    assert await last_seq(topology, subjects.STREAM_OUTBOUND) == before
    with pytest.raises(DENIED):
        await echo.js.update_stream(
            StreamConfig(name=subjects.STREAM_INBOUND, subjects=[subjects.INBOUND_ALL], max_bytes=1)
        )
    with pytest.raises(DENIED):
        await echo.js.add_stream(StreamConfig(name="SNOOP", subjects=["botbus.in.>"]))
