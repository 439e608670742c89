"""botbus.provision: a service's streams and buckets are made by the core, on its request.

The provisioner runs on the gateway's identity, as the gateway runs it (the
``nats_server`` fixture starts one); the services ask with identities issued
for names botbus never heard of.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, KeyValueConfig, RePublish, StreamConfig
from nats.js.errors import APIError, KeyNotFoundError, NotFoundError

from botbus import provision as provisioning
from botbus import subjects
from botbus.auth import Authority, Grants
from botbus.connect import connect_options
from botbus.errors import ProvisionError
from botbus.natsserver import NatsServer, find_nats_server
from botbus.provision import (
    DEFAULT_QUOTA,
    LOCK_RETRY,
    BucketRequest,
    Busy,
    GiB,
    MiB,
    Provisioner,
    ProvisionReply,
    Quota,
    RateLimit,
    StreamRequest,
    provision,
    service_bucket,
    stream_request,
)
from botbus.settings import Settings
from tests.auth.conftest import DENIED, Component, LogIn


@pytest.fixture
async def weather(authority: Authority, log_in: LogIn) -> Component:
    """A service the core never heard of, with one extra suffix granted."""
    return await log_in(authority.issue_service("weather", Grants(resources=("cache",))))


async def ask(component: Component, payload: Any, service: str = "weather") -> ProvisionReply:
    """Send a raw request (bytes, or JSON of ``payload``) and read the reply."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    msg = await component.nc.request(subjects.provision(service), data, timeout=5)
    return ProvisionReply.model_validate_json(msg.data)


async def exists(admin: Client, stream: str) -> bool:
    try:
        await admin.jetstream().stream_info(stream)
    except NotFoundError:
        return False
    return True


async def test_a_new_service_gets_its_stream_and_bucket_and_can_use_them(
    weather: Component, admin_nc: Client
) -> None:
    request = stream_request("svc_weather", ["weather.readings.*"], max_age=3600, discard="old")
    reply = await provision(weather.nc, "weather", request)
    assert reply.created
    ack = await weather.js.publish("weather.readings.madrid", b"21")
    assert ack.stream == "svc_weather"
    assert (await weather.js.get_last_msg("svc_weather", "weather.readings.madrid")).data == b"21"
    config = (await admin_nc.jetstream().stream_info("svc_weather")).config
    assert config.subjects == ["weather.readings.*"] and config.max_age == 3600
    assert not (config.sources or config.mirror or config.republish)

    kv = await service_bucket(weather.nc, "weather", "cache", ttl=60.0)
    await kv.put("madrid", b"sunny")
    assert (await kv.get("madrid")).value == b"sunny"
    await weather.allowed()


async def test_provisioning_is_idempotent_and_updates_what_changed(weather: Component) -> None:
    first = stream_request("svc_weather", ["weather.>"], max_age=60)
    assert (await provision(weather.nc, "weather", first)).created
    again = await provision(weather.nc, "weather", first)
    assert not again.created and again.changed == []
    longer = stream_request("svc_weather", ["weather.>"], max_age=120)
    assert (await provision(weather.nc, "weather", longer)).changed == ["max_age"]

    bucket = BucketRequest(name="svc_weather")
    assert (await provision(weather.nc, "weather", bucket)).created
    assert (await provision(weather.nc, "weather", bucket)).changed == []
    history = BucketRequest(name="svc_weather", history=5)
    assert (await provision(weather.nc, "weather", history)).changed == ["max_msgs_per_subject"]


@pytest.mark.slow  # 3 s: each denied JetStream request waits for its timeout
async def test_a_service_cannot_make_or_change_its_stream_itself(
    weather: Component, admin_nc: Client
) -> None:
    """The hole this closes: a stream named as its own, over everybody's traffic."""
    with pytest.raises(DENIED):
        await weather.js.add_stream(StreamConfig(name="svc_weather", subjects=["botbus.in.>"]))
    await weather.denied('publish to "$JS.API.STREAM.CREATE.svc_weather"')
    with pytest.raises(DENIED):
        await weather.js.create_key_value(KeyValueConfig(bucket="svc_weather_cache"))
    assert not await exists(admin_nc, "svc_weather")
    assert not await exists(admin_nc, "KV_svc_weather_cache")
    # Asking the provisioner for it: refused, saying why.
    with pytest.raises(ProvisionError, match=r"'botbus\.in\.>' is not under weather\."):
        await provision(weather.nc, "weather", stream_request("svc_weather", ["botbus.in.>"]))
    assert not await exists(admin_nc, "svc_weather")
    # Once provisioned for its own subjects, it can use it but not widen or restore it.
    await provision(weather.nc, "weather", stream_request("svc_weather", ["weather.x"]))
    with pytest.raises(DENIED):
        await weather.js.update_stream(
            StreamConfig(name="svc_weather", subjects=["weather.x", "botbus.in.>"])
        )
    await weather.denied('publish to "$JS.API.STREAM.UPDATE.svc_weather"')
    await weather.nc.publish("$JS.API.STREAM.RESTORE.svc_weather", b"{}")
    await weather.denied('publish to "$JS.API.STREAM.RESTORE.svc_weather"')
    config = (await admin_nc.jetstream().stream_info("svc_weather")).config
    assert config.subjects == ["weather.x"]
    await weather.js.purge_stream("svc_weather")  # its use of it stays
    assert (await weather.js.stream_info("svc_weather")).config.name == "svc_weather"


StartProvisioner = Callable[..., Awaitable[Provisioner]]


@pytest.fixture
async def start_provisioner(
    nats_server: NatsServer, settings: Settings
) -> AsyncIterator[StartProvisioner]:
    """Run a provisioner as the gateway does, with the given rate limit (tests marked
    ``no_provisioner``, so it is the only one answering)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(limit: RateLimit, quota: Quota = DEFAULT_QUOTA) -> Provisioner:
            nc = await nats.connect(nats_server.url, **connect_options(settings, "gateway"))
            stack.push_async_callback(nc.close)
            return await stack.enter_async_context(Provisioner(nc, limit=limit, quota=quota))

        yield start


def _stream(**extra: Any) -> dict[str, Any]:
    return {"kind": "stream", "name": "svc_weather", "subjects": ["weather.x"], **extra}


BAD_REQUESTS: list[tuple[str, Any, str]] = [
    ("foreign subjects", _stream(subjects=["botbus.in.>"]), "not under weather."),
    ("a subject beside its own", _stream(subjects=["weather.x", "echo.>"]), "'echo.>'"),
    ("its bare name", _stream(subjects=["weather"]), "not under weather."),
    ("a wildcard for its name", _stream(subjects=["*.x"]), "not under weather."),
    ("sources", _stream(sources=[{"name": "BOTBUS_IN"}]), "sources"),
    ("mirror", _stream(mirror={"name": "BOTBUS_IN"}), "mirror"),
    ("republish", _stream(republish={"src": ">", "dest": "echo.x"}), "republish"),
    ("transform", _stream(subject_transform={"src": ">", "dest": "x"}), "subject_transform"),
    ("replicas", _stream(num_replicas=5), "num_replicas"),
    ("unknown field", _stream(colour="red"), "colour"),
    ("a field name forging a log line", _stream(**{"x\nERROR fake": 1}), "x\\nERROR fake"),
    ("another service's stream", _stream(name="svc_echo"), "svc_echo"),
    ("a shared stream", _stream(name="BOTBUS_IN"), "BOTBUS_IN"),
    ("a bad suffix", _stream(name="svc_weather_Bad"), "svc_weather_Bad"),
    ("another's bucket", {"kind": "bucket", "name": "svc_echo"}, "svc_echo"),
    ("bucket republish", {"kind": "bucket", "name": "svc_weather", "republish": {}}, "republish"),
    ("no kind", {"name": "svc_weather", "subjects": ["weather.x"]}, "kind"),
    ("wrong types", _stream(max_age="forever"), "max_age"),
    ("not an object", [1, 2], "invalid request"),
    ("garbage", b"\xff{not json", "invalid request"),
]


@pytest.mark.no_provisioner
async def test_bad_requests_get_a_clear_refusal_and_the_provisioner_keeps_serving(
    weather: Component, admin_nc: Client, start_provisioner: StartProvisioner
) -> None:
    await start_provisioner(RateLimit(burst=len(BAD_REQUESTS) + 1))  # more at once than usual
    for label, payload, needle in BAD_REQUESTS:
        reply = await ask(weather, payload)
        assert not reply.ok and needle in reply.error, (label, reply)
        assert not reply.created
    for stream in ("svc_weather", "svc_echo", "svc_weather_Bad", "KV_svc_echo", "KV_svc_weather"):
        assert not await exists(admin_nc, stream), stream
    # Still serving, and a good request after all that works.
    assert (await ask(weather, _stream())).created
    await weather.allowed()


async def test_the_subject_decides_whose_stream_it_is(
    weather: Component, authority: Authority, log_in: LogIn, admin_nc: Client
) -> None:
    # weather cannot ask in echo's name: its identity may not publish there.
    await weather.nc.publish(subjects.provision("echo"), json.dumps(_stream()).encode())
    await weather.denied(f'publish to "{subjects.provision("echo")}"')
    # In its own name, echo's stream is refused, whatever the payload claims.
    echo = await log_in(authority.issue_service("echo"))
    reply = await ask(echo, _stream(name="svc_weather"), service="echo")
    assert not reply.ok and "svc_weather" in reply.error
    assert not await exists(admin_nc, "svc_weather")
    with pytest.raises(ProvisionError, match="not under echo"):
        await provision(echo.nc, "echo", stream_request("svc_echo", ["weather.>"]))


async def test_a_stream_with_options_the_provisioner_never_sets_is_not_updated(
    weather: Component, admin_nc: Client
) -> None:
    # Made some other way (an older botbus let services create streams themselves).
    await admin_nc.jetstream().add_stream(
        name="svc_weather",
        subjects=["weather.x"],
        republish=RePublish(src="weather.x", dest="echo.copy"),
    )
    with pytest.raises(ProvisionError, match="republish"):
        await provision(weather.nc, "weather", stream_request("svc_weather", ["weather.x"]))


@pytest.mark.no_provisioner
async def test_without_a_provisioner_a_service_on_an_authenticated_bus_gets_a_clear_error(
    weather: Component, admin_nc: Client
) -> None:
    with pytest.raises(ProvisionError, match="gateway"):
        await provision(weather.nc, "weather", BucketRequest(name="svc_weather"), wait=0.5)
    # One that exists already is used as it is.
    await admin_nc.jetstream().create_key_value(bucket="svc_weather")
    reply = await provision(weather.nc, "weather", BucketRequest(name="svc_weather"), wait=0.5)
    assert reply.ok and not reply.created


@pytest.fixture
async def bare_broker(tmp_path: Path) -> AsyncIterator[str]:
    """A developer's own nats-server: JetStream, no authentication, no botbus config."""
    proc = await asyncio.create_subprocess_exec(
        str(find_nats_server()),
        *("-js", "-a", "127.0.0.1", "-p", "-1", "-sd", str(tmp_path / "bare")),
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    url = ""
    async with asyncio.timeout(15):
        while "Server is ready" not in (line := (await proc.stderr.readline()).decode()):
            assert line, "nats-server exited before it was ready"
            if found := re.search(r"Listening for client connections on (\S+)", line):
                url = f"nats://{found.group(1)}"
    drain = asyncio.create_task(proc.stderr.read())  # keep its log pipe from filling
    try:
        yield url
    finally:
        proc.terminate()
        await proc.wait()
        await drain


async def test_on_a_broker_without_authentication_the_sdk_makes_its_stream_itself(
    bare_broker: str,
) -> None:
    nc = await nats.connect(bare_broker)
    try:
        # No provisioner runs there: the same checks, done by the service itself.
        reply = await provision(nc, "weather", stream_request("svc_weather", ["weather.x"]))
        assert reply.created
        assert (await nc.jetstream().stream_info("svc_weather")).config.subjects == ["weather.x"]
        kv = await service_bucket(nc, "weather")
        await kv.put("k", b"v")
        with pytest.raises(ProvisionError, match="not under weather"):
            await provision(nc, "weather", stream_request("svc_weather_in", ["botbus.in.>"]))
    finally:
        await nc.close()


def test_a_service_cannot_declare_a_stream_option_the_provisioner_refuses() -> None:
    with pytest.raises(ValueError, match="sources"):
        stream_request("svc_weather", ["weather.x"], sources=[{"name": "BOTBUS_IN"}])
    with pytest.raises(ValueError, match="num_replicas"):
        stream_request("svc_weather", ["weather.x"], num_replicas=3)


async def test_a_service_cannot_take_more_of_the_shared_store_than_its_quota(
    weather: Component, admin_nc: Client
) -> None:
    """The broker's store is shared: one service may not fill it for all the others."""
    bucket = {"kind": "bucket", "name": "svc_weather", "max_bytes": -1}
    for label, payload, needle in [
        ("no limit", _stream(max_bytes=-1), "unlimited"),
        ("over the cap", _stream(max_bytes=2 * GiB), "over the 256 MiB"),
        ("a bucket, no limit", bucket, "unlimited"),
    ]:
        reply = await ask(weather, payload)
        assert not reply.ok and needle in reply.error, (label, reply)
    # Not saying how much: the default, not unlimited.
    assert (await ask(weather, _stream())).created
    info = await admin_nc.jetstream().stream_info("svc_weather")
    assert info.config.max_bytes == DEFAULT_QUOTA.default_bytes
    # All its streams and buckets together stay within the service's total.
    big = DEFAULT_QUOTA.max_bytes
    for suffix in ("cache", "more", "most"):
        reply = await ask(
            weather,
            _stream(name=f"svc_weather_{suffix}", subjects=[f"weather.{suffix}"], max_bytes=big),
        )
        assert reply.ok, reply
    over = _stream(name="svc_weather_over", subjects=["weather.over"], max_bytes=big)
    reply = await ask(weather, over)  # 64 MiB + 3 x 256 MiB + 256 MiB > 1 GiB
    assert (
        not reply.ok
        and "over the 1 GiB all its streams and buckets on file may hold" in reply.error
    )


async def test_a_service_has_at_most_its_quota_of_streams_and_buckets(
    authority: Authority, log_in: LogIn, admin_nc: Client
) -> None:
    suffixes = tuple(f"s{i}" for i in range(DEFAULT_QUOTA.max_resources))
    hoarder = await log_in(authority.issue_service("hoarder", Grants(resources=suffixes)))
    made = ["svc_hoarder", *(f"svc_hoarder_{s}" for s in suffixes[1:])]
    for name in made:
        await provision(hoarder.nc, "hoarder", stream_request(name, [f"hoarder.{name}"]))
    assert len(made) == DEFAULT_QUOTA.max_resources
    with pytest.raises(ProvisionError, match="the most one service may have"):
        await provision(hoarder.nc, "hoarder", BucketRequest(name="svc_hoarder_s0"))
    assert not await exists(admin_nc, "KV_svc_hoarder_s0")
    # What it has can still be changed: the quota counts only new ones.
    await provision(
        hoarder.nc, "hoarder", stream_request("svc_hoarder", ["hoarder.svc_hoarder"], max_age=3600)
    )


async def test_a_stream_remembers_message_ids_for_a_bounded_time(
    weather: Component, admin_nc: Client
) -> None:
    """Every id of the dedupe window stays in the broker's memory, whatever max_bytes evicts."""
    cap = DEFAULT_QUOTA.max_duplicate_window
    for label, payload, needle in [
        ("forever", _stream(max_age=0, duplicate_window=3e8), f"at most {cap:g}"),
        ("just over", _stream(duplicate_window=cap + 1), "over the 120 s"),
        ("beyond max_age", _stream(max_age=30.0, duplicate_window=60.0), "longer than its max_age"),
    ]:
        reply = await ask(weather, payload)
        assert not reply.ok and needle in reply.error, (label, reply)
    assert not await exists(admin_nc, "svc_weather")
    assert (await ask(weather, _stream(duplicate_window=cap))).created

    # Made some other way (an older provisioner), its window is brought within the cap
    # (and its consumers within theirs).
    js = admin_nc.jetstream()
    await js.add_stream(name="svc_weather_old", subjects=["weather.old"], duplicate_window=3e8)
    reply = await ask(weather, _stream(name="svc_weather_old", subjects=["weather.old"]))
    assert reply.ok and reply.changed == ["max_consumers", "duplicate_window"], reply
    assert (await js.stream_info("svc_weather_old")).config.duplicate_window == cap
    await js.create_key_value(bucket="svc_weather_cache")
    await js.update_stream(
        replace((await js.stream_info("KV_svc_weather_cache")).config, duplicate_window=3e8)
    )
    reply = await ask(weather, {"kind": "bucket", "name": "svc_weather_cache"})
    assert reply.ok and "duplicate_window" in reply.changed, reply
    assert (await js.stream_info("KV_svc_weather_cache")).config.duplicate_window == cap


@pytest.mark.no_provisioner
async def test_requests_nobody_waits_for_are_dropped_unread(
    weather: Component, admin_nc: Client, start_provisioner: StartProvisioner
) -> None:
    """A flood of them would keep the provisioner from everybody else's requests."""
    provisioner = await start_provisioner(RateLimit())
    for _ in range(50):
        await weather.nc.publish(subjects.provision("weather"), json.dumps(_stream()).encode())
    # Handled in the order sent: once this is answered, the 50 before it were seen.
    assert (await ask(weather, {"kind": "bucket", "name": "svc_weather_cache"})).created
    assert provisioner.dropped == 50
    assert not await exists(admin_nc, "svc_weather")


@pytest.mark.no_provisioner
async def test_a_service_asking_too_often_is_told_to_wait_and_others_are_served(
    weather: Component,
    authority: Authority,
    log_in: LogIn,
    start_provisioner: StartProvisioner,
) -> None:
    # A token every 10 s: none comes back while the test runs.
    provisioner = await start_provisioner(RateLimit(burst=3, rate=0.1))
    replies = await asyncio.gather(*(ask(weather, _stream()) for _ in range(8)))
    refused = [r for r in replies if not r.ok]
    assert len(refused) == 5 and provisioner.throttled == 5, replies
    for reply in refused:
        assert "too many provisioning requests from weather, retry in" in reply.error
        assert 0 < reply.retry_after <= 10
    # Another service is not held back by it.
    echo = await log_in(authority.issue_service("echo"))
    assert (await ask(echo, _stream(name="svc_echo", subjects=["echo.x"]), "echo")).created
    # The SDK waits the delay it is given only within its own wait.
    with pytest.raises(ProvisionError, match="too many provisioning requests"):
        await provision(weather.nc, "weather", stream_request("svc_weather", ["weather.x"]), wait=1)


@pytest.mark.no_provisioner
async def test_the_sdk_asks_again_after_the_delay_it_was_given(
    weather: Component, start_provisioner: StartProvisioner
) -> None:
    provisioner = await start_provisioner(RateLimit(burst=1, rate=1.0))
    requests: list[StreamRequest | BucketRequest] = [
        stream_request("svc_weather", ["weather.x"]),
        BucketRequest(name="svc_weather"),
    ]
    replies = await asyncio.gather(*(provision(weather.nc, "weather", r) for r in requests))
    assert all(reply.created for reply in replies)
    assert provisioner.throttled >= 1  # one of the two was told to wait, then asked again


@pytest.mark.no_provisioner
async def test_two_provisioners_never_let_one_service_past_its_quota_together(
    weather: Component, admin_nc: Client, start_provisioner: StartProvisioner
) -> None:
    """Two gateways each check the quota against what the service has: without the
    service's lock, both would see room for one more stream and both make one."""
    quota = replace(DEFAULT_QUOTA, max_total=64 * MiB)  # room for one 64 MiB stream
    for _ in range(2):
        await start_provisioner(RateLimit(), quota)
    suffixes = [f"s{i}" for i in range(8)]
    asks = [
        provision(
            weather.nc,
            "weather",
            stream_request(f"svc_weather_{s}", [f"weather.{s}"], max_bytes=64 * MiB),
        )
        for s in suffixes
    ]
    results = await asyncio.gather(*asks, return_exceptions=True)
    made = [s for s in suffixes if await exists(admin_nc, f"svc_weather_{s}")]
    assert len(made) == 1, (made, results)
    refusals = [r for r in results if isinstance(r, ProvisionError)]
    assert len(refusals) == len(suffixes) - 1, results
    assert all("over the 64 MiB" in str(r) for r in refusals), refusals


@pytest.mark.no_provisioner
async def test_a_service_has_a_bounded_number_of_consumers_on_each_stream_and_bucket(
    weather: Component, admin_nc: Client, start_provisioner: StartProvisioner
) -> None:
    """Every consumer costs the broker memory; a service may make them on its own."""
    await start_provisioner(RateLimit(), replace(DEFAULT_QUOTA, max_consumers=2))
    await provision(weather.nc, "weather", stream_request("svc_weather", ["weather.x"]))
    kv = await service_bucket(weather.nc, "weather")
    for stream in ("svc_weather", "KV_svc_weather"):
        config = (await admin_nc.jetstream().stream_info(stream)).config
        assert config.max_consumers == 2, stream
    for i in range(2):
        await weather.js.add_consumer(
            "svc_weather", ConsumerConfig(name=f"d{i}", durable_name=f"d{i}")
        )
    with pytest.raises(APIError, match="maximum consumers limit reached"):
        await weather.js.add_consumer("svc_weather", ConsumerConfig(name="d2", durable_name="d2"))
    await kv.put("k", b"v")  # the bucket itself works: reads and writes need no consumer
    assert (await kv.get("k")).value == b"v"
    # A stream made before the limit existed gets it when provisioned again.
    await admin_nc.jetstream().update_stream(replace(config, max_consumers=-1))
    again = await provision(weather.nc, "weather", BucketRequest(name="svc_weather"))
    assert again.changed == ["max_consumers"]


async def test_while_another_provisioner_works_for_a_service_it_is_told_to_retry(
    weather: Component, authority: Authority, log_in: LogIn, admin_nc: Client
) -> None:
    locks = await admin_nc.jetstream().key_value(subjects.KV_PROVISIONING)
    await locks.create("svc.weather", b"a gateway that died while working for weather")
    reply = await ask(weather, _stream())
    assert not reply.ok and reply.retry_after == LOCK_RETRY
    assert "another provisioner is working for weather" in reply.error
    assert not await exists(admin_nc, "svc_weather")
    # Another service is not held up by weather's lock.
    echo = await log_in(authority.issue_service("echo"))
    echo_stream = _stream(name="svc_echo", subjects=["echo.x"])
    assert (await ask(echo, echo_stream, service="echo")).created
    # Once the lock is gone (released, or expired after LOCK_TTL), weather is served.
    await locks.delete("svc.weather")
    assert (await ask(weather, _stream())).created


@pytest.mark.no_provisioner
async def test_a_provisioner_whose_lock_expired_leaves_the_next_holders_lock_alone(
    admin_nc: Client, start_provisioner: StartProvisioner
) -> None:
    """Work outlasting LOCK_TTL: the key expired and another gateway took it; the
    first one's release must not free it for a third while the second works."""
    provisioner = await start_provisioner(RateLimit())
    locks = await admin_nc.jetstream().key_value(subjects.KV_PROVISIONING)
    async with provisioner._working_for("weather"):
        await locks.purge("svc.weather")  # as the TTL would
        await locks.create("svc.weather", b"the gateway that took it next")
    assert (await locks.get("svc.weather")).value == b"the gateway that took it next"
    await locks.delete("svc.weather")
    async with provisioner._working_for("weather"):  # released normally: taken at once
        pass
    with pytest.raises(KeyNotFoundError):
        await locks.get("svc.weather")


@pytest.mark.no_provisioner
async def test_two_provisioners_share_one_rate_limit_per_service(
    weather: Component, start_provisioner: StartProvisioner
) -> None:
    """Each gateway's own limit would let a service ask N times as often with N gateways."""
    provisioners = [await start_provisioner(RateLimit(burst=3, rate=0.01)) for _ in range(2)]
    replies = await asyncio.gather(*(ask(weather, _stream()) for _ in range(8)))
    throttled = [r for r in replies if "too many provisioning requests" in r.error]
    assert len(throttled) == 5, replies  # 3 served in all, whichever gateway took them
    assert sum(p.throttled for p in provisioners) == 5


async def test_a_garbled_shared_rate_state_counts_as_a_full_bucket(
    weather: Component, admin_nc: Client
) -> None:
    state = await admin_nc.jetstream().key_value(subjects.KV_PROVISIONING)
    for garbage in (b"", b"not json", b'{"tokens": 1}', b"[1]", b'["x", 2]'):
        await state.put("rate.weather", garbage)
        assert (await ask(weather, _stream())).ok, garbage


def test_a_rate_limit_allows_a_burst_then_its_rate() -> None:
    limit = RateLimit(burst=2, rate=4.0)
    assert limit.take("a", 0.0) == 0 and limit.take("a", 0.0) == 0
    assert limit.take("a", 0.0) == pytest.approx(0.25)
    assert limit.take("b", 0.0) == 0  # each key its own bucket
    assert limit.take("a", 0.25) == 0
    assert limit.take("a", 0.25) == pytest.approx(0.25)
    assert limit.take("a", 100.0) == 0 and limit.take("a", 100.0) == 0  # never above burst
    assert limit.take("a", 100.0) > 0


async def test_memory_has_a_quota_of_its_own(weather: Component, admin_nc: Client) -> None:
    """The server's whole memory store (256 MB) is what the file quota allows one stream."""
    quota = DEFAULT_QUOTA
    memory = {"storage": "memory"}
    reply = await ask(weather, _stream(max_bytes=quota.max_memory_bytes + 1, **memory))
    assert not reply.ok and "over the 16 MiB a service's stream or bucket in memory" in reply.error
    bucket = {"kind": "bucket", "name": "svc_weather", "max_bytes": 200 * MiB, **memory}
    reply = await ask(weather, bucket)
    assert not reply.ok and "in memory may hold" in reply.error, reply
    # Not saying how much: the memory cap, for a stream as for a bucket.
    assert (await ask(weather, _stream(**memory))).created
    assert (await ask(weather, {"kind": "bucket", "name": "svc_weather", **memory})).created
    js = admin_nc.jetstream()
    for stream in ("svc_weather", "KV_svc_weather"):
        assert (await js.stream_info(stream)).config.max_bytes == quota.max_memory_bytes
    # Two of them are all a service may hold in memory; file storage is counted apart.
    more = _stream(name="svc_weather_more", subjects=["weather.more"], max_bytes=MiB, **memory)
    reply = await ask(weather, more)
    assert not reply.ok and "over the 32 MiB all its streams and buckets in memory" in reply.error
    assert not await exists(admin_nc, "svc_weather_more")
    on_file = _stream(name="svc_weather_file", subjects=["weather.file"], max_bytes=quota.max_bytes)
    assert (await ask(weather, on_file)).created


async def test_clock_skew_between_gateways_does_not_refill_the_shared_rate(
    admin_nc: Client,
) -> None:
    """Two gateways 10 s apart taking turns: the one behind used to move the state's
    time back, and the one ahead then refilled those 10 s on every request."""
    state = await admin_nc.jetstream().key_value(subjects.KV_PROVISIONING)
    limit = RateLimit(burst=3, rate=1.0)
    granted = 0
    for i in range(10):
        for now in (1000.0 + i * 0.001, 990.0 + i * 0.001):  # ahead, then behind
            granted += await limit.take_shared(state, "rate.weather", now) == 0
    assert granted == 3


async def test_provisioning_goes_on_after_the_broker_lost_its_memory_bucket(
    weather: Component, admin_nc: Client
) -> None:
    """botbus_provisioning is in memory: a broker restart loses it while the gateway
    stays connected, and every request failed until the gateway restarted too."""
    await admin_nc.jetstream().delete_key_value(subjects.KV_PROVISIONING)  # as a restart does
    assert (await ask(weather, _stream())).created
    state = await admin_nc.jetstream().key_value(subjects.KV_PROVISIONING)
    assert (await state.get("rate.weather")).value  # the shared rate is kept there again


@pytest.mark.slow  # LOCK_WAIT, 2 s
@pytest.mark.no_provisioner
async def test_a_lock_held_past_its_ttl_is_renewed_not_lost(
    monkeypatch: pytest.MonkeyPatch, start_provisioner: StartProvisioner
) -> None:
    """Work outlasting LOCK_TTL (a slow cluster) let the lock expire under it, and a
    second gateway past the same service's quota check while the asker, timed out,
    asked again."""
    monkeypatch.setattr(provisioning, "LOCK_TTL", 1.0)  # the bucket's TTL too
    first = await start_provisioner(RateLimit())
    second = await start_provisioner(RateLimit())
    async with first._working_for("weather"):
        with pytest.raises(Busy):  # tried for LOCK_WAIT (2 s), two TTLs
            async with second._working_for("weather"):
                pass
    async with second._working_for("weather"):  # released: taken at once
        pass
