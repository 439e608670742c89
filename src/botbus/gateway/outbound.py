"""Outbound actions from the bus to Telegram, each sent once.

:class:`OutboundRelay` consumes ``botbus.out.<service>.<priority>`` with one
durable pull consumer per lane (interactive, bulk), so a reply never waits
in the stream behind a broadcast. For each fetched batch it:

1. decodes every action (an invalid payload, or one whose service or
   priority does not match its subject, is logged and terminated:
   redelivering it could never help);
2. looks up, in one request, which of the batch's Telegram calls are
   already recorded as sent in the gateway's ``sent`` bucket
   (:class:`~botbus.gateway.sentkeys.SentKeys`; a service's redelivery, or
   the gateway's own after a crash) and skips those;
3. hands each call to the outbound scheduler (the ``submit`` seam of
   :mod:`botbus.gateway.sender`), splitting long texts and retrying as plain
   text when Telegram cannot parse the entities; answering a callback and
   a chat action send no message, so they skip Telegram's message budgets;
4. records the key right after Telegram accepted, then acks. A permanent
   refusal is acked too and reported to the owning service as a
   :class:`~botbus.models.DeliveryEvent`. If the sender gave up on a
   transient failure the message is nak'ed and comes back later.

The one window for a duplicate is a crash between Telegram accepting a
call and the key being recorded: at most the calls in flight at that
instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, get_args

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    ReplyParameters,
)
from telegram.error import BadRequest

from botbus import subjects
from botbus.errors import PayloadError
from botbus.gateway.metrics import GatewayMetrics
from botbus.gateway.scheduler import SchedulerClosedError
from botbus.gateway.sender import OutboundJob, Outcome, Sender
from botbus.gateway.sentkeys import SentKeyLookupError, SentKeys
from botbus.keepalive import KeepAlive
from botbus.models import (
    MAX_MESSAGE_TEXT,
    AnswerCallback,
    DeleteMessage,
    DeliveryEvent,
    EditText,
    InlineKeyboard,
    Priority,
    SendChatAction,
    SendPhoto,
    SendText,
    decode_action,
    encode,
)

log = logging.getLogger(__name__)

DEFAULT_FETCH_BATCH = 128  # messages per pull
DEFAULT_FETCH_TIMEOUT = 1.0  # seconds a pull waits for messages
# An idle relay pulls one message at a time (returned the moment it arrives) and
# pulls a batch only when the last message says more are pending (its metadata's
# num_pending): then the batch is there to take at once, without waiting.
BACKLOG_FETCH_TIMEOUT = 0.05  # seconds
DEFAULT_ACK_WAIT = 10  # seconds: how soon a restarted gateway retries what a dead one held
# Actions held at once. JetStream hands them out in stream order, so a reply
# published behind a broadcast waits until the backlog ahead of it fits here:
# large enough that a 10,000-chat broadcast is all in the scheduler, where
# interactive jobs overtake bulk ones.
DEFAULT_MAX_ACK_PENDING = 20_000
NAK_DELAY = 5.0  # seconds before an action the sender gave up on comes back
PROGRESS_EVERY = 5.0  # seconds an action is held before JetStream is told "still working"
PROGRESS_TICK = 1.0  # seconds between two looks at what is held
RECENT_KEYS = 50_000  # sent keys remembered in memory (about 5 MB)

SendAction = SendText | EditText | AnswerCallback | SendPhoto | SendChatAction | DeleteMessage
# Built once: PTB objects are costly to construct, and this one never changes.
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
# One Telegram call of an action, and its plain-text fallback when it has entities.
_Call = tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[object]] | None]


def split_text(text: str, limit: int = MAX_MESSAGE_TEXT) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters.

    Cuts at the last line break in reach, else the last space, else hard (a
    boundary that would leave a part under half the limit does not count).
    """
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        # A boundary in the first half would leave a stub of a message: cut hard instead.
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = max(window.rfind(" "), window.rfind("\t"))
        if cut < limit // 2:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    if rest.strip() or not parts:
        parts.append(rest)
    return [p for p in parts if p] or [text[:limit]]


def _markup(keyboard: InlineKeyboard | None) -> InlineKeyboardMarkup | None:
    if keyboard is None:
        return None
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(b.text, callback_data=b.callback_data, url=b.url) for b in row]
            for row in keyboard.rows
        ]
    )


def _cannot_parse(error: BaseException | None) -> bool:
    return isinstance(error, BadRequest) and "can't parse entities" in error.message.lower()


def _harmless(error: BaseException | None) -> bool:
    # Editing a message to the text it already has changes nothing the user sees.
    return isinstance(error, BadRequest) and "message is not modified" in error.message.lower()


def _error_code(error: BaseException | None) -> int:
    if isinstance(error, BadRequest):
        return 400
    name = type(error).__name__
    return {"Forbidden": 403, "ChatMigrated": 400, "InvalidToken": 401}.get(name, 400)


def _more_pending(msgs: list[Msg]) -> bool:
    """True when the stream held more messages for us after the last one fetched."""
    if not msgs:
        return False
    try:
        return msgs[-1].metadata.num_pending > 0
    except (NatsError, ValueError, IndexError):  # not a JetStream message: no hint
        return False


class _Withdrawn(Exception):
    """The scheduler withdrew a queued call: the gateway is stopping."""


class OutboundRelay:
    """Consumes BOTBUS_OUT and delivers each action through ``sender``.

    Each lane has its own durable consumer (``botbus.out.*.interactive`` and
    ``botbus.out.*.bulk``) and its own pull loop, so a reply is fetched the
    moment it is stored, however long the broadcast queued ahead of it.
    """

    def __init__(
        self,
        js: JetStreamContext,
        bot: Bot,
        sent: SentKeys,
        sender: Sender,
        metrics: GatewayMetrics,
        *,
        fetch_batch: int = DEFAULT_FETCH_BATCH,
    ) -> None:
        self._js = js
        self._bot = bot
        self._sent = sent
        self._sender = sender
        self._metrics = metrics
        self._sent_actions = metrics.actions.labels("sent")  # once per message: looked up once
        self._fetch_batch = fetch_batch
        self._inflight: set[asyncio.Task[None]] = set()
        # A chat paused by a long 429, or a long broadcast queue, must not make
        # JetStream hand an action to us again while we hold it.
        self._keep_alive = KeepAlive(PROGRESS_EVERY, tick=PROGRESS_TICK)
        self._active_keys: set[str] = set()  # idempotency keys being delivered right now
        # Keys this relay recorded lately: a second copy whose batch was looked up
        # before the first copy's record was written is still caught.
        self._recorded: OrderedDict[str, None] = OrderedDict()
        self._chat_locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._replies_waiting: Counter[int] = Counter()  # chat -> interactive actions queued
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Pull and deliver until :meth:`drain` is called or cancelled."""
        self._keep_alive.start()
        try:
            await asyncio.gather(*(self._pull(lane) for lane in get_args(Priority)))
        finally:
            await self._keep_alive.stop()

    async def _pull(self, lane: Priority) -> None:
        durable = subjects.CONSUMER_GATEWAY_OUTBOUND[lane]
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=DEFAULT_ACK_WAIT,
            max_ack_pending=DEFAULT_MAX_ACK_PENDING,
            filter_subject=subjects.outbound_lane(lane),
        )
        psub = None
        backlog = False
        while not self._stopping.is_set():
            try:
                if psub is None:
                    psub = await self._js.pull_subscribe(
                        config.filter_subject or "",
                        durable=durable,
                        stream=subjects.STREAM_OUTBOUND,
                        config=config,
                    )
                if backlog:
                    msgs = await psub.fetch(self._fetch_batch, timeout=BACKLOG_FETCH_TIMEOUT)
                else:
                    msgs = await psub.fetch(1, timeout=DEFAULT_FETCH_TIMEOUT)
            except (TimeoutError, NatsTimeoutError):
                backlog = False
                continue
            except NatsError as exc:
                log.warning("outbound pull (%s) failed (%s); retrying in 1s", lane, exc)
                await asyncio.sleep(1.0)
                continue
            backlog = _more_pending(msgs)
            for msg in msgs:
                self._keep_alive.hold(msg)
            task = asyncio.create_task(self._handle_batch(msgs))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def drain(self, timeout: float = 10.0, *, cancel_late: bool = True) -> None:
        """Stop pulling and let the actions in flight finish (or time out).

        Actions still unfinished after ``timeout`` are cancelled (never acked, so
        JetStream redelivers them), unless ``cancel_late`` is false: then the
        caller ends them, e.g. by stopping the scheduler they wait on.
        """
        self._stopping.set()
        while self._inflight:
            # A batch spawns its actions' tasks: wait for those too.
            _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            if pending:
                if cancel_late:
                    for task in pending:
                        task.cancel()
                return

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        """Decode a fetched batch, look up its sent keys at once, deliver each action."""
        todo: list[tuple[Msg, SendAction, list[_Call]]] = []
        for msg in msgs:
            action = await self._decode(msg)
            if action is not None:
                todo.append((msg, action, self._calls(action)))
        if not todo:
            return
        try:
            sent = await self._sent.find(
                self._record_key(action, i if len(calls) > 1 else None)
                for _, action, calls in todo
                for i in range(len(calls))
            )
        except (SentKeyLookupError, NatsError) as exc:
            log.warning("could not look up sent keys (%s); the batch comes back later", exc)
            for msg, _, _ in todo:
                await self._settle(msg, "later")
            return
        for msg, action, calls in todo:
            task = asyncio.create_task(self._handle(msg, action, calls, sent))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _decode(self, msg: Msg) -> SendAction | None:
        try:
            action = decode_action(msg.data, msg.subject)
        except PayloadError as exc:
            self._metrics.actions.labels("invalid").inc()
            log.error("dropping invalid outbound action on %s: %s", msg.subject, exc)
            await self._settle(msg, "term")
            return None
        if subjects.outbound(action.service, action.priority) != msg.subject:
            self._metrics.actions.labels("invalid").inc()
            log.error(
                "dropping action %s: service %r, priority %r do not match its subject %s",
                action.idempotency_key,
                action.service,
                action.priority,
                msg.subject,
            )
            await self._settle(msg, "term")
            return None
        return action

    async def _settle(self, msg: Msg, how: Literal["ack", "term", "nak", "later"]) -> None:
        """Ack, term or nak ``msg`` and stop keeping it alive."""
        self._keep_alive.release(msg)
        try:
            if how == "ack":
                await msg.ack()
            elif how == "term":
                await msg.term()
            elif how == "nak":
                await msg.nak()
            else:
                await msg.nak(delay=NAK_DELAY)
        except NatsError as exc:
            # JetStream redelivers; the sent-key check stops a second send.
            log.warning("outbound action on %s not settled: %s", msg.subject, exc)

    async def _handle(
        self, msg: Msg, action: SendAction, calls: list[_Call], sent: set[str]
    ) -> None:
        key = f"{action.service}\x00{action.idempotency_key}"
        if key in self._active_keys:
            # A second copy while the first is being delivered (a redelivery that
            # overtook it): it comes back once the first one is recorded.
            await self._settle(msg, "later")
            return
        self._active_keys.add(key)
        try:
            async with self._chat_turn(action.chat_id, action.priority):
                settled = await self._deliver(action, calls, sent)
        except (_Withdrawn, SchedulerClosedError):
            # The gateway is stopping: hand the action back at once, so the next
            # gateway need not wait for ack_wait to get it (parts of a split text
            # already sent are recorded and skipped then).
            log.debug("outbound action on %s left for the next gateway", msg.subject)
            await self._settle(msg, "nak")
            return
        except Exception:
            log.exception("outbound action on %s failed; it will be redelivered", msg.subject)
            self._keep_alive.release(msg)
            return
        finally:
            self._active_keys.discard(key)
        await self._settle(msg, "ack" if settled else "later")

    @contextlib.asynccontextmanager
    async def _chat_turn(self, chat_id: int, priority: Priority) -> AsyncIterator[None]:
        # Actions to one chat are delivered one after the other, in stream order (the
        # lock wakes waiters first-come first-served), so two replies never swap places
        # and the parts of a split text stay together.
        lock, users = self._chat_locks.get(chat_id, (asyncio.Lock(), 0))
        self._chat_locks[chat_id] = (lock, users + 1)
        # A reply queued behind a bulk action to the same chat would wait in the bulk
        # lane with it: the actions ahead of it go at interactive priority instead.
        waiting = priority == "interactive" and lock.locked()
        if waiting:
            self._replies_waiting[chat_id] += 1
            self._sender.promote(chat_id)
        try:
            async with lock:
                if waiting:
                    waiting = False
                    self._replies_waiting[chat_id] -= 1
                yield
        finally:
            if waiting:
                self._replies_waiting[chat_id] -= 1
            if chat_id in self._replies_waiting and self._replies_waiting[chat_id] <= 0:
                del self._replies_waiting[chat_id]
            lock, users = self._chat_locks[chat_id]
            if users <= 1:
                del self._chat_locks[chat_id]
            else:
                self._chat_locks[chat_id] = (lock, users - 1)

    # -- delivering ---------------------------------------------------------

    async def _deliver(self, action: SendAction, calls: list[_Call], sent: set[str]) -> bool:
        """Deliver every call of ``action`` not in ``sent``; True when it may be acked."""
        for index, (call, plain) in enumerate(calls):
            key = self._record_key(action, index if len(calls) > 1 else None)
            if key in sent or key in self._recorded:
                self._metrics.duplicates_skipped.inc()
                log.info("skipping %s: already sent", action.idempotency_key)
                continue
            outcome = await self._outcome(action, call)
            if outcome.status == "refused" and plain is not None and _cannot_parse(outcome.error):
                log.info("resending %s as plain text: %s", action.idempotency_key, outcome.error)
                outcome = await self._outcome(action, plain)
            if outcome.status == "refused" and _harmless(outcome.error):
                outcome = Outcome("sent", error=outcome.error)
            if outcome.status == "gave_up":
                self._metrics.actions.labels("retry_later").inc()
                return False
            if outcome.status == "refused":
                self._metrics.actions.labels("refused").inc()
                await self._report_refusal(action, outcome.error)
                return True
            await self._sent.record(key)
            self._remember(key)
            self._sent_actions.inc()
            if isinstance(action, SendText) and action.receipt and index == len(calls) - 1:
                await self._report_sent(action, outcome.result)
        return True

    async def _outcome(self, action: SendAction, call: Callable[[], Awaitable[object]]) -> Outcome:
        future = self._submit(action, call)
        try:
            return await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                raise _Withdrawn from None  # the scheduler withdrew it, nobody cancelled us
            raise

    def _submit(
        self, action: SendAction, call: Callable[[], Awaitable[object]]
    ) -> asyncio.Future[Outcome]:
        job = OutboundJob(
            chat_id=action.chat_id,
            is_group=action.chat_id < 0,
            # A reply waits for this chat's turn: what holds it goes first.
            priority="interactive" if self._replies_waiting[action.chat_id] else action.priority,
            send=call,
            key=action.idempotency_key,
            unlimited=isinstance(action, AnswerCallback | SendChatAction),
        )
        return self._sender.submit(job)

    @staticmethod
    def _record_key(action: SendAction, part: int | None) -> str:
        # KV keys allow few characters: hash the service's free-form key.
        digest = hashlib.sha256(f"{action.service}\x00{action.idempotency_key}".encode())
        suffix = f".{part}" if part is not None else ""
        return f"{action.service}.{digest.hexdigest()[:40]}{suffix}"

    def _remember(self, key: str) -> None:
        self._recorded[key] = None
        if len(self._recorded) > RECENT_KEYS:
            self._recorded.popitem(last=False)

    async def _report_sent(self, action: SendText, result: object) -> None:
        """Tell the service which message its action became (it asked for a receipt)."""
        message_id = getattr(result, "message_id", None)
        if isinstance(message_id, int):
            await self._report(action, "sent", status="sent", message_id=message_id)

    async def _report_refusal(self, action: SendAction, error: BaseException | None) -> None:
        description = getattr(error, "message", None) or str(error)
        log.info(
            "telegram refused %s for chat %s: %s",
            action.idempotency_key,
            action.chat_id,
            description,
        )
        await self._report(
            action, "delivery", error_code=_error_code(error), description=description[:500]
        )

    async def _report(self, action: SendAction, dedupe: str, **fields: Any) -> None:
        """Publish a DeliveryEvent about ``action`` to the service that owns it."""
        if action.service == "gateway":
            return
        event = DeliveryEvent(
            service=action.service,
            chat_id=action.chat_id,
            idempotency_key=action.idempotency_key,
            correlation_id=action.correlation_id,
            **fields,
        )
        await self._js.publish(
            subjects.delivery_event(action.service),
            encode(event),
            headers={"Nats-Msg-Id": f"{dedupe}:{action.service}:{action.idempotency_key}"},
        )

    # -- Bot API calls --------------------------------------------------------

    def _calls(self, action: SendAction) -> list[_Call]:
        """(call, plain-text fallback) for each Telegram call the action needs."""
        bot = self._bot
        if isinstance(action, SendText):
            return self._text_calls(action)
        if isinstance(action, EditText):
            a = action

            def edit(mode: str | None) -> Callable[[], Awaitable[object]]:
                return lambda: bot.edit_message_text(
                    a.text,
                    chat_id=a.chat_id,
                    message_id=a.message_id,
                    parse_mode=mode,
                    reply_markup=_markup(a.keyboard),
                )

            return [(edit(a.parse_mode), edit(None) if a.parse_mode else None)]
        if isinstance(action, AnswerCallback):
            b = action
            return [
                (
                    lambda: bot.answer_callback_query(
                        b.callback_query_id, text=b.text, show_alert=b.show_alert
                    ),
                    None,
                )
            ]
        if isinstance(action, SendPhoto):
            p = action

            def photo(mode: str | None) -> Callable[[], Awaitable[object]]:
                return lambda: bot.send_photo(
                    p.chat_id,
                    InputFile(p.photo, filename=p.filename),
                    caption=p.caption,
                    parse_mode=mode,
                    message_thread_id=p.message_thread_id,
                )

            return [(photo(p.parse_mode), photo(None) if p.parse_mode else None)]
        if isinstance(action, SendChatAction):
            c = action
            return [
                (
                    lambda: bot.send_chat_action(
                        c.chat_id, c.action, message_thread_id=c.message_thread_id
                    ),
                    None,
                )
            ]
        d = action
        return [(lambda: bot.delete_message(d.chat_id, d.message_id), None)]

    def _text_calls(self, action: SendText) -> list[_Call]:
        bot = self._bot
        parts = split_text(action.text)
        calls: list[_Call] = []
        preview = _NO_PREVIEW if action.disable_link_preview else None
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            markup = _markup(action.keyboard) if last else None
            reply_to = (
                ReplyParameters(action.reply_to_message_id, allow_sending_without_reply=True)
                if index == 0 and action.reply_to_message_id is not None
                else None
            )

            def call(
                mode: str | None,
                part: str = part,
                markup: InlineKeyboardMarkup | None = markup,
                reply_to: ReplyParameters | None = reply_to,
            ) -> Callable[[], Awaitable[object]]:
                return lambda: bot.send_message(
                    action.chat_id,
                    part,
                    parse_mode=mode,
                    reply_markup=markup,
                    link_preview_options=preview,
                    reply_parameters=reply_to,
                    message_thread_id=action.message_thread_id,
                )

            calls.append((call(action.parse_mode), call(None) if action.parse_mode else None))
        return calls
