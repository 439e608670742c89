"""MQTT publishing and the alerts user's real permissions, end to end.

The server runs the repository's nats.conf unchanged (its MQTT listener
and the alerts user's permissions are what is tested). The service
connects as the ``alerts`` user and an IoT device publishes as the
``publisher`` user over MQTT.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiomqtt
import pytest
from nats.aio.client import Client

from botbus.auth import Credentials
from botbus.models import SendText
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from botbus.topology import ensure_topology
from services.alerts.service import service
from tests.conftest import connect_as, publisher_creds
from tests.services.alerts.conftest import ADMIN_ID, Bot, Outbox

pytestmark = pytest.mark.timeout(60)


async def test_mqtt_alert_reaches_subscribers_with_the_real_alerts_user(
    nats_server: NatsServer, settings: Settings, tmp_path: Path
) -> None:
    assert nats_server.mqtt_port, "the MQTT listener's port was not logged"
    admin: Client = await connect_as(nats_server, settings, "admin")
    await ensure_topology(admin.jetstream())
    service_settings = load_settings(
        _env_file=None,
        BOTBUS_DATA_DIR=str(tmp_path / "data"),
        BOTBUS_ALERTS_HTTP="127.0.0.1:0",
        BOTBUS_ADMIN_IDS=[ADMIN_ID],
    )
    app = ServiceApp(service, service_settings, url=nats_server.url)  # as the alerts user
    await app.start()
    js = admin.jetstream()
    bot = Bot(js, Outbox(js))
    try:
        await bot.ask("/newchannel sensors Greenhouse sensors", chat_id=ADMIN_ID, admin=True)
        assert "Subscribed" in await bot.ask("/subscribe sensors", chat_id=61)
        assert "Subscribed" in await bot.ask("/subscribe sensors", chat_id=62)
        assert "Reminder r" in await bot.ask("/remind in 1h water", chat_id=61)

        # An MQTT device logs in with a publisher identity's JWT as its password.
        jwt = Credentials.read(publisher_creds(settings)).jwt
        async with aiomqtt.Client(
            "127.0.0.1",
            nats_server.mqtt_port,
            username="greenhouse",
            password=jwt,
            identifier="greenhouse-1",
        ) as device:
            payload = {"title": "Frost", "text": "-2 °C", "severity": "critical"}
            await device.publish("alerts/sensors", json.dumps(payload), qos=1)

        actions = await bot.outbox.take(2)
        assert sorted(a.chat_id for a in actions) == [61, 62]
        assert all(isinstance(a, SendText) and "Frost" in a.text for a in actions)
        listing = await bot.ask("/channels", chat_id=61)
        assert "sensors — Greenhouse sensors (2 subscribers)" in listing
    finally:
        await bot.outbox.close()
        await app.stop(timeout=5.0)
        await admin.drain()
