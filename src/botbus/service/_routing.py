"""From a fetched message to a handler's :class:`Outcome`.

A :class:`Route` says where a kind of work comes from (stream, durable
consumer, filter subject), how its payload is decoded, and which handler
runs it. :func:`routes_of` lists the routes a service declared: the built-in
kinds (commands, button presses, plain messages, ``/forgetme``, delivery
refusals) and every ``@service.consume`` alike, so the consuming machinery
(``_feeds``) has no list of kinds of its own.

:func:`outcome_of` runs a handler and turns whatever it did into one
:class:`Outcome`: a returned outcome as it is, a text into a reply and
:class:`Ack`, ``None`` into :class:`Ack`, a raised outcome as if returned,
any other exception into :class:`Retry`.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.js.api import DeliverPolicy
from pydantic import BaseModel

from botbus import subjects
from botbus.errors import PayloadError, ServiceError
from botbus.models import (
    DeliveryEvent,
    ForgetUser,
    InboundCallback,
    InboundCommand,
    InboundMessage,
    decode_as,
    decode_event,
    decode_inbound,
)
from botbus.service._context import Context
from botbus.service._declare import Service
from botbus.service._outcomes import Ack, HandlerResult, Outcome, Refuse, Retry

log = logging.getLogger(__name__)

Decoder = Callable[[bytes, str], Any]
RouteHandler = Callable[[Context[Any], Any], Awaitable[HandlerResult]]


@dataclass(frozen=True)
class Route:
    """One durable consumer of a service and the handler its messages go to.

    ``name`` is the micro endpoint the route's statistics are reported under
    (commands report one endpoint per command instead, see :func:`endpoint_of`).
    """

    name: str
    stream: str
    durable: str
    filter_subject: str
    decode: Decoder
    handler: RouteHandler
    deliver_policy: DeliverPolicy = DeliverPolicy.NEW
    ack_wait: float | None = None
    """Seconds before an unacked message is redelivered; None: the service's ``ack_wait``."""
    max_batch: int | None = None
    """At most this many messages fetched at once; None: from the service's concurrency."""


def _expect(kind: type[Any], decode: Decoder) -> Decoder:
    """``decode``, then check the payload is a ``kind`` (a subject carries one kind)."""

    def decoder(data: bytes, subject: str) -> Any:
        payload = decode(data, subject)
        if not isinstance(payload, kind):
            raise PayloadError(
                f"invalid payload on {subject}: expected a {kind.__name__}, "
                f"got {getattr(payload, 'kind', type(payload).__name__)}",
                field="kind",
                subject=subject,
            )
        return payload

    return decoder


def routes_of(service: Service) -> list[Route]:
    """The routes ``service`` needs: one per kind of work it has a handler for."""
    name = service.name
    routes: list[Route] = []
    if service.commands:

        async def command(ctx: Context[Any], cmd: InboundCommand) -> HandlerResult:
            return await _run_command(service, ctx, cmd)

        routes.append(
            Route(
                "command",
                subjects.STREAM_INBOUND,
                subjects.consumer_commands(name),
                subjects.inbound_commands_of(name),
                _expect(InboundCommand, decode_inbound),
                command,
            )
        )
    if service.callback_handler:
        routes.append(
            Route(
                "callback",
                subjects.STREAM_INBOUND,
                subjects.consumer_callbacks(name),
                subjects.inbound_callback(name),
                _expect(InboundCallback, decode_inbound),
                service.callback_handler,
            )
        )
    if service.message_handler:
        routes.append(
            Route(
                "message",
                subjects.STREAM_INBOUND,
                subjects.consumer_messages(name),
                subjects.INBOUND_MESSAGES,
                _expect(InboundMessage, decode_inbound),
                service.message_handler,
            )
        )
    if service.forget_handler:
        routes.append(
            Route(
                "forget",
                subjects.STREAM_EVENTS,
                subjects.consumer_forget(name),
                subjects.EVENT_FORGET,
                _expect(ForgetUser, decode_event),
                service.forget_handler,
            )
        )
    if service.delivery_handler:
        routes.append(
            Route(
                "delivery",
                subjects.STREAM_EVENTS,
                subjects.consumer_events(name),
                subjects.delivery_event(name),
                _expect(DeliveryEvent, decode_event),
                service.delivery_handler,
            )
        )
    for consumer in service.consumers:
        routes.append(
            Route(
                consumer.name,
                consumer.stream,
                consumer.durable,
                consumer.subject,
                functools.partial(_decode_model, consumer.model),
                consumer.handler,
                deliver_policy=consumer.deliver_policy,
                ack_wait=consumer.ack_wait,
                max_batch=consumer.max_batch,
            )
        )
    return routes


def _decode_model(model: type[BaseModel], data: bytes, subject: str) -> BaseModel:
    return decode_as(model, data, subject)


def endpoint_of(route: Route, payload: Any, subject: str) -> str:
    """The name of the micro endpoint a message of ``route`` counts under."""
    if route.name != "command":
        return route.name
    command = payload.command if isinstance(payload, InboundCommand) else subject.split(".")[-1]
    return f"command:{command}"


async def _run_command(service: Service, ctx: Context[Any], cmd: InboundCommand) -> HandlerResult:
    command = service.commands.get(cmd.command)
    if command is None:
        return Refuse(ctx.sdk_text("unknown_command", command=cmd.command, service=service.name))
    if command.admin_only and not cmd.is_admin:
        return Refuse(ctx.sdk_text("admin_only", command=cmd.command, user_id=cmd.user.id))
    return await command.handler(ctx, cmd)


async def outcome_of(route: Route, ctx: Context[Any], payload: Any) -> Outcome:
    """Run the route's handler on ``payload`` and say what came of it."""
    try:
        result = await route.handler(ctx, payload)
    except Outcome as outcome:
        return outcome
    except ServiceError as exc:
        warnings.warn(
            "raising ServiceError is deprecated: return or raise Refuse(text) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return Refuse(exc.user_message)
    except Exception as exc:
        retry = Retry(reason=f"{type(exc).__name__}: {exc}")
        retry.__cause__ = exc
        return retry
    if isinstance(result, Outcome):
        return result
    if isinstance(result, str) and result:
        try:
            await ctx.reply(result)
        except Exception as exc:
            retry = Retry(reason=f"could not store the reply: {type(exc).__name__}: {exc}")
            retry.__cause__ = exc
            return retry
    return Ack()
