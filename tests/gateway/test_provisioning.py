"""The gateway runs the provisioner of services' streams and buckets, and stops it with itself."""

from __future__ import annotations

import nats
import pytest

from botbus.auth import Grants
from botbus.connect import connect_options
from botbus.errors import ProvisionError
from botbus.gateway import Gateway
from botbus.natsserver import NatsServer
from botbus.provision import BucketRequest, provision, service_bucket, stream_request
from botbus.settings import Settings


@pytest.mark.no_provisioner  # the gateway's is the only one
async def test_the_gateway_provisions_a_new_services_stream_and_bucket(
    nats_server: NatsServer, gw_settings: Settings, gateway: Gateway
) -> None:
    login = connect_options(gw_settings, "weather", Grants(resources=("new",)))
    nc = await nats.connect(nats_server.url, **login)
    try:
        reply = await provision(nc, "weather", stream_request("svc_weather", ["weather.>"]))
        assert reply.created
        assert (await nc.jetstream().publish("weather.today", b"sunny")).stream == "svc_weather"
        kv = await service_bucket(nc, "weather")
        await kv.put("k", b"v")
        assert (await kv.get("k")).value == b"v"

        await gateway.stop()
        with pytest.raises(ProvisionError, match="gateway"):
            await provision(nc, "weather", BucketRequest(name="svc_weather_new"), wait=0.5)
    finally:
        await nc.close()
