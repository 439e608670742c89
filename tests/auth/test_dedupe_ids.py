"""Outbound dedupe ids cannot be pre-empted by another service.

JetStream drops a message whose ``Nats-Msg-Id`` it has seen in the stream's
window, whoever published it, and idempotency keys are predictable
(``echo:<bot>:<update>:0``). The red-team review published a service's keys
first on its own lane and so silenced that service's replies.
"""

from __future__ import annotations

from nats.aio.client import Client

from botbus import subjects
from botbus.auth import Authority
from botbus.models import SendText, encode
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings
from services.echo.service import service as echo_service
from tests.auth.conftest import LogIn

KEY = "echo:1:42:0"  # what echo would use answering update 42 of bot 1


def _reply(text: str) -> SendText:
    return SendText(service="echo", chat_id=7, idempotency_key=KEY, text=text)


async def _stored_on(admin_nc: Client, subject: str) -> int:
    info = await admin_nc.jetstream().stream_info(subjects.STREAM_OUTBOUND, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


async def test_another_service_cannot_silence_a_reply_by_publishing_its_key_first(
    nats_server: NatsServer,
    settings: Settings,
    topology: Client,
    authority: Authority,
    log_in: LogIn,
) -> None:
    evil = await log_in(authority.issue_service("evil"))
    lane = subjects.outbound("evil", "interactive")
    ack = await evil.js.publish(
        lane, encode(_reply("decoy").model_copy(update={"service": "evil"})),
        headers={"Nats-Msg-Id": KEY},
    )  # fmt: skip
    assert not ack.duplicate

    echo_lane = subjects.outbound("echo", "interactive")
    async with ServiceApp(echo_service, settings, url=nats_server.url) as app:
        await app.publish(_reply("the real reply"))
        assert await _stored_on(topology, echo_lane) == 1  # not dropped as a duplicate
        await app.publish(_reply("the real reply"))  # its own retry still is
        assert await _stored_on(topology, echo_lane) == 1
    # A second instance of echo on this machine shares the identity, so its id too.
    async with ServiceApp(echo_service, settings, url=nats_server.url) as again:
        await again.publish(_reply("the real reply"))
        assert await _stored_on(topology, echo_lane) == 1
