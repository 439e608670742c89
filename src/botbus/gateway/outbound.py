"""Outbound actions from the bus to Telegram, each sent once, in each chat's order.

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
3. for a batch of replies: sends first the bulk actions to the same chats
   that were stored before them and are still unfinished, wherever they
   wait (:class:`~botbus.gateway.backlog.BulkBacklog`), at interactive
   priority;
4. submits every call of every action at once to the outbound scheduler
   (the ``submit`` seam of :mod:`botbus.gateway.sender`), batches of a lane
   in the order they were fetched, each job carrying its action's stream
   sequence: the scheduler alone keeps each chat's order and Telegram's
   budgets. The calls come from :mod:`botbus.gateway.calls`;
5. records each call's key right after Telegram accepted it, then acks. A
   permanent refusal is acked too and reported to the owning service as a
   :class:`~botbus.models.DeliveryEvent`. If the scheduler gave up on a
   transient failure the message is nak'ed and comes back later.

The one window for a duplicate is a crash between Telegram accepting a
call and the key being recorded: at most the calls in flight at that
instant.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from telegram import Bot

from botbus import subjects
from botbus.errors import PayloadError
from botbus.gateway.backlog import BacklogError, BulkBacklog, Stored
from botbus.gateway.calls import (
    SendAction,
    TelegramCall,
    error_code,
    foreign_buttons,
    is_harmless,
    telegram_calls,
)
from botbus.gateway.metrics import GatewayMetrics
from botbus.gateway.owners import MessageOwners
from botbus.gateway.scheduler import SchedulerClosedError
from botbus.gateway.sender import OutboundJob, Outcome, Sender
from botbus.gateway.sentkeys import SentKeyLookupError, SentKeys
from botbus.keepalive import KeepAlive
from botbus.models import (
    DeleteMessage,
    DeliveryEvent,
    EditText,
    Priority,
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
# Actions held at once per lane. A 10,000-chat broadcast fits whole, so the
# scheduler sees all of it; beyond this the backlog lookup keeps replies in order.
DEFAULT_MAX_ACK_PENDING = 20_000
NAK_DELAY = 5.0  # seconds before an action the sender gave up on comes back
PROGRESS_EVERY = 5.0  # seconds an action is held before JetStream is told "still working"
PROGRESS_TICK = 1.0  # seconds between two looks at what is held
RECENT_KEYS = 50_000  # sent keys remembered in memory (about 5 MB)


def _more_pending(msgs: list[Msg]) -> bool:
    """True when the stream held more messages for us after the last one fetched."""
    if not msgs:
        return False
    try:
        return msgs[-1].metadata.num_pending > 0
    except (NatsError, ValueError, IndexError):  # not a JetStream message: no hint
        return False


def _stream_seq(msg: Msg) -> int:
    try:
        return int(msg.metadata.sequence.stream)
    except (NatsError, ValueError, IndexError):  # not a JetStream message: no order
        return 0


class _Fetched:
    """Stream sequences this relay fetched: those it holds, and the latest it settled."""

    def __init__(self, remember: int = RECENT_KEYS) -> None:
        self._held: set[int] = set()
        self._settled: OrderedDict[int, None] = OrderedDict()
        self._remember = remember

    def hold(self, seq: int) -> None:
        """``seq`` was fetched."""
        self._held.add(seq)

    def settled(self, seq: int, *, done: bool) -> None:
        """``seq`` was acked or terminated (``done``), or nak'ed: it comes back."""
        self._held.discard(seq)
        if not done:
            self._settled.pop(seq, None)
            return
        self._settled[seq] = None
        if len(self._settled) > self._remember:
            self._settled.popitem(last=False)

    def __contains__(self, seq: object) -> bool:
        return seq in self._held or seq in self._settled


class _Horizon:
    """The stream sequence up to which this relay has seen every action of BOTBUS_OUT.

    The stream holds only the two lanes, so a reply whose every predecessor was
    seen cannot overtake an unfetched bulk action: no lookup is needed, which is
    the case whenever no broadcast is queued. Sequences seen above a gap are
    kept (at most MAX_AHEAD) until the gap fills or a lookup closes it.
    """

    MAX_AHEAD = 200_000

    def __init__(self) -> None:
        self.upto = 0
        self._ahead: set[int] = set()

    def seen(self, seq: int) -> None:
        """This relay has ``seq`` (fetched or read back)."""
        if seq <= self.upto:
            return
        self._ahead.add(seq)
        while self.upto + 1 in self._ahead:
            self.upto += 1
            self._ahead.discard(self.upto)
        if len(self._ahead) > self.MAX_AHEAD:
            self._ahead.clear()  # a long backlog: lookups answer until it is gone

    def known_upto(self, seq: int) -> None:
        """Everything up to ``seq`` is accounted for (a lookup said so)."""
        if seq <= self.upto:
            return
        self.upto = seq
        self._ahead = {s for s in self._ahead if s > seq}
        while self.upto + 1 in self._ahead:
            self.upto += 1
            self._ahead.discard(self.upto)


class _Withdrawn(Exception):
    """The scheduler withdrew a queued call: the gateway is stopping."""


@dataclass
class _Delivery:
    """One action on its way: its message (None when lifted from the backlog) and calls."""

    msg: Msg | None
    action: SendAction
    calls: list[TelegramCall]
    seq: int  # stream sequence: the action's place in its chat's order
    key: str = ""  # service + idempotency key, while active

    def __post_init__(self) -> None:
        self.key = f"{self.action.service}\x00{self.action.idempotency_key}"


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
        owners: MessageOwners | None = None,
    ) -> None:
        self._js = js
        self._bot = bot
        self._sent = sent
        self._owners = owners  # None: any service may edit or delete any message
        self._sender = sender
        self._metrics = metrics
        self._sent_actions = metrics.actions.labels("sent")  # once per message: looked up once
        self._fetch_batch = fetch_batch
        self._backlog = BulkBacklog(js)
        self._inflight: set[asyncio.Task[None]] = set()
        # A chat paused by a long 429, or a long broadcast queue, must not make
        # JetStream hand an action to us again while we hold it.
        self._keep_alive = KeepAlive(PROGRESS_EVERY, tick=PROGRESS_TICK)
        self._active_keys: set[str] = set()  # actions being delivered right now
        # Keys this relay recorded lately: a second copy whose batch was looked up
        # before the first copy's record was written is still caught.
        self._recorded: OrderedDict[str, None] = OrderedDict()
        # Per lane, the last fetched batch's hand-over to the scheduler: batches
        # are submitted in the order they were fetched, whatever their lookups take.
        self._handed_over: dict[Priority, asyncio.Future[None]] = {}
        # Stream sequences of the actions this relay fetched: the backlog lookup
        # need not read those back.
        self._fetched = _Fetched()
        self._horizon = _Horizon()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Pull and deliver until :meth:`drain` is called or cancelled."""
        self._keep_alive.start()
        try:
            await asyncio.gather(*(self._pull(lane) for lane in get_args(Priority)))
        finally:
            await self._keep_alive.stop()
            await self._backlog.close()

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
            for msg in msgs:
                seq = _stream_seq(msg)
                self._fetched.hold(seq)
                self._horizon.seen(seq)
            before = self._handed_over.get(lane)
            handed_over = asyncio.get_running_loop().create_future()
            self._handed_over[lane] = handed_over
            self._spawn(self._handle_batch(lane, msgs, before, handed_over))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
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

    # -- a fetched batch ---------------------------------------------------------

    async def _handle_batch(
        self,
        lane: Priority,
        msgs: list[Msg],
        before: asyncio.Future[None] | None,
        handed_over: asyncio.Future[None],
    ) -> None:
        """Decode a batch, look up its sent keys, hand it over after the batch before it."""
        try:
            todo: list[_Delivery] = []
            for msg in msgs:
                action = await self._decode(msg)
                if action is not None:
                    calls = telegram_calls(self._bot, action)
                    todo.append(_Delivery(msg, action, calls, _stream_seq(msg)))
            try:
                todo = await self._only_own_messages(todo)
                sent = await self._find_sent(todo)
            except (SentKeyLookupError, NatsError) as exc:
                log.warning("could not look up sent keys (%s); the batch comes back later", exc)
                for delivery in todo:
                    await self._settle(delivery.msg, "later")
                return
            if before is not None:
                await before
            if lane == "interactive" and todo:
                await self._send_earlier_bulk_first(todo)
            for delivery in todo:
                self._start(delivery, delivery.action.priority, sent)
        finally:
            if not handed_over.done():
                handed_over.set_result(None)

    async def _only_own_messages(self, todo: list[_Delivery]) -> list[_Delivery]:
        """Refuse the edits and deletes of messages another service sent."""
        targets = [
            (d.action.chat_id, d.action.message_id)
            for d in todo
            if isinstance(d.action, EditText | DeleteMessage)
        ]
        if self._owners is None or not targets:
            return todo
        owners = await self._owners.owners(targets)
        kept: list[_Delivery] = []
        for delivery in todo:
            action = delivery.action
            if isinstance(action, EditText | DeleteMessage):
                sender = owners.get((action.chat_id, action.message_id), set())
                if sender and action.service not in sender:
                    reason = (
                        f"message {action.message_id} of chat {action.chat_id} was sent by "
                        "another service: a service may edit or delete only its own messages"
                    )
                    await self._refuse(delivery.msg, action, 403, reason)
                    continue
            kept.append(delivery)
        return kept

    async def _refuse(self, msg: Msg | None, action: SendAction, code: int, reason: str) -> None:
        """Drop an action the gateway will not carry out, telling its service why."""
        self._metrics.actions.labels("invalid").inc()
        log.error("dropping action %s of %s: %s", action.idempotency_key, action.service, reason)
        await self._settle(msg, "term")
        await self._report(action, "delivery", error_code=code, description=reason[:500])

    async def _find_sent(self, todo: Iterable[_Delivery]) -> set[str]:
        return await self._sent.find(
            self._record_key(d.action, i if len(d.calls) > 1 else None)
            for d in todo
            for i in range(len(d.calls))
        )

    async def _send_earlier_bulk_first(self, replies: list[_Delivery]) -> None:
        """Hand over the unfinished bulk actions stored before these replies to their chats.

        Bulk batches already fetched are handed over first (the scheduler orders
        them by stream sequence); those still in the stream, or held by a gateway
        that died, are read back and sent at interactive priority, ahead of the
        reply. The bulk consumer gets its copy later and finds it sent.
        """
        await self._bulk_handed_over()
        last = max(reply.seq for reply in replies)
        if self._horizon.upto >= last - 1:
            return  # every action stored before these replies was fetched: nothing to ask
        before: dict[int, int] = {}
        for reply in replies:
            before[reply.action.chat_id] = max(before.get(reply.action.chat_id, 0), reply.seq)
        try:
            stored = await self._backlog.earlier(before, self._fetched)
        except BacklogError as exc:
            log.warning("%s; replies go without waiting for earlier bulk actions", exc)
            return
        if self._backlog.lane_clear:
            self._horizon.known_upto(last - 1)  # every bulk action before them was acked
        await self._bulk_handed_over()  # what the bulk lane fetched meanwhile goes first
        lifted: list[_Delivery] = []
        for item in stored:
            self._horizon.seen(item.seq)
            action = self._decode_stored(item)
            if action is None:
                continue
            key = f"{action.service}\x00{action.idempotency_key}"
            if key in self._active_keys:
                continue  # fetched by the bulk consumer and with the scheduler already
            lifted.append(_Delivery(None, action, telegram_calls(self._bot, action), item.seq))
        if not lifted:
            return
        try:
            sent = await self._find_sent(lifted)
        except (SentKeyLookupError, NatsError) as exc:
            log.warning("could not look up sent keys of earlier bulk actions (%s)", exc)
            return
        log.info(
            "sending %s earlier bulk action(s) ahead of replies to the same chats", len(lifted)
        )
        for delivery in lifted:
            if delivery.key not in self._active_keys:
                self._start(delivery, "interactive", sent)

    async def _bulk_handed_over(self) -> None:
        """Until every bulk batch fetched so far is with the scheduler."""
        while (last := self._handed_over.get("bulk")) is not None and not last.done():
            await last

    def _decode_stored(self, item: Stored) -> SendAction | None:
        try:
            action = decode_action(item.data, item.subject)
        except PayloadError:
            return None  # the bulk consumer terminates it when it gets there
        if subjects.outbound(action.service, action.priority) != item.subject:
            return None
        if foreign_buttons(action):
            return None  # the bulk consumer refuses it when it gets there
        return action

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
        if foreign := foreign_buttons(action):
            reason = (
                f"buttons {', '.join(map(repr, foreign))} do not start with "
                f"'{action.service}:': a service may send only its own buttons"
            )
            await self._refuse(msg, action, 400, reason)
            return None
        return action

    async def _settle(self, msg: Msg | None, how: Literal["ack", "term", "nak", "later"]) -> None:
        """Ack, term or nak ``msg`` and stop keeping it alive."""
        if msg is None:
            return  # lifted from the backlog: the bulk consumer's copy is settled later
        self._keep_alive.release(msg)
        self._fetched.settled(_stream_seq(msg), done=how in ("ack", "term"))
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

    # -- one action ---------------------------------------------------------------

    def _start(self, delivery: _Delivery, priority: Priority, sent: set[str]) -> None:
        """Submit every call of ``delivery`` now (in order) and see it through in a task."""
        if delivery.key in self._active_keys:
            # A second copy while the first is being delivered (a redelivery that
            # overtook it, or an action sent ahead of a reply): it comes back once
            # the first one is recorded.
            self._spawn(self._settle(delivery.msg, "later"))
            return
        try:
            parts = self._submit(delivery, priority, sent)
        except SchedulerClosedError:
            self._spawn(self._settle(delivery.msg, "nak"))
            return
        self._active_keys.add(delivery.key)
        self._spawn(self._see_through(delivery, parts))

    def _submit(
        self, delivery: _Delivery, priority: Priority, sent: set[str]
    ) -> list[tuple[str, asyncio.Future[Outcome] | None]]:
        """One job per call not yet sent, each after the previous one of the action."""
        action, calls = delivery.action, delivery.calls
        parts: list[tuple[str, asyncio.Future[Outcome] | None]] = []
        previous: asyncio.Future[Outcome] | None = None
        try:
            for index, call in enumerate(calls):
                key = self._record_key(action, index if len(calls) > 1 else None)
                if key in sent or key in self._recorded:
                    parts.append((key, None))
                    continue
                previous = self._sender.submit(
                    OutboundJob(
                        chat_id=action.chat_id,
                        is_group=action.chat_id < 0,
                        priority=priority,
                        send=call.send,
                        key=action.idempotency_key,
                        unlimited=call.unlimited,
                        seq=delivery.seq,
                        after=previous,
                    )
                )
                parts.append((key, previous))
        except SchedulerClosedError:
            for _, future in parts:
                if future is not None:
                    future.cancel()
            raise
        return parts

    async def _see_through(
        self, delivery: _Delivery, parts: list[tuple[str, asyncio.Future[Outcome] | None]]
    ) -> None:
        try:
            settled = await self._outcome(delivery, parts)
        except (_Withdrawn, SchedulerClosedError):
            # The gateway is stopping: hand the action back at once, so the next
            # gateway need not wait for ack_wait to get it (parts of a split text
            # already sent are recorded and skipped then).
            log.debug(
                "outbound action %s left for the next gateway", delivery.action.idempotency_key
            )
            await self._settle(delivery.msg, "nak")
            return
        except Exception:
            log.exception(
                "outbound action %s failed; it will be redelivered", delivery.action.idempotency_key
            )
            if delivery.msg is not None:
                self._keep_alive.release(delivery.msg)
            return
        finally:
            self._active_keys.discard(delivery.key)
            for _, future in parts:
                if future is not None and not future.done():
                    future.cancel()  # withdraw what is left of an action that ended early
        await self._settle(delivery.msg, "ack" if settled else "later")

    async def _outcome(
        self, delivery: _Delivery, parts: list[tuple[str, asyncio.Future[Outcome] | None]]
    ) -> bool:
        """Await each call's outcome in order; True when the action may be acked."""
        action = delivery.action
        for index, (key, future) in enumerate(parts):
            if future is None:
                self._metrics.duplicates_skipped.inc()
                log.info("skipping %s: already sent", action.idempotency_key)
                continue
            outcome = await self._await(future)
            if outcome.status == "refused" and is_harmless(outcome.error):
                outcome = Outcome("sent", error=outcome.error)
            if outcome.status in ("gave_up", "skipped"):
                self._metrics.actions.labels("retry_later").inc()
                return False
            if outcome.status == "refused":
                self._metrics.actions.labels("refused").inc()
                if delivery.msg is None:
                    self._remember(key)  # its own copy is acked unsent, not reported twice
                await self._report_refusal(action, outcome.error)
                return True
            await self._sent.record(key)
            self._remember(key)
            await self._record_owner(action, outcome.result)
            self._sent_actions.inc()
            if isinstance(action, SendText) and action.receipt and index == len(parts) - 1:
                await self._report_sent(action, outcome.result)
        return True

    @staticmethod
    async def _await(future: asyncio.Future[Outcome]) -> Outcome:
        try:
            return await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                raise _Withdrawn from None  # the scheduler withdrew it, nobody cancelled us
            raise

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

    async def _record_owner(self, action: SendAction, result: object) -> None:
        """Remember which service sent the message an action became."""
        message_id = getattr(result, "message_id", None)
        if (
            self._owners is not None
            and isinstance(action, SendText | SendPhoto)
            and isinstance(message_id, int)
        ):
            await self._owners.record(action.chat_id, message_id, action.service)

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
            action, "delivery", error_code=error_code(error), description=description[:500]
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
