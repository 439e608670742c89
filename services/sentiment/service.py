"""sentiment — how a conversation feels, in English and Spanish, with charts.

Commands: ``/sentiment TEXT`` (score and driving words), ``/sentiment off|on``
(opt a chat out of / back into passive scoring), ``/mood [day|week|month|me]``
(a chart of the chat's or the user's mood and a one-line summary).
Every plain message of a chat that has not opted out is scored; only counts
are kept (NATS KV bucket ``svc_sentiment``), never text. ``/forgetme``
deletes the user's aggregates. A group whose rolling mood drops below the
alert policy's threshold is reported to the bot admins, once per cool-down.

Who may opt a chat out: in a private chat, its owner; in a group, the
group's Telegram admins (``chat_admin``, which the gateway reads with
getChatAdministrators) or the bot's admins (``is_admin``).

KV keys (bucket ``svc_sentiment``): ``chat.<chat_id>.<slot>`` /
``user.<user_id>.<slot>`` (mood documents, one per instance slot, written
only by the instance holding the slot and merged when read: see
:mod:`.store`), ``chat.<chat_id>`` / ``user.<user_id>`` (documents of the
earlier single-document layout: still read and merged, never written),
``slot.<n>`` (slot leases), ``optout.<chat_id>`` (present = opted out),
``optout.probe.<slot>`` (an instance's probe of its opt-out watch) and
``alert.<chat_id>`` (time of the last mood alert, claimed with
compare-and-set so one instance sends it).

A scored message costs two KV writes (its chat's and its user's document of
this instance) and no read: each instance keeps the opt-out flags in memory,
followed with a KV watch (:class:`OptOutCache`), keeps the documents it
writes in memory with their revision, and checks the mood alert against the
document just written plus the other instances' share read at most every
``ALERT_REFRESH`` seconds, and only when its own share is low. Within one
instance the changes of one document arriving together share one write
(:mod:`.batching`). Each document remembers the ids of the last messages it
counted, so a message delivered again after a partial failure (chat counted,
user not) or a lost ack is counted once in each: on a redelivery the service
reads the documents and counts only where the message is missing. The bound:
only the last ``RECENT_IDS`` messages of each document are remembered, so a
redelivery arriving after that many newer messages of the same chat reached
the same instance's document would be counted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError
from nats.js.kv import KeyValue

from botbus import subjects
from botbus.models import Alert, ForgetUser, InboundCommand, InboundMessage, encode
from botbus.service import App, Context, Grants, Refuse, Service
from services.sentiment.aggregate import PERIODS, AlertPolicy, MoodDoc, Period
from services.sentiment.background import end_task, stop_requested
from services.sentiment.chart import period_name, render_chart, summary_line, total_of
from services.sentiment.scoring import Score, SentimentAnalyzer
from services.sentiment.store import Entity, Kind, MoodStore, SlotLease

log = logging.getLogger(__name__)

CONCURRENCY = 64  # messages one instance handles at once (they mostly wait for KV writes)
ALERT_REFRESH = 5.0  # seconds the other instances' share of a chat's mood is trusted
OPTOUT_TTL = 1.0  # seconds a cached opt-out flag is trusted if the KV watch falls silent
PROBE_PREFIX = "optout.probe."  # + slot: the key an instance probes its opt-out watch with
ALERT_CHANNEL = "mood"  # alerts channel used when no bot admin is configured
# The alerts service's public publisher subject, alerts.<channel> (MQTT alerts/<channel>).
ALERT_SUBJECT = f"alerts.{ALERT_CHANNEL}"
ALERT_POLICY = AlertPolicy()

service = Service(
    name="sentiment",
    version="1.0.0",
    concurrency=CONCURRENCY,
    locales=__package__,
    # mood alerts go to the alerts service's channel "mood" when no bot admin is configured
    grants=Grants(publishes=("alerts",)),
)


@cache
def analyzer() -> SentimentAnalyzer:
    """The scorer, built once per process (loading lingua's models takes a moment)."""
    return SentimentAnalyzer()


@service.on_startup
async def _warm_up(_app: object) -> None:
    analyzer()


# -- KV helpers -----------------------------------------------------------------


async def _read(kv: KeyValue, key: str) -> tuple[bytes | None, int | None]:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, None
    return entry.value, entry.revision


@dataclass
class Instance:
    """What one running instance keeps: its slot, its documents, opt-outs, alert memory."""

    lease: SlotLease
    store: MoodStore
    optouts: OptOutCache
    last_alerts: dict[int, datetime] = field(default_factory=dict)  # chat -> last alert known


class OptOutCache:
    """Which chats opted out, kept in memory and followed with a KV watch.

    Every plain message needs this flag, so reading ``optout.<chat_id>`` per
    message would cost a round trip each. Instead a watch on ``optout.>``
    pushes every change to every instance as soon as the ``/sentiment off``
    write is stored; the reply is sent only after that write, and a later
    message must go round through Telegram and the gateway, so in practice
    it is filtered on every instance. The instance that handled the command
    knows at once.

    The guaranteed bound: an opt-out takes effect on every instance at most
    ``ttl`` seconds after it was stored, even if the watch falls behind or
    dies (a broker restart). With ``probe_key``, the instance writes a token
    there every ``ttl / 2`` seconds; when its own watch brings the token
    back, every flag stored before the token was written has arrived too (a
    watch delivers in order). While the last token that came back was
    written less than ``ttl`` ago, the cached flags are the truth, and a chat
    the watch never mentioned has not opted out: no read at all. Otherwise
    (no probe, or the tokens stopped coming back) a flag is re-read from KV
    once it is older than ``ttl``.
    """

    def __init__(
        self,
        kv: KeyValue,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        probe_key: str | None = None,
    ) -> None:
        self._kv = kv
        self._ttl = OPTOUT_TTL if ttl is None else ttl
        self._clock = clock
        self._flags: dict[int, tuple[bool, float]] = {}  # chat -> (opted out, known since)
        self._watched = 0  # watch updates seen so far: orders them against reads
        self._changed: dict[int, int] = {}  # chat -> value of _watched at its last update
        self._watcher: KeyValue.KeyWatcher | None = None
        self._follower: asyncio.Task[None] | None = None
        self._probe_key = probe_key
        self._token_base = uuid.uuid4().hex  # tells our tokens from other instances'
        self._probes: dict[bytes, float] = {}  # token written -> clock when it was written
        self._complete_at: float | None = None  # the watch held every flag stored before this
        self._prober: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()  # ends the probe even if it lost a cancel

    async def start(self) -> None:
        """Start following ``optout.>`` (the current flags arrive first), and probing it."""
        self._watcher = await self._kv.watch("optout.>")
        self._follower = asyncio.create_task(self._follow(self._watcher), name="optout-watch")
        if self._probe_key is not None:
            self._prober = asyncio.create_task(self._probe(self._probe_key), name="optout-probe")

    async def stop(self) -> None:
        """Stop following the flags."""
        self._stopping.set()
        for task in (self._prober, self._follower):
            if task is not None:
                await end_task(task)
        if self._watcher is not None:
            with contextlib.suppress(NatsError):
                await self._watcher.stop()  # type: ignore[no-untyped-call]  # nats-py: untyped
        if self._probe_key is not None:
            with contextlib.suppress(NatsError, TimeoutError):
                await self._kv.purge(self._probe_key)

    def note(self, chat_id: int, opted_out: bool) -> None:
        """Record a flag known right now (written here, or pushed by the watch)."""
        self._flags[chat_id] = (opted_out, self._clock())

    async def is_opted_out(self, chat_id: int) -> bool:
        """True if the chat switched passive scoring off."""
        known = self._flags.get(chat_id)
        now = self._clock()
        if self._complete_at is not None and now - self._complete_at < self._ttl:
            return known is not None and known[0]
        if known is not None and now - known[1] < self._ttl:
            return known[0]
        before = self._watched
        raw, _ = await _read(self._kv, f"optout.{chat_id}")
        if self._changed.get(chat_id, 0) > before:
            # The watch brought a change while we read: it is at least as new.
            return self._flags[chat_id][0]
        self.note(chat_id, raw is not None)
        return raw is not None

    async def _probe(self, key: str) -> None:
        """Write a fresh token to ``key`` every ttl/2 seconds (see the class docstring)."""
        for n in itertools.count():
            token = f"{self._token_base}:{n}".encode()
            self._probes[token] = self._clock()
            try:
                await self._kv.put(key, token)
            except (NatsError, TimeoutError) as exc:
                # Not fatal: without fresh tokens the flags are re-read every ttl.
                log.warning("could not probe the opt-out watch (%s); retrying", exc)
            if await stop_requested(self._stopping, self._ttl / 2):
                return

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            await self._apply_updates(watcher)
        except Exception:
            # Not fatal: every flag is then re-read once it is ttl old.
            log.exception("the opt-out watch failed; flags are re-read every %ss", self._ttl)

    async def _apply_updates(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:
                continue  # the marker after the initial flags
            if entry.key.startswith(PROBE_PREFIX):
                self._probe_returned(entry.value or b"")
                continue
            try:
                chat_id = int(entry.key.removeprefix("optout."))
            except ValueError:
                log.warning("ignoring KV key %s: not optout.<chat_id>", entry.key)
                continue
            self._watched += 1
            self._changed[chat_id] = self._watched
            self.note(chat_id, entry.operation is None and bool(entry.value))
        log.warning("the opt-out watch ended; flags are re-read every %ss", self._ttl)

    def _probe_returned(self, token: bytes) -> None:
        written = self._probes.get(token)
        if written is None:
            return  # another instance's token, or one of ours from before a restart
        self._complete_at = written
        for older in [t for t, at in self._probes.items() if at <= written]:
            del self._probes[older]


@service.lifespan
async def instance(app: App) -> AsyncIterator[Instance]:
    """Lease a slot, open the mood documents, follow the opt-out flags; undo in reverse."""
    kv = await app.kv()
    lease = SlotLease(kv, app.instance_id)
    await lease.claim()
    lease.start()
    try:
        optouts = OptOutCache(kv, probe_key=f"{PROBE_PREFIX}{lease.slot}")
        # Follow the opt-out flags before the first message.
        await optouts.start()
        try:
            bucket = subjects.service_bucket(service.name)
            yield Instance(lease, MoodStore(app.js, kv, bucket, lease), optouts)
        finally:
            await optouts.stop()
    finally:
        await lease.stop()


# -- commands -------------------------------------------------------------------


def describe(ctx: Context, score: Score) -> str:
    """The reply to ``/sentiment TEXT``."""
    label = {
        "positive": ctx.t("positive"),
        "neutral": ctx.t("neutral"),
        "negative": ctx.t("negative"),
    }[score.label]
    lines = [
        ctx.t(
            "verdict",
            label=label,
            compound=score.compound,
            language=score.language,
        )
    ]
    if score.drivers:
        words = ", ".join(f"{d.word} ({d.valence:+.1f})" for d in score.drivers)
        lines.append(ctx.t("driven_by_words", words=words))
    else:
        lines.append(ctx.t("no_word_carried_sentiment"))
    return "\n".join(lines)


async def _set_scoring(ctx: Context[Instance], cmd: InboundCommand, enabled: bool) -> None:
    if cmd.chat.is_group and not (cmd.chat_admin or cmd.is_admin):
        raise Refuse(ctx.t("only_a_group_admin"))
    kv = await ctx.kv()
    key = f"optout.{cmd.chat.id}"
    cache = ctx.state.optouts
    if enabled:
        await kv.delete(key)
        cache.note(cmd.chat.id, False)
        await ctx.reply(ctx.t("sentiment_scoring_is_on"))
    else:
        await kv.put(key, datetime.now(UTC).isoformat().encode())
        cache.note(cmd.chat.id, True)
        await ctx.reply(ctx.t("sentiment_scoring_is_off"))


@service.command("sentiment")
async def sentiment(ctx: Context, cmd: InboundCommand) -> None:
    """``/sentiment TEXT`` or ``/sentiment off|on``."""
    arg = cmd.args.strip()
    if arg.lower() in ("off", "on"):
        await _set_scoring(ctx, cmd, enabled=arg.lower() == "on")
        return
    if not arg:
        raise Refuse(ctx.t("usage_sentiment_text_or"))
    await ctx.reply(describe(ctx, analyzer().score(arg, cmd.user.language_code)))


@service.command("mood")
async def mood(ctx: Context[Instance], cmd: InboundCommand) -> None:
    """The chat's (or, with ``me``, the user's) mood chart and summary."""
    words = [w.lower() for w in cmd.argv]
    mine = "me" in words
    periods = [w for w in words if w != "me"]
    if len(periods) > 1 or (periods and periods[0] not in PERIODS):
        raise Refuse(ctx.t("usage_mood_day_week"))
    period: Period = "day"
    for candidate in PERIODS:
        if periods and periods[0] == candidate:
            period = candidate
    store = ctx.state.store
    if mine and cmd.chat.is_group:
        # This group only: what the user wrote elsewhere is not the group's business.
        doc = await store.load("member", member_entity(cmd.chat.id, cmd.user.id))
        subject = cmd.user.display_name
    elif mine:
        doc = await store.load("user", cmd.user.id)
        doc.merge(await store.load("member", member_entity("*", cmd.user.id)))
        subject = cmd.user.display_name
    else:
        doc = await store.load("chat", cmd.chat.id)
        subject = cmd.chat.title or ctx.t("this_chat")
    points = doc.series(period, datetime.now(UTC))
    if total_of(points).n == 0:
        # An empty chart says less than a sentence.
        await ctx.reply(no_mood_yet(ctx, period, mine=mine))
        return
    await ctx.chat_action("upload_photo")
    # Drawing takes a good part of a second of CPU: off the event loop, so the
    # instance keeps answering discovery ($SRV.PING) and its other messages.
    png = await asyncio.to_thread(render_chart, points, period, subject, ctx.t)
    await ctx.send_photo(png, caption=summary_line(points, period, subject, ctx.t))


def member_entity(chat: int | str, user: int) -> str:
    """The entity of a user's documents in one group (``*`` as chat: in every group)."""
    return f"{chat}.{user}"


def no_mood_yet(ctx: Context, period: Period, *, mine: bool) -> str:
    """The answer to a /mood with nothing scored in ``period``."""
    when = period_name(period, ctx.t)
    if mine:
        return ctx.t("none_of_your_messages", when=when)
    return ctx.t("no_message_in_this", when=when)


# -- passive scoring --------------------------------------------------------------


@service.on_message
async def score_message(ctx: Context[Instance], msg: InboundMessage) -> None:
    """Count every plain message of chats that did not opt out (never its text)."""
    if msg.edited or msg.user.is_bot or not msg.text.strip():
        return
    if await ctx.state.optouts.is_opted_out(msg.chat.id):
        return
    score = analyzer().score(msg.text, msg.user.language_code)
    at, message_id = msg.date, msg.correlation_id
    instance = ctx.state
    store = instance.store
    person: tuple[Kind, Entity] = (
        ("member", member_entity(msg.chat.id, msg.user.id))
        if msg.chat.is_group
        else ("user", msg.user.id)
    )
    targets: list[tuple[Kind, Entity]] = [("chat", msg.chat.id), person]
    if ctx.deliveries > 1:
        # Delivered again: an earlier attempt (here or on another instance) may have
        # counted it in one document or in both before failing. Rare, so read them all.
        docs = await asyncio.gather(*(store.load(kind, entity) for kind, entity in targets))
        done = [doc.has_counted(message_id) for doc in docs]
        targets = [t for t, counted in zip(targets, done, strict=True) if not counted]
        ctx.log.info("delivery %d: still to count in %s", ctx.deliveries, targets or "nothing")

    def count(doc: MoodDoc) -> None:
        doc.add(score.compound, score.label, at, message_id)

    # Each in this instance's own documents, batched with the other changes of the same
    # document handled right now; the message is acked only after both writes are stored.
    counted = await asyncio.gather(*(store.count(kind, entity, count) for kind, entity in targets))
    if msg.chat.is_group and targets and targets[0][0] == "chat":
        await _maybe_alert(ctx, instance, msg, counted[0])


async def _maybe_alert(ctx: Context, instance: Instance, msg: InboundMessage, own: MoodDoc) -> None:
    """Alert the admins if the chat's mood, over every instance's document, is low.

    Costs no KV read in the common case. The chat's mood is the merge of each
    instance's share; a merged mean below the threshold needs some share
    below it, so an instance whose own share is fine only looks at the other
    shares it read recently (at most ``ALERT_REFRESH`` seconds ago), and reads
    them afresh only when its own share is low. An instance whose share is low
    thus raises the alert on its next message of the chat.
    """
    now = datetime.now(UTC)
    chat = msg.chat.id
    last = instance.last_alerts.get(chat)
    if last is not None and now - last < ALERT_POLICY.cooldown:
        return  # alerted recently (known here): no need to look at the mood
    store = instance.store
    hours = ALERT_POLICY.window_hours
    mine = own.window(now, hours)
    others = store.cached_others(chat, ALERT_REFRESH)
    if others is None:
        if mine.mean is None or mine.mean >= ALERT_POLICY.threshold:
            return
        others = await store.others(chat, ALERT_REFRESH)
    window = others.window(now, hours)
    window.merge(mine)
    if ALERT_POLICY.due(window, now, None) is None:
        return  # the mood is fine: no need to read when the last alert was sent
    kv = await ctx.kv()
    key = f"alert.{chat}"
    raw, revision = await _read(kv, key)
    last = datetime.fromisoformat(raw.decode()) if raw else None
    if last is not None:
        instance.last_alerts[chat] = last
    if ALERT_POLICY.due(window, now, last) is None or window.mean is None:
        return
    # Claim the alert with compare-and-set so two instances do not both send it.
    try:
        if revision is None:
            await kv.create(key, now.isoformat().encode())
        else:
            await kv.update(key, now.isoformat().encode(), last=revision)
    except KeyWrongLastSequenceError:
        return  # another instance claimed it: it sends the alert
    instance.last_alerts[chat] = now
    title = msg.chat.title or str(msg.chat.id)
    text = (
        f"Mood alert: the mood of '{title}' dropped to {window.mean:+.2f} over the last "
        f"{ALERT_POLICY.window_hours} h ({window.n} messages, {window.neg} negative). "
        f"/ Alerta de ánimo: el ánimo de '{title}' bajó a {window.mean:+.2f}."
    )
    stamp = now.strftime("%Y%m%d%H%M")
    admins = ctx.settings.admin_ids
    for admin in admins:
        await ctx.send(admin, text, key=f"sentiment:alert:{msg.chat.id}:{admin}:{stamp}")
    if not admins:
        alert = Alert(
            title=f"Mood alert: {title}",
            text=text,
            severity="warning",
            dedupe_key=f"sentiment:{msg.chat.id}:{stamp}",
        )
        try:
            await ctx.js.publish(ALERT_SUBJECT, encode(alert))
        except (NoRespondersError, NoStreamResponseError):
            # nats-py reports a subject no stream takes as NoStreamResponseError; without
            # the alerts service the message is still counted and acked, not retried.
            ctx.log.warning(
                "mood alert for chat %s not published: no stream takes %s "
                "(is the alerts service installed?)",
                msg.chat.id,
                ALERT_SUBJECT,
            )
    ctx.log.info("mood alert for chat %s (mean %.2f over %d)", msg.chat.id, window.mean, window.n)


# -- forgetting -------------------------------------------------------------------


@service.on_forget
async def forget(ctx: Context[Instance], ev: ForgetUser) -> None:
    """Delete the user's mood documents, every instance's (chat documents hold no per-user data)."""
    store = ctx.state.store
    purged = await store.forget("user", ev.user_id)
    purged += await store.forget("member", member_entity("*", ev.user_id))
    ctx.log.info("forgot the mood aggregates of user %s (%s)", ev.user_id, ", ".join(purged))
