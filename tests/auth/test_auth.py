"""botbus.auth: identities issued, not configured, confine a service the core never heard of."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path

import nats
import nkeys
import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, KeyValueConfig

from botbus import subjects
from botbus.auth import (
    SERVICE_MAX_SUBS,
    Authority,
    Credentials,
    Grants,
    check_service_name,
    decode_claims,
    encode_jwt,
)
from botbus.connect import connect, inbox_prefix
from botbus.errors import ConfigError
from botbus.natsserver import NatsServer
from botbus.provision import service_bucket
from botbus.settings import Settings
from tests.auth.conftest import DENIED, LogIn


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_jwt_is_signed_by_its_issuer_and_carries_its_claims() -> None:
    key = nkeys.from_seed(Authority.create().account.seed)
    token = encode_jwt(key, {"sub": "UXYZ", "name": "weather", "nats": {"type": "user"}})
    header, claims, signature = token.split(".")
    assert json.loads(_unb64(header)) == {"typ": "JWT", "alg": "ed25519-nkey"}
    decoded = decode_claims(token)
    assert decoded["name"] == "weather" and decoded["iss"] == key.public_key.decode()
    signed = f"{header}.{claims}".encode()
    raw = _unb64(signature)
    assert key.verify(signed, raw)
    with pytest.raises(nkeys.ErrInvalidSignature):
        key.verify(signed + b"x", raw)


@pytest.mark.parametrize("name", ["botbus", "svc", "kv", "gateway", "admin", "publisher"])
def test_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        check_service_name(name)


@pytest.mark.parametrize("name", ["we_ather", "a.b", "*", ">", "Weather", "", "9x", "a-b"])
def test_names_that_are_not_one_safe_token_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid service name"):
        Authority.create().issue_service(name)


def test_bad_grants_are_refused() -> None:
    authority = Authority.create()
    with pytest.raises(ConfigError, match="suffix"):
        authority.issue_service("weather", Grants(resources=("Bad_Suffix",)))
    with pytest.raises(ConfigError, match="publish"):
        authority.issue_service("weather", Grants(publishes=("alerts.>",)))


@pytest.mark.parametrize("name", ["echo", "sensor", "a_b", "-x"])
def test_a_publisher_cannot_take_a_name_a_service_could_have(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid publisher name"):
        Authority.create().issue_publisher("alerts", name)


def test_creds_file_round_trip(tmp_path: Path) -> None:
    creds = Authority.create().issue_service("weather")
    path = creds.write(tmp_path / "weather.creds")
    assert path.stat().st_mode & 0o777 == 0o600
    assert Credentials.read(path) == creds
    (tmp_path / "junk.creds").write_text("not a creds file")
    with pytest.raises(ConfigError, match=r"not a \.creds file"):
        Credentials.read(tmp_path / "junk.creds")


async def test_a_new_service_does_its_job_with_no_configuration(
    authority: Authority, log_in: LogIn, topology: Client
) -> None:
    """'weather' is in no file of botbus: its issued identity is all it needs."""
    weather = await log_in(
        authority.issue_service("weather", Grants(resources=("cache",), listens=True))
    )
    # Its own durable consumers, pinned to its own filter subjects (the template
    # expands inside the filtered CONSUMER.CREATE subject and inside "weather_cmd").
    await weather.js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(
            name=subjects.consumer_commands("weather"),
            durable_name=subjects.consumer_commands("weather"),
            filter_subject=subjects.inbound_commands_of("weather"),
        ),
    )
    await weather.js.add_consumer(
        subjects.STREAM_INBOUND,
        ConsumerConfig(
            name=subjects.consumer_messages("weather"),
            durable_name=subjects.consumer_messages("weather"),
            filter_subject=subjects.INBOUND_MESSAGES,
        ),
    )
    # Its own bucket, and the suffixed one it was granted ("svc_weather" inside a token),
    # made by the provisioner (the nats_server fixture runs one, as the gateway does).
    for suffix in ("", "cache"):
        kv = await service_bucket(weather.nc, "weather", suffix)
        await kv.put("k", b"v")
        assert (await kv.get("k")).value == b"v"
    # Its outbound actions and its own subject namespace; replies to its own inbox.
    ack = await weather.js.publish(subjects.outbound("weather", "interactive"), b"{}")
    assert ack.stream == subjects.STREAM_OUTBOUND
    await weather.nc.publish("weather.forecast.madrid", b"{}")
    await weather.nc.subscribe("weather.>")
    await weather.allowed()


async def test_only_a_service_issued_listens_reads_every_chats_messages(
    authority: Authority, log_in: LogIn, topology: Client
) -> None:
    """The red-team review's evil_msg consumer: every plain message of every chat,
    never acked, filling the interest-retention inbound stream for everyone."""
    evil = await log_in(authority.issue_service("evil"))
    with pytest.raises(DENIED):
        await evil.js.add_consumer(
            subjects.STREAM_INBOUND,
            ConsumerConfig(
                name=subjects.consumer_messages("evil"),
                durable_name=subjects.consumer_messages("evil"),
                filter_subject=subjects.INBOUND_MESSAGES,
            ),
        )
    await evil.denied(f"$JS.API.CONSUMER.CREATE.{subjects.STREAM_INBOUND}.evil_msg")


@pytest.mark.slow  # 5 s: a dozen denied requests, each waiting for its permission error
async def test_a_new_service_cannot_touch_anything_else(
    authority: Authority, log_in: LogIn, topology: Client
) -> None:
    weather = await log_in(authority.issue_service("weather", Grants(resources=("cache",))))
    # Another service's commands, under its own consumer name or another's.
    with pytest.raises(DENIED):
        await weather.js.add_consumer(
            subjects.STREAM_INBOUND,
            ConsumerConfig(
                name="weather_cmd",
                durable_name="weather_cmd",
                filter_subject=subjects.inbound_commands_of("echo"),
            ),
        )
    with pytest.raises(DENIED):
        await weather.js.add_consumer(
            subjects.STREAM_INBOUND,
            ConsumerConfig(
                name="echo_cmd",
                durable_name="echo_cmd",
                filter_subject=subjects.inbound_commands_of("echo"),
            ),
        )
    # Buckets that are not its own, nor a suffix it was granted.
    for bucket in (
        subjects.service_bucket("echo"),
        subjects.service_bucket("weather", "other"),
        subjects.KV_GATEWAY_USERS,
    ):
        with pytest.raises(DENIED):
            await weather.js.create_key_value(KeyValueConfig(bucket=bucket))
    # Other services' subjects, outbound lane and dead letters; inbound traffic.
    for subject in (
        "echo.anything",
        subjects.outbound("echo", "interactive"),
        subjects.dead_letter("echo"),
        subjects.INBOUND_MESSAGES,
        "alerts.news",
        # taking another service's provisioning lock would stop its provisioning,
        # spending its shared rate would throttle it, and reading either says when
        # it provisions
        f"$KV.{subjects.KV_PROVISIONING}.svc.echo",
        f"$KV.{subjects.KV_PROVISIONING}.rate.echo",
        f"$JS.API.DIRECT.GET.KV_{subjects.KV_PROVISIONING}.$KV.{subjects.KV_PROVISIONING}.rate.echo",
        f"$JS.API.STREAM.MSG.GET.KV_{subjects.KV_PROVISIONING}",
        f"$JS.API.CONSUMER.CREATE.KV_{subjects.KV_PROVISIONING}",
        f"$JS.API.STREAM.PURGE.KV_{subjects.KV_PROVISIONING}",
    ):
        await weather.nc.publish(subject, b"{}")
        await weather.denied(f'publish to "{subject}"')
    # Another component's inbox, or the whole inbound stream.
    for subject in (f"{inbox_prefix('echo')}.>", f"{inbox_prefix('gateway')}.>", "botbus.in.>"):
        await weather.nc.subscribe(subject)
        await weather.denied(f'subscription to "{subject}"')


async def test_a_service_connection_holds_a_bounded_number_of_subscriptions(
    authority: Authority, log_in: LogIn
) -> None:
    """Each subscription costs the broker memory: a service cannot hold millions."""
    weather = await log_in(authority.issue_service("weather"))
    first = await weather.nc.subscribe("weather.s0")
    for i in range(1, SERVICE_MAX_SUBS):
        await weather.nc.subscribe(f"weather.s{i}")
    await weather.allowed()
    await weather.nc.publish("weather.s0", b"all there")
    assert (await first.next_msg(timeout=5)).data == b"all there"
    await weather.nc.subscribe("weather.one_too_many")
    # The server refuses it, and nats-py closes a connection on that error.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not weather.nc.is_closed:
        assert loop.time() < deadline, "the connection was not closed"
        await asyncio.sleep(0.02)
    assert "maximum subscriptions exceeded" in str(weather.nc.last_error).lower()
    # Others are not affected.
    echo = await log_in(authority.issue_service("echo"))
    sub = await echo.nc.subscribe("echo.x")
    await echo.nc.publish("echo.x", b"fine")
    assert (await sub.next_msg(timeout=5)).data == b"fine"


async def test_a_service_whose_connection_the_server_closes_says_so(
    nats_server: NatsServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py closes the connection for good on "maximum subscriptions exceeded" and
    calls no error callback: a service one subscription over would go deaf silently."""
    nc = await connect(settings, "weather", url=nats_server.url)
    try:
        for i in range(SERVICE_MAX_SUBS + 1):
            await nc.subscribe(f"weather.s{i}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not nc.is_closed:
            assert loop.time() < deadline, "the connection was not closed"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0)  # closed_cb runs right after the status changes
    finally:
        await nc.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("maximum subscriptions exceeded" in e.lower() for e in errors), errors
    assert any("no longer sends or receives" in e for e in errors), errors
    # Our own close of a healthy connection is no error.
    caplog.clear()
    other = await connect(settings, "echo", url=nats_server.url)
    await other.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_publisher_may_only_publish_to_its_services_subjects(
    authority: Authority, log_in: LogIn, topology: Client
) -> None:
    sensor = await log_in(authority.issue_publisher("weather", name="sensor-1"))
    await sensor.nc.publish("weather.madrid", b"{}")
    await sensor.allowed()
    # Not another service's, not the service's own internals (deeper than one token).
    for subject in (
        "echo.x",
        "weather.internal.state",
        subjects.INBOUND_MESSAGES,
        subjects.outbound("weather", "bulk"),
    ):
        await sensor.nc.publish(subject, b"{}")
        await sensor.denied(f'publish to "{subject}"')
    await sensor.nc.subscribe("weather.>")
    await sensor.denied('subscription to "weather.>"')


async def test_an_identity_from_another_authority_is_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = Authority.create().issue_service("weather").write(tmp_path / "stranger.creds")
    with pytest.raises(NatsError, match=r"(?i)authorization"):
        await nats.connect(
            nats_server.url,
            user_credentials=str(path),
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
