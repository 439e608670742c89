"""Handler outcomes (Ack, Retry, Reject, Refuse) and the one answer every button press gets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from botbus import subjects
from botbus.errors import ServiceError
from botbus.models import (
    AnswerCallback,
    InboundCallback,
    InboundCommand,
    SendText,
    encode,
)
from botbus.natsserver import NatsServer
from botbus.service import Ack, Context, Refuse, Reject, Retry, Service, ServiceApp
from botbus.settings import Settings
from tests.sdk.conftest import Gateway
from tests.support.builders import make_callback, make_command
from tests.support.outbox import StreamReader, texts
from tests.support.waiting import eventually

SORRY_EN = "Sorry, something went wrong and I could not answer. Please try again later."


async def press(gateway: Gateway, cb: InboundCallback) -> None:
    await gateway.js.publish(
        subjects.inbound_callback("echo"),
        encode(cb),
        headers={"Nats-Msg-Id": cb.correlation_id},
    )


def outcome_service() -> tuple[Service, list[str]]:
    """An "echo" whose commands and buttons end in each outcome."""
    svc = Service("echo", "1.0.0", {"en": "test"}, max_deliveries=3, retry_delays=(0.05,))
    calls: list[str] = []

    @svc.command("later", en="Retry once, then answer")
    async def later(ctx: Context, cmd: InboundCommand) -> Retry | str:
        calls.append("later")
        return Retry(0.05, "not yet") if ctx.deliveries == 1 else "done at last"

    @svc.command("never", en="Reject")
    async def never(ctx: Context, cmd: InboundCommand) -> Reject:
        calls.append("never")
        return Reject("the upstream API said 410 Gone")

    @svc.command("deep", en="Refuse from deep inside")
    async def deep(ctx: Context, cmd: InboundCommand) -> Ack:
        def parse(args: str) -> int:
            if not args.isdigit():
                raise Refuse("Give me a number, e.g. /deep 3")
            return int(args)

        await ctx.reply(str(parse(cmd.args) * 2))
        return Ack()

    @svc.command("legacy", en="Deprecated ServiceError")
    async def legacy(ctx: Context, cmd: InboundCommand) -> None:
        raise ServiceError("Old style refusal.")

    @svc.on_callback
    async def on_press(ctx: Context, cb: InboundCallback) -> str | Refuse | Retry | None:
        calls.append(cb.data)
        if cb.data == "self":
            await ctx.answer_callback("thanks")
            return None
        if cb.data == "refuse":
            return Refuse("That game is over: start a new one with /play.")
        if cb.data == "boom":
            raise RuntimeError("board corrupted")
        if cb.data == "text":
            return "You pressed it."
        return None  # "ack": done, nothing to say

    return svc, calls


@pytest.fixture
async def app(
    nats_server: NatsServer, settings: Settings, topology: Client
) -> AsyncIterator[tuple[ServiceApp, list[str]]]:
    svc, calls = outcome_service()
    async with ServiceApp(svc, settings, url=nats_server.url) as running:
        yield running, calls


async def test_retry_comes_back_after_its_delay_and_is_answered(
    app: tuple[ServiceApp, list[str]], gateway: Gateway, outbound: StreamReader
) -> None:
    running, calls = app
    await gateway.command(make_command(command="later"))
    assert texts(await outbound.actions(1)) == ["done at last"]
    assert calls == ["later", "later"]
    [stats] = [c for c in running.stats if c.name == "later"]
    await eventually(lambda: stats.num_requests == 2)
    assert stats.num_errors == 1 and stats.last_error == "retry: not yet"


async def test_reject_dead_letters_at_once_and_tells_the_user(
    app: tuple[ServiceApp, list[str]],
    gateway: Gateway,
    outbound: StreamReader,
    dlq: StreamReader,
) -> None:
    _running, calls = app
    cmd = make_command(command="never")
    await gateway.command(cmd)
    [record] = await dlq.dead_letters(1)
    assert texts(await outbound.actions(1)) == [SORRY_EN]
    assert calls == ["never"]  # no retry
    assert record.deliveries == 1 and record.error == "the upstream API said 410 Gone"
    assert record.correlation_id == cmd.correlation_id


async def test_refusal_raised_deep_inside_is_the_answer(
    app: tuple[ServiceApp, list[str]], gateway: Gateway, outbound: StreamReader
) -> None:
    running, _calls = app
    await gateway.command(make_command("x", command="deep"))
    await gateway.command(make_command("21", command="deep"))
    await gateway.command(make_command(command="legacy"))
    replies = sorted(texts(await outbound.actions(3)))
    assert replies == ["42", "Give me a number, e.g. /deep 3", "Old style refusal."]
    counters = {c.name: c for c in running.stats}
    await eventually(lambda: counters["legacy"].num_requests == 1)
    assert counters["deep"].num_errors == 0 and counters["legacy"].num_errors == 0


async def test_every_button_press_is_answered_exactly_once(
    app: tuple[ServiceApp, list[str]],
    gateway: Gateway,
    outbound: StreamReader,
    dlq: StreamReader,
) -> None:
    _running, calls = app
    presses = {data: make_callback(data) for data in ("ack", "self", "refuse", "text", "boom")}
    for cb in presses.values():
        await press(gateway, cb)
    # junk with a press id: undecodable, yet the user's spinner must stop
    stale = json.loads(encode(make_callback("stale")))
    stale["data"] = 12345
    await gateway.raw(
        subjects.inbound_callback("echo"), json.dumps(stale).encode(), msg_id="stale-1"
    )
    await dlq.dead_letters(2)
    # ack, self, refuse, text (+ reply), boom (+ sorry), stale (+ sorry)
    actions = await outbound.actions(9)
    assert await outbound.actions(1, timeout=0.3) == []  # nothing more arrives
    answers: dict[str, list[AnswerCallback]] = {}
    for action in actions:
        if isinstance(action, AnswerCallback):
            answers.setdefault(action.callback_query_id, []).append(action)
    for data, cb in presses.items():
        assert len(answers.get(cb.callback_query_id, [])) == 1, data
    assert len(answers[stale["callback_query_id"]]) == 1
    assert answers[presses["self"].callback_query_id][0].text == "thanks"
    refusal = answers[presses["refuse"].callback_query_id][0]
    assert refusal.text == "That game is over: start a new one with /play."
    assert refusal.show_alert
    assert answers[presses["ack"].callback_query_id][0].text is None
    sent = sorted(a.text for a in actions if isinstance(a, SendText))
    assert sent == [SORRY_EN, SORRY_EN, "You pressed it."]
    assert calls.count("boom") == 3  # retried up to max_deliveries, answered once
