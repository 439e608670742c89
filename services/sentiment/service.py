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

KV keys: ``chat.<chat_id>`` / ``user.<user_id>`` (mood documents),
``optout.<chat_id>`` (present = opted out), ``alert.<chat_id>`` (time of the
last mood alert). Each instance keeps the opt-out flags in memory, followed
with a KV watch (:class:`OptOutCache`), so a message costs no flag read.
Concurrent instances update with compare-and-set; within
one instance, the updates of one key are coalesced (:mod:`.batching`), so a
busy chat costs one write per round trip rather than one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, partial
from weakref import WeakKeyDictionary

from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from botbus import subjects
from botbus.errors import ServiceError
from botbus.models import Alert, ForgetUser, InboundCommand, InboundMessage, encode
from botbus.service import Context, Service, ServiceApp
from services.sentiment.aggregate import PERIODS, AlertPolicy, MoodDoc, MoodDocError, Period
from services.sentiment.batching import KeyBatcher
from services.sentiment.chart import render_chart, summary_line
from services.sentiment.scoring import Score, SentimentAnalyzer

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 60  # compare-and-set retries before giving up on a contended key
CAS_BACKOFF = 0.002  # seconds: first jittered pause after losing a compare-and-set race
CAS_BACKOFF_MAX = 0.05  # seconds: longest pause between two attempts
OPTOUT_TTL = 1.0  # seconds a cached opt-out flag is trusted if the KV watch falls silent
ALERT_CHANNEL = "mood"  # alerts channel used when no bot admin is configured
ALERT_POLICY = AlertPolicy()

service = Service(
    name="sentiment",
    version="1.0.0",
    description={
        "en": "How the conversation feels: message sentiment and mood charts",
        "es": "Cómo se siente la conversación: sentimiento y gráficos de ánimo",
    },
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


async def update_doc(kv: KeyValue, key: str, change: Callable[[MoodDoc], None]) -> MoodDoc:
    """Apply ``change`` to the document at ``key`` with compare-and-set, retrying on races.

    A lost race is retried after a short random pause: two instances writing
    the same busy key in lock-step would otherwise keep colliding. Giving up
    is costly (the message is retried whole, and its other document was
    already counted), so the budget is generous: about a second of losing.
    """
    for attempt in range(CAS_ATTEMPTS):
        raw, revision = await _read(kv, key)
        try:
            doc = MoodDoc.from_json(raw)
        except MoodDocError:
            log.warning("mood document %s is unreadable; starting it afresh", key)
            doc = MoodDoc()
        change(doc)
        try:
            if revision is None:
                await kv.create(key, doc.to_json())
            else:
                await kv.update(key, doc.to_json(), last=revision)
            return doc
        except KeyWrongLastSequenceError:
            # Another instance wrote first: re-read and apply again at once; if it
            # keeps happening, the two writers are in step: pause a random while.
            if attempt:
                pause = min(CAS_BACKOFF_MAX, CAS_BACKOFF * 2 ** min(attempt - 1, 5))
                await asyncio.sleep(random.uniform(0, pause))  # jitter, not a secret
    raise RuntimeError(
        f"KV key {key} is too contended: gave up after {CAS_ATTEMPTS} attempts; "
        "the message will be retried (run fewer instances if this repeats)"
    )


# One batcher per running instance: its handlers' updates of one key share a write.
_batchers: WeakKeyDictionary[ServiceApp, KeyBatcher[MoodDoc]] = WeakKeyDictionary()


async def doc_batcher(ctx: Context) -> KeyBatcher[MoodDoc]:
    """The instance's mood-document writer, coalescing updates of one key (see batching)."""
    batcher = _batchers.get(ctx.app)
    if batcher is None:
        kv = await ctx.kv()
        batcher = _batchers.setdefault(ctx.app, KeyBatcher(partial(update_doc, kv)))
    return batcher


async def load_doc(kv: KeyValue, key: str) -> MoodDoc:
    """The document at ``key`` (empty if absent or unreadable)."""
    raw, _ = await _read(kv, key)
    try:
        return MoodDoc.from_json(raw)
    except MoodDocError:
        log.warning("mood document %s is unreadable; showing it as empty", key)
        return MoodDoc()


class OptOutCache:
    """Which chats opted out, kept in memory and followed with a KV watch.

    Every plain message needs this flag, so reading ``optout.<chat_id>`` per
    message would cost a round trip each. Instead a watch on ``optout.>``
    pushes every change to every instance as soon as the ``/sentiment off``
    write is stored; the reply is sent only after that write, and a later
    message must go round through Telegram and the gateway, so in practice
    it is filtered on every instance. The guaranteed bound, if the watch
    falls behind or dies (a broker restart): a flag is re-read from KV once
    it is older than ``ttl`` seconds, so an opt-out takes effect on every
    instance at most ``ttl`` after it was stored. The instance that handled
    the command knows at once.
    """

    def __init__(
        self, kv: KeyValue, ttl: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kv = kv
        self._ttl = OPTOUT_TTL if ttl is None else ttl
        self._clock = clock
        self._flags: dict[int, tuple[bool, float]] = {}  # chat -> (opted out, known since)
        self._watched = 0  # watch updates seen so far: orders them against reads
        self._changed: dict[int, int] = {}  # chat -> value of _watched at its last update
        self._watcher: KeyValue.KeyWatcher | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start following ``optout.>`` (the current flags arrive first)."""
        self._watcher = await self._kv.watch("optout.>")
        self._follower = asyncio.create_task(self._follow(self._watcher), name="optout-watch")

    async def stop(self) -> None:
        """Stop following the flags."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._watcher is not None:
            with contextlib.suppress(NatsError):
                await self._watcher.stop()  # type: ignore[no-untyped-call]  # nats-py: untyped

    def note(self, chat_id: int, opted_out: bool) -> None:
        """Record a flag known right now (written here, or pushed by the watch)."""
        self._flags[chat_id] = (opted_out, self._clock())

    async def is_opted_out(self, chat_id: int) -> bool:
        """True if the chat switched passive scoring off."""
        known = self._flags.get(chat_id)
        if known is not None and self._clock() - known[1] < self._ttl:
            return known[0]
        before = self._watched
        raw, _ = await _read(self._kv, f"optout.{chat_id}")
        if self._changed.get(chat_id, 0) > before:
            # The watch brought a change while we read: it is at least as new.
            return self._flags[chat_id][0]
        self.note(chat_id, raw is not None)
        return raw is not None

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
            try:
                chat_id = int(entry.key.removeprefix("optout."))
            except ValueError:
                log.warning("ignoring KV key %s: not optout.<chat_id>", entry.key)
                continue
            self._watched += 1
            self._changed[chat_id] = self._watched
            self.note(chat_id, entry.operation is None and bool(entry.value))
        log.warning("the opt-out watch ended; flags are re-read every %ss", self._ttl)


# One flag cache per running instance, started on first use.
_optouts: WeakKeyDictionary[ServiceApp, OptOutCache] = WeakKeyDictionary()


async def optouts(app: ServiceApp) -> OptOutCache:
    """The running instance's opt-out flags (see :class:`OptOutCache`)."""
    cache = _optouts.get(app)
    if cache is None:
        kv = await app.kv()
        cache = _optouts.get(app)
        if cache is None:
            cache = _optouts[app] = OptOutCache(kv)
            # Handlers arriving meanwhile find no flag and read KV: still correct.
            await cache.start()
    return cache


@service.on_shutdown
async def _stop_optouts(app: ServiceApp) -> None:
    cache = _optouts.pop(app, None)
    if cache is not None:
        await cache.stop()


# -- commands -------------------------------------------------------------------


def describe(ctx: Context, score: Score) -> str:
    """The reply to ``/sentiment TEXT``."""
    label = {
        "positive": ctx.t(en="positive", es="positivo"),
        "neutral": ctx.t(en="neutral", es="neutral"),
        "negative": ctx.t(en="negative", es="negativo"),
    }[score.label]
    lines = [
        ctx.t(
            en=f"Sentiment: {label} (compound {score.compound:+.2f}, language {score.language})",
            es=f"Sentimiento: {label} (compuesto {score.compound:+.2f}, idioma {score.language})",
        )
    ]
    if score.drivers:
        words = ", ".join(f"{d.word} ({d.valence:+.1f})" for d in score.drivers)
        lines.append(ctx.t(en=f"Driven by: {words}", es=f"Palabras clave: {words}"))
    else:
        lines.append(
            ctx.t(en="No word carried sentiment.", es="Ninguna palabra expresa sentimiento.")
        )
    return "\n".join(lines)


async def _set_scoring(ctx: Context, cmd: InboundCommand, enabled: bool) -> None:
    if cmd.chat.is_group and not (cmd.chat_admin or cmd.is_admin):
        raise ServiceError(
            ctx.t(
                en="Only a group admin can switch sentiment scoring on or off in this group.",
                es="Solo un administrador del grupo puede activar o desactivar el análisis "
                "en este grupo.",
            ),
            code="forbidden",
        )
    kv = await ctx.kv()
    key = f"optout.{cmd.chat.id}"
    cache = await optouts(ctx.app)
    if enabled:
        await kv.delete(key)
        cache.note(cmd.chat.id, False)
        await ctx.reply(
            ctx.t(
                en="Sentiment scoring is ON for this chat.",
                es="El análisis de sentimiento está ACTIVADO en este chat.",
            )
        )
    else:
        await kv.put(key, datetime.now(UTC).isoformat().encode())
        cache.note(cmd.chat.id, True)
        await ctx.reply(
            ctx.t(
                en="Sentiment scoring is OFF for this chat: messages are no longer scored.",
                es="El análisis de sentimiento está DESACTIVADO en este chat: ya no se "
                "puntúan los mensajes.",
            )
        )


@service.command(
    "sentiment",
    en="Score TEXT; /sentiment off|on opts this chat out/in",
    es="Puntúa TEXTO; /sentiment off|on desactiva/activa este chat",
)
async def sentiment(ctx: Context, cmd: InboundCommand) -> None:
    """``/sentiment TEXT`` or ``/sentiment off|on``."""
    arg = cmd.args.strip()
    if arg.lower() in ("off", "on"):
        await _set_scoring(ctx, cmd, enabled=arg.lower() == "on")
        return
    if not arg:
        raise ServiceError(
            ctx.t(
                en="Usage: /sentiment TEXT — or /sentiment off|on for this chat",
                es="Uso: /sentiment TEXTO — o /sentiment off|on para este chat",
            )
        )
    await ctx.reply(describe(ctx, analyzer().score(arg, cmd.user.language_code)))


@service.command(
    "mood",
    en="Mood chart: /mood [day|week|month] or /mood me",
    es="Gráfico de ánimo: /mood [day|week|month] o /mood me",
)
async def mood(ctx: Context, cmd: InboundCommand) -> None:
    """The chat's (or, with ``me``, the user's) mood chart and summary."""
    words = [w.lower() for w in cmd.argv]
    mine = "me" in words
    periods = [w for w in words if w != "me"]
    if len(periods) > 1 or (periods and periods[0] not in PERIODS):
        raise ServiceError(
            ctx.t(
                en="Usage: /mood [day|week|month] [me]",
                es="Uso: /mood [day|week|month] [me]",
            )
        )
    period: Period = "day"
    for candidate in PERIODS:
        if periods and periods[0] == candidate:
            period = candidate
    kv = await ctx.kv()
    if mine:
        doc = await load_doc(kv, f"user.{cmd.user.id}")
        subject = cmd.user.display_name
    else:
        doc = await load_doc(kv, f"chat.{cmd.chat.id}")
        subject = cmd.chat.title or ctx.t(en="this chat", es="este chat")
    points = doc.series(period, datetime.now(UTC))
    await ctx.chat_action("upload_photo")
    png = render_chart(points, period, subject, ctx.t)
    await ctx.send_photo(png, caption=summary_line(points, period, subject, ctx.t))


# -- passive scoring --------------------------------------------------------------


@service.on_message
async def score_message(ctx: Context, msg: InboundMessage) -> None:
    """Count every plain message of chats that did not opt out (never its text)."""
    if msg.edited or msg.user.is_bot or not msg.text.strip():
        return
    if await (await optouts(ctx.app)).is_opted_out(msg.chat.id):
        return
    score = analyzer().score(msg.text, msg.user.language_code)
    at = msg.date

    def count(doc: MoodDoc) -> None:
        doc.add(score.compound, score.label, at)

    # Batched with the other messages of the same chat (and user) handled right now;
    # the message is acked only after both writes are stored.
    batcher = await doc_batcher(ctx)
    chat_doc, _ = await asyncio.gather(
        batcher.apply(f"chat.{msg.chat.id}", count), batcher.apply(f"user.{msg.user.id}", count)
    )
    if msg.chat.is_group:
        await _maybe_alert(ctx, await ctx.kv(), msg, chat_doc)


async def _maybe_alert(ctx: Context, kv: KeyValue, msg: InboundMessage, doc: MoodDoc) -> None:
    now = datetime.now(UTC)
    if ALERT_POLICY.check(doc, now, None) is None:
        return  # the mood is fine: no need to read when the last alert was sent
    key = f"alert.{msg.chat.id}"
    raw, revision = await _read(kv, key)
    last = datetime.fromisoformat(raw.decode()) if raw else None
    window = ALERT_POLICY.check(doc, now, last)
    if window is None or window.mean is None:
        return
    # Claim the alert with compare-and-set so two instances do not both send it.
    try:
        if revision is None:
            await kv.create(key, now.isoformat().encode())
        else:
            await kv.update(key, now.isoformat().encode(), last=revision)
    except KeyWrongLastSequenceError:
        return
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
        await ctx.js.publish(subjects.alert_channel(ALERT_CHANNEL), encode(alert))
    ctx.log.info("mood alert for chat %s (mean %.2f over %d)", msg.chat.id, window.mean, window.n)


# -- forgetting -------------------------------------------------------------------


@service.on_forget
async def forget(ctx: Context, ev: ForgetUser) -> None:
    """Delete the user's own mood document (chat documents hold no per-user data)."""
    kv = await ctx.kv()
    await kv.purge(f"user.{ev.user_id}")
    ctx.log.info("forgot the mood aggregates of user %s", ev.user_id)
