"""What an :class:`Outcome` does to the message it came from.

==============  ===============================================================
``Ack``         ack
``Refuse(t)``   ``t`` to the user (on a button press, as the press's answer),
                then ack; not an error in the statistics
``Retry(d)``    nak with a delay, until ``max_deliveries``: then as ``Reject``
``Reject(r)``   record on ``botbus.dlq.<service>``, tell a waiting user that
                something went wrong, terminate the message
==============  ===============================================================

Whatever the outcome, a button press is answered (``answerCallbackQuery``)
exactly once: if the handler did not answer it, the policy does, when the
message is settled for good (not on a retry, whose next delivery answers).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from botbus import subjects
from botbus.models import AnswerCallback, DeadLetter, InboundCallback, SendText, encode
from botbus.service._context import Context, CorrelationLogger, sdk_texts
from botbus.service._declare import Service
from botbus.service._host import App
from botbus.service._outcomes import Ack, Outcome, Refuse, Reject, Retry

log = logging.getLogger(__name__)

DEAD_LETTER_PAYLOAD_LIMIT = 64_000  # characters of the original payload kept on the DLQ
MAX_CALLBACK_ANSWER = 200  # characters Telegram shows in a button press's answer


def _peek(raw: bytes) -> dict[str, Any]:
    """Best-effort look into an undecodable payload: chat, language, correlation."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class Policy:
    """Settles messages for one running service: acks, naks, dead letters, refusals."""

    def __init__(self, app: App, service: Service) -> None:
        self.app = app
        self.service = service

    async def settle(self, msg: Msg, ctx: Context[Any], outcome: Outcome) -> str | None:
        """Apply ``outcome`` to ``msg``; return the error to count in the stats, if any."""
        deliveries = ctx.deliveries
        if isinstance(outcome, Retry):
            if deliveries < self.service.max_deliveries:
                await self._retry(msg, ctx, outcome)
                return f"retry: {outcome.reason}"
            ctx.log.error(
                "handler failed on delivery %d/%d: %s",
                deliveries,
                self.service.max_deliveries,
                outcome.reason,
                exc_info=_cause(outcome),
            )
            outcome = Reject(outcome.reason)
        if isinstance(outcome, Reject):
            await self.dead_letter(msg, deliveries, outcome.reason, ctx)
            return outcome.reason
        try:
            if isinstance(outcome, Refuse):
                ctx.log.info("refused: %s", outcome.text)
                await self._refuse(ctx, outcome.text)
            else:
                assert isinstance(outcome, Ack)
                await self._answer(ctx)
        except (NatsError, TimeoutError, OSError) as exc:
            # The answer is not stored: let the message come again rather than
            # leave the user without one.
            await self._retry(msg, ctx, Retry(reason=f"could not store the answer: {exc}"))
            return f"retry: could not store the answer: {exc}"
        await self._ack(msg, ctx)
        return None

    async def _refuse(self, ctx: Context[Any], text: str) -> None:
        if isinstance(ctx.inbound, InboundCallback) and not ctx.answered:
            if len(text) <= MAX_CALLBACK_ANSWER:
                # A button press is answered where the user looks: on the button.
                await ctx.answer_callback(text, show_alert=True)
                return
            await self._answer(ctx)
        await ctx.reply(text)

    async def _answer(self, ctx: Context[Any]) -> None:
        """Answer the button press being handled, if nobody did yet."""
        if isinstance(ctx.inbound, InboundCallback) and not ctx.answered:
            key = f"{self.service.name}:{ctx.correlation_id}"
            await self._answer_press(
                ctx.inbound.chat.id, key, ctx.correlation_id, ctx.inbound.callback_query_id
            )
            ctx.answered = True

    async def _answer_press(
        self, chat_id: int, key: str, correlation: str | None, query_id: str
    ) -> None:
        """Publish the SDK's own answer to a press (key ``<key>:answer``, one per message)."""
        await self.app.publish(
            AnswerCallback(
                service=self.service.name,
                chat_id=chat_id,
                idempotency_key=f"{key}:answer",
                correlation_id=correlation,
                callback_query_id=query_id,
            )
        )

    async def _ack(self, msg: Msg, ctx: Context[Any]) -> None:
        try:
            # Not ack_sync: a round trip per message for nothing, as a lost ack only
            # means a redelivery, whose actions JetStream dedupes by their keys.
            await msg.ack()
        except (NatsError, TimeoutError) as exc:
            ctx.log.warning("ack failed (%s); the message may be redelivered", exc)

    async def _retry(self, msg: Msg, ctx: Context[Any], retry: Retry) -> None:
        delay = retry.delay if retry.delay is not None else self.service.retry_delay(ctx.deliveries)
        ctx.log.warning(
            "handler failed on delivery %d/%d, retrying in %ss: %s",
            ctx.deliveries,
            self.service.max_deliveries,
            delay,
            retry.reason,
            exc_info=_cause(retry),
        )
        try:
            await msg.nak(delay=delay)
        except (NatsError, OSError) as exc:
            ctx.log.warning("nak failed (%s); the server redelivers after ack_wait", exc)

    async def dead_letter(
        self, msg: Msg, deliveries: int, error: str, ctx: Context[Any] | None
    ) -> None:
        """Record ``msg`` on the DLQ, tell the user, answer a press, stop its redelivery."""
        name = self.service.name
        peek = _peek(msg.data) if ctx is None else {}
        correlation = ctx.correlation_id if ctx else peek.get("correlation_id")
        correlation = correlation if isinstance(correlation, str) else None
        record = DeadLetter(
            service=name,
            subject=msg.subject,
            deliveries=deliveries,
            error=error,
            payload=msg.data.decode(errors="replace")[:DEAD_LETTER_PAYLOAD_LIMIT],
            correlation_id=correlation,
        )
        logger = ctx.log if ctx else CorrelationLogger(log, {"correlation_id": correlation})
        logger.error(
            "dead-lettered message on %s after %d delivery(ies): %s (recorded on %s)",
            msg.subject,
            deliveries,
            error,
            subjects.dead_letter(name),
        )
        try:
            await self.app.js.publish(subjects.dead_letter(name), encode(record))
            await self._sorry(ctx, peek, correlation)
            await msg.term()
        except (NatsError, TimeoutError, OSError) as exc:
            # Not terminated: the server redelivers it and we try again.
            logger.warning("could not record the dead letter (%s); will retry", exc)

    async def _sorry(
        self, ctx: Context[Any] | None, peek: dict[str, Any], correlation: str | None
    ) -> None:
        """The user-facing "something went wrong", and the press's answer, if there is a user."""
        name = self.service.name
        if ctx is not None:
            inbound = ctx.inbound
            kind = getattr(inbound, "kind", None)
            chat = getattr(inbound, "chat", None)
            chat_id = chat.id if chat is not None and kind in ("command", "callback") else None
            language = ctx.language
            query_id = inbound.callback_query_id if isinstance(inbound, InboundCallback) else None
            answered = ctx.answered
        else:
            kind = peek.get("kind")
            chat = peek.get("chat")
            chat_id = chat.get("id") if isinstance(chat, dict) else None
            language = str(peek.get("language") or "en")
            query_id = peek.get("callback_query_id")
            answered = False
        if kind not in ("command", "callback") or not isinstance(chat_id, int):
            # Only a command or a button press has a user waiting for an answer;
            # a fanned-out plain message or an event does not.
            return
        text = sdk_texts().text(language, "sorry")
        key = f"{name}:{correlation or 'dlq'}"
        if kind == "callback" and isinstance(query_id, str) and query_id and not answered:
            await self._answer_press(chat_id, key, correlation, query_id)
            if ctx is not None:
                ctx.answered = True
        await self.app.publish(
            SendText(
                service=name,
                chat_id=chat_id,
                idempotency_key=f"{key}:error",
                correlation_id=correlation,
                text=text,
            )
        )


def _cause(outcome: Outcome) -> BaseException | None:
    cause = outcome.__cause__
    return cause if isinstance(cause, Exception) else None
