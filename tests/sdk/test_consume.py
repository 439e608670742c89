"""@service.consume on a stream the service declared: acks, retries, dead letters, stats."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from pydantic import BaseModel, ConfigDict

from botbus.natsserver import NatsServer
from botbus.service import Context, Reject, Service, ServiceApp
from botbus.settings import Settings
from tests.support.outbox import StreamReader
from tests.support.waiting import eventually


class Reading(BaseModel):
    """A sensor reading published to ``echo.readings.<sensor>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    celsius: float


def sensor_service(seen: list[tuple[str, float]], fail_first: int = 0) -> tuple[Service, str]:
    svc = Service("echo", "1.0.0", {"en": "test"}, max_deliveries=3, retry_delays=(0.05,))
    stream = svc.stream(subjects=["echo.readings.*"], max_age=3600.0)
    attempts: list[float] = []

    @svc.consume(stream=stream, subject="echo.readings.*", model=Reading)
    async def reading(ctx: Context, r: Reading) -> Reject | None:
        attempts.append(r.celsius)
        if r.celsius < -273.15:
            return Reject(f"{r.celsius} °C is below absolute zero")
        if attempts.count(r.celsius) <= fail_first:
            raise RuntimeError("database busy")
        seen.append((ctx.subject.rsplit(".", 1)[1], r.celsius))
        return None

    return svc, stream


async def test_declared_stream_is_created_and_consumed_with_retries_and_dead_letters(
    nats_server: NatsServer, settings: Settings, topology: Client, dlq: StreamReader
) -> None:
    seen: list[tuple[str, float]] = []
    svc, stream = sensor_service(seen, fail_first=1)
    assert stream == "svc_echo"
    async with ServiceApp(svc, settings, url=nats_server.url) as app:
        js = topology.jetstream()
        await js.publish("echo.readings.kitchen", b'{"celsius": 21.5}')
        await js.publish("echo.readings.attic", b'{"celsius": -300}')
        await js.publish("echo.readings.cellar", b'{"celsius": "cold"}')
        records = await dlq.dead_letters(2)
        await eventually(lambda: seen == [("kitchen", 21.5)])
        [stats] = [c for c in app.stats if c.name == "reading"]
        await eventually(lambda: stats.num_requests == 4)
    errors = sorted(r.error for r in records)
    assert "-300.0 °C is below absolute zero" in errors
    assert any("celsius" in e for e in errors)  # undecodable: dead-lettered at once
    assert all(r.deliveries == 1 for r in records)
    assert stats.num_errors == 3  # one retry, one rejection, one bad payload


def test_a_service_may_only_declare_streams_under_its_own_name() -> None:
    svc = Service("echo", "1.0.0", {"en": "test"})
    with pytest.raises(ValueError, match=r"not under echo\.>"):
        svc.stream(subjects=["alerts.*"])
    with pytest.raises(ValueError, match="invalid stream suffix"):
        svc.stream("Bad-Name", subjects=["echo.x"])
    # Only what the provisioner accepts: no sources, mirror, republish, replicas...
    with pytest.raises(ValueError, match="sources cannot be provisioned"):
        svc.stream("copy", subjects=["echo.c"], sources=[{"name": "BOTBUS_IN"}])
    assert svc.stream(subjects=["echo.x"]) == "svc_echo"
    with pytest.raises(ValueError, match="declared twice"):
        svc.stream(subjects=["echo.y"])
