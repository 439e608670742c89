"""A push consumer on a service's own stream cannot forge other components' traffic.

A service may make consumers on its own streams, push consumers included, with
any deliver subject (NATS cannot check it). What the server then does was
checked here on nats-server 2.15, and docs/architecture.md relies on it: the
deliveries reach only core subscribers of that subject, they carry the
stream's own subject (which the provisioner reads the requester's name from),
and no stream stores them.
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from botbus import subjects
from botbus.auth import Authority
from botbus.provision import provision, stream_request
from botbus.topology import ensure_topology
from tests.auth.conftest import Component, LogIn


async def _push_to(evil: Component, deliver_subject: str) -> None:
    """A push consumer on svc_evil delivering everything stored to ``deliver_subject``."""
    config = {"deliver_subject": deliver_subject, "ack_policy": "none", "deliver_policy": "all"}
    reply = await evil.nc.request(
        "$JS.API.CONSUMER.CREATE.svc_evil",
        json.dumps({"stream_name": "svc_evil", "config": config}).encode(),
        timeout=5,
    )
    assert "error" not in json.loads(reply.data), reply.data


async def test_deliveries_to_foreign_subjects_forge_nothing(
    authority: Authority, log_in: LogIn, admin_nc: Client
) -> None:
    await ensure_topology(admin_nc.jetstream())
    evil = await log_in(authority.issue_service("evil"))
    await provision(evil.nc, "evil", stream_request("svc_evil", ["evil.x"]))
    # A provisioning request as if from alerts, and an inbound command for alerts.
    forged = {"kind": "stream", "name": "svc_alerts_stolen", "subjects": ["alerts.stolen"]}
    await evil.js.publish("evil.x", json.dumps(forged).encode())

    seen: list[Msg] = []
    arrived = asyncio.Event()

    async def watch(msg: Msg) -> None:
        seen.append(msg)
        arrived.set()

    # Interest on the subject, as a core subscriber would have (the provisioner's own
    # subscription is in a queue group beside this one).
    await admin_nc.subscribe(subjects.provision("alerts"), cb=watch)
    await admin_nc.subscribe("botbus.in.cmd.alerts.subscribe", cb=watch)
    await admin_nc.flush()
    await _push_to(evil, subjects.provision("alerts"))
    await _push_to(evil, "botbus.in.cmd.alerts.subscribe")
    async with asyncio.timeout(5):
        while len(seen) < 2:
            arrived.clear()
            await arrived.wait()

    assert {m.subject for m in seen} == {"evil.x"}  # the stream's subject, not the forged one
    await provision(evil.nc, "evil", stream_request("svc_evil", ["evil.x"]))  # a barrier
    try:
        await admin_nc.jetstream().stream_info("svc_alerts_stolen")
        raise AssertionError("a delivery made a stream for alerts")
    except NotFoundError:
        pass
    inbound = await admin_nc.jetstream().stream_info(subjects.STREAM_INBOUND)
    assert inbound.state.messages == 0  # no stream stored the delivery
