"""alerts — channels people subscribe to, fed by NATS, HTTP and MQTT; and reminders.

Users: /channels, /subscribe NAME, /unsubscribe NAME, /mysubs, /remind,
/reminders, /cancel ID, /timezone. Bot admins: /newchannel, /delchannel,
/alert. In a group, /subscribe and /unsubscribe act for the whole group, so
only the group's Telegram admins (``chat_admin``, resolved by the gateway)
or the bot's admins (``is_admin``) may use them. The domain logic lives in
the sibling modules; this module maps commands and events onto it.
"""

from __future__ import annotations

import logging
import secrets
import string
import zoneinfo
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from nats.errors import Error as NatsError
from nats.js.api import DiscardPolicy

from botbus.models import Alert, DeliveryEvent, ForgetUser, InboundCommand
from botbus.service import Ack, App, Context, Grants, Refuse, Reject, Service
from botbus.subjects import is_valid_name
from services.alerts.bus import (
    ALERTS_ANY,
    REMINDER_FIRED,
    REMINDERS_ALL,
    STREAM_ALERTS,
    STREAM_REMINDERS,
    alert_channel,
)
from services.alerts.channels import check_channel_name, new_channel
from services.alerts.reminders import next_local_time, parse_reminder, resolve_timezone
from services.alerts.runtime import FEED_ACK_WAIT, AlertsRuntime
from services.alerts.schedules import FIRED_CONSUMER, STREAM_OPTIONS, ReminderRef
from services.alerts.store import Reminder
from services.alerts.texts import UserInputError

MAX_REMINDERS_PER_USER = 50
REMINDER_ID_ALPHABET = string.ascii_lowercase + string.digits
REMINDER_ID_LENGTH = 4  # after the leading "r": 36**4 ids per user

service = Service(
    name="alerts",
    version="1.0.0",
    # Texts: locales/<language>.toml beside this module (ctx.t("id")).
    locales=__package__,
    # Its subscriptions bucket svc_alerts_subs (its streams are declared below).
    grants=Grants(resources=("subs",)),
)


# The streams the service owns, created by the SDK at start-up.
_feed = service.stream(
    subjects=[ALERTS_ANY],
    description="Alerts published to channels (NATS, HTTP, MQTT)",
    max_age=24 * 3600.0,
    max_bytes=256 * 1024 * 1024,
    max_msg_size=64 * 1024,
    discard=DiscardPolicy.OLD,
    duplicate_window=120.0,
)
_reminders = service.stream("reminders", subjects=[REMINDERS_ALL], **STREAM_OPTIONS)
assert (_feed, _reminders) == (STREAM_ALERTS, STREAM_REMINDERS)


log = logging.getLogger(__name__)


@service.lifespan
async def alerts_runtime(app: App) -> AsyncIterator[AlertsRuntime]:
    """Open the state and the HTTP endpoint; close the endpoint at the end."""
    rt = await AlertsRuntime.start(app.js, app.settings, app.kv, app.dedupe_id)
    try:
        try:
            await rt.scheduler.restore(rt.store.all_reminders, datetime.now(UTC))
        except NatsError as exc:  # the reminders already armed still fire
            log.error("could not check the reminder schedules (%s); will at the next start", exc)
        yield rt
    finally:
        await rt.stop()


# Every alert accepted from NATS, HTTP or MQTT is validated, deduplicated and
# fanned out once: a crash mid-way means redelivery and a resumed broadcast,
# never a lost or doubled one. One at a time per instance, from the stream's start.
@service.consume(
    stream=STREAM_ALERTS,
    subject=ALERTS_ANY,
    model=Alert,
    durable="alerts_feed",
    ack_wait=FEED_ACK_WAIT,
    max_batch=1,
)
async def alert_published(ctx: Context[AlertsRuntime], alert: Alert) -> Ack | Reject:
    """Fan out one alert of ``alerts.<channel>``."""
    channel = ctx.subject.split(".", 1)[1]
    return await ctx.state.handle_alert(channel, ctx.sequence, alert)


@service.consume(
    stream=STREAM_REMINDERS, subject=REMINDER_FIRED, model=ReminderRef, durable=FIRED_CONSUMER
)
async def reminder_fired(ctx: Context[AlertsRuntime], ref: ReminderRef) -> None:
    """Send one reminder nats-server fired to its chat."""
    store = ctx.state.store
    reminder = await store.get_reminder(ref.user_id, ref.id)
    if reminder is None:
        ctx.log.info("reminder %s of user %s was cancelled; skipped", ref.id, ref.user_id)
        return
    # In the language the reminder was set in, whoever reads the chat now.
    texts = service.catalog
    assert texts is not None  # declared with locales=
    text = texts.text(reminder.language, "reminder_fired", text=reminder.text)
    # One key per firing: a daily reminder fires under a new sequence each day.
    key = f"remind:{reminder.user_id}:{reminder.id}:{ctx.sequence}"
    await ctx.send(
        reminder.chat_id,
        text,
        priority="interactive",
        key=key,
        message_thread_id=reminder.thread_id,
    )
    if reminder.kind == "once":
        await store.delete_reminder(reminder.user_id, reminder.id)


def runtime(ctx: Context[AlertsRuntime]) -> AlertsRuntime:
    """The runtime of the instance handling ``ctx``."""
    return ctx.state


def _refuse(ctx: Context, error: UserInputError) -> Refuse:
    return Refuse(error.text.pick(ctx.language))


def _refuse_extra_words(ctx: Context, cmd: InboundCommand, usage: str, allowed: int = 1) -> None:
    """Refuse a command given more than ``allowed`` words, rather than silently drop some."""
    if len(cmd.argv) > allowed:
        extra = " ".join(cmd.argv[allowed:])
        raise Refuse(ctx.t("too_many_words", extra=extra[:64], usage=ctx.t(usage)))


def _channel_arg(ctx: Context, cmd: InboundCommand, usage: str) -> str:
    """The channel name argument; ``usage`` is the id of the command's usage text."""
    if not cmd.argv:
        raise Refuse(ctx.t(usage))
    try:
        return check_channel_name(cmd.argv[0])
    except UserInputError as exc:
        raise _refuse(ctx, exc) from exc


def _may_manage_chat(ctx: Context, cmd: InboundCommand) -> None:
    # A group's subscriptions reach every member, so they are the group admins'
    # decision; bot admins may step in (e.g. for a group whose admins left).
    if cmd.chat.is_group and not (cmd.chat_admin or cmd.is_admin):
        raise Refuse(ctx.t("in_a_group_only"))


# -- channels -------------------------------------------------------------------------


@service.command("channels")
async def channels(ctx: Context, cmd: InboundCommand) -> None:
    """Every channel with its description and subscriber count."""
    store = runtime(ctx).store
    records = await store.list_channels()
    if not records:
        await ctx.reply(ctx.t("there_are_no_channels"))
        return
    lines = [ctx.t("alert_channels")]
    for record in records:
        count = await store.subscriber_count(record.name)
        subs = ctx.t("count_subscribers", count=count)
        lines.append(f"• {record.name} — {record.description} ({subs})")
    lines.append(ctx.t("join_one_with_subscribe"))
    await ctx.reply("\n".join(lines))


@service.command("subscribe")
async def subscribe(ctx: Context, cmd: InboundCommand) -> None:
    """Subscribe this chat to a channel."""
    _refuse_extra_words(ctx, cmd, "usage_subscribe")
    name = _channel_arg(ctx, cmd, "usage_subscribe")
    _may_manage_chat(ctx, cmd)
    store = runtime(ctx).store
    if await store.get_channel(name) is None:
        raise Refuse(ctx.t("there_is_no_channel", name=name))
    if await store.subscribe(name, cmd.chat.id, cmd.language, cmd.message_thread_id):
        await ctx.reply(ctx.t("subscribed_to_name_stop", name=name))
    else:
        await ctx.reply(ctx.t("already_subscribed_to_name", name=name))


@service.command("unsubscribe")
async def unsubscribe(ctx: Context, cmd: InboundCommand) -> None:
    """Unsubscribe this chat from a channel."""
    _refuse_extra_words(ctx, cmd, "usage_unsubscribe")
    name = _channel_arg(ctx, cmd, "usage_unsubscribe")
    _may_manage_chat(ctx, cmd)
    if await runtime(ctx).store.unsubscribe(name, cmd.chat.id):
        await ctx.reply(ctx.t("unsubscribed_from_name", name=name))
    else:
        await ctx.reply(ctx.t("you_were_not_subscribed", name=name))


@service.command("mysubs")
async def mysubs(ctx: Context, cmd: InboundCommand) -> None:
    """The channels this chat is subscribed to."""
    names = await runtime(ctx).store.chat_channels(cmd.chat.id)
    if not names:
        await ctx.reply(ctx.t("no_subscriptions_see_channels"))
        return
    await ctx.reply(ctx.t("subscribed_to") + ", ".join(names))


@service.command("newchannel", admin_only=True)
async def newchannel(ctx: Context, cmd: InboundCommand) -> None:
    """Create a channel and show its publishing token once."""
    if cmd.chat.is_group:
        raise Refuse(ctx.t("create_channels_in_a"))
    name = _channel_arg(ctx, cmd, "usage_newchannel")
    description = cmd.args.strip()[len(cmd.argv[0]) :]
    try:
        record, token = new_channel(name, description, created_by=cmd.user.id)
    except UserInputError as exc:
        raise _refuse(ctx, exc) from exc
    rt = runtime(ctx)
    if not await rt.store.create_channel(record):
        raise Refuse(ctx.t("channel_name_already_exists", name=name))
    url = f"{rt.http.url}/alerts/{name}" if rt.http.url else f"/alerts/{name}"
    await ctx.reply(
        ctx.t(
            "channel_name_created_publish",
            name=name,
            url=url,
            token=token,
            alert_channel=alert_channel(name),
        )
    )


@service.command("delchannel", admin_only=True)
async def delchannel(ctx: Context, cmd: InboundCommand) -> None:
    """Delete a channel and its subscriptions."""
    _refuse_extra_words(ctx, cmd, "usage_delchannel")
    name = _channel_arg(ctx, cmd, "usage_delchannel")
    if not await runtime(ctx).store.delete_channel(name):
        raise Refuse(ctx.t("no_such_channel", name=name))
    await ctx.reply(ctx.t("channel_name_and_its", name=name))


@service.command("alert", admin_only=True)
async def alert(ctx: Context, cmd: InboundCommand) -> None:
    """Post an alert from Telegram; it goes through the same durable pipeline."""
    name = _channel_arg(ctx, cmd, "usage_alert")
    text = cmd.args.strip()[len(cmd.argv[0]) :].strip()
    if not text:
        raise Refuse(ctx.t("usage_alert"))
    rt = runtime(ctx)
    if await rt.store.get_channel(name) is None:
        raise Refuse(ctx.t("no_such_channel", name=name))
    title, _, rest = text.partition("\n")
    posted = Alert(title=title[:256], text=(title[256:] + rest)[:3000])
    published = await rt.publish_alert(name, posted)
    count = await rt.store.subscriber_count(name)
    await ctx.reply(
        ctx.t("alert_alert_id_queued", alert_id=published.alert_id, count=count, name=name)
    )


# -- reminders --------------------------------------------------------------------------


def _when(reminder: Reminder, zone: str | None = None) -> str:
    """When ``reminder`` fires, in ``zone`` (the user's current one; default: its own)."""
    zone = zone or reminder.timezone
    if reminder.kind == "daily":
        # It fires at that wall-clock time of the zone it was set in, whatever the user's now.
        own = f"{reminder.hour:02d}:{reminder.minute:02d} ({reminder.timezone})"
        if zone == reminder.timezone:
            return own
        local = _next_due(reminder, datetime.now(UTC)).astimezone(zoneinfo.ZoneInfo(zone))
        return f"{own} = {local:%H:%M} ({zone})"
    local = reminder.due.astimezone(zoneinfo.ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M} ({zone})"


def _next_due(reminder: Reminder, now: datetime) -> datetime:
    """The next instant ``reminder`` fires (a past one-off: when it was due)."""
    if reminder.kind == "daily":
        return next_local_time(now, reminder.timezone, reminder.hour, reminder.minute)
    return reminder.due


@service.command("remind")
async def remind(ctx: Context, cmd: InboundCommand) -> None:
    """Set a reminder, fired by nats-server's message schedules."""
    rt = runtime(ctx)
    zone = await rt.store.get_timezone(cmd.user.id)
    try:
        spec = parse_reminder(cmd.args, timezone=zone, now=datetime.now(UTC))
    except UserInputError as exc:
        raise _refuse(ctx, exc) from exc
    if len(await rt.store.user_reminders(cmd.user.id)) >= MAX_REMINDERS_PER_USER:
        raise Refuse(ctx.t("you_have_max_reminders", max_reminders_per_user=MAX_REMINDERS_PER_USER))
    while True:
        rid = "r" + "".join(secrets.choice(REMINDER_ID_ALPHABET) for _ in range(REMINDER_ID_LENGTH))
        reminder = Reminder(
            id=rid,
            user_id=cmd.user.id,
            chat_id=cmd.chat.id,
            kind=spec.kind,
            text=spec.text,
            timezone=spec.timezone,
            due=spec.due,
            hour=spec.hour,
            minute=spec.minute,
            language=cmd.language,
            thread_id=cmd.message_thread_id,
        )
        if await rt.store.create_reminder(reminder):
            break
    try:
        await rt.scheduler.arm(cmd.user.id, rid, spec)
    except Exception:
        await rt.store.delete_reminder(cmd.user.id, rid)
        raise
    when = _when(reminder)
    if spec.kind == "daily":
        await ctx.reply(ctx.t("reminder_rid_set_every", rid=rid, when=when))
    else:
        await ctx.reply(ctx.t("reminder_rid_set_for", rid=rid, when=when))


@service.command("reminders")
async def reminders(ctx: Context, cmd: InboundCommand) -> None:
    """List the user's reminders, soonest first, in the user's time zone."""
    store = runtime(ctx).store
    mine = await store.user_reminders(cmd.user.id)
    if not mine:
        await ctx.reply(ctx.t("you_have_no_reminders"))
        return
    zone = await store.get_timezone(cmd.user.id)
    now = datetime.now(UTC)
    lines = [ctx.t("your_reminders")]
    for r in sorted(mine, key=lambda r: (_next_due(r, now), r.id)):
        every = ctx.t("every_day") if r.kind == "daily" else ""
        lines.append(f"{r.id}: {every}{_when(r, zone)} — {r.text}")
    await ctx.reply("\n".join(lines))


@service.command("cancel")
async def cancel(ctx: Context, cmd: InboundCommand) -> None:
    """Cancel one of the user's reminders."""
    if not cmd.argv:
        raise Refuse(ctx.t("usage_cancel_id_see"))
    _refuse_extra_words(ctx, cmd, "usage_cancel_id_see")
    rid = cmd.argv[0].lower()
    rt = runtime(ctx)
    if not is_valid_name(rid) or await rt.store.get_reminder(cmd.user.id, rid) is None:
        shown = cmd.argv[0][:32]
        raise Refuse(ctx.t("you_have_no_reminder", shown=shown))
    await rt.scheduler.cancel(cmd.user.id, rid)
    await rt.store.delete_reminder(cmd.user.id, rid)
    await ctx.reply(ctx.t("reminder_rid_cancelled", rid=rid))


@service.command("timezone")
async def timezone(ctx: Context, cmd: InboundCommand) -> None:
    """``/timezone`` shows the user's zone; ``/timezone Europe/Madrid`` sets it."""
    _refuse_extra_words(ctx, cmd, "usage_timezone")
    store = runtime(ctx).store
    if not cmd.argv:
        zone = await store.get_timezone(cmd.user.id)
        await ctx.reply(ctx.t("your_time_zone_is", zone=zone))
        return
    try:
        zone = resolve_timezone(cmd.argv[0])
    except UserInputError as exc:
        raise _refuse(ctx, exc) from exc
    await store.set_timezone(cmd.user.id, zone)
    local = datetime.now(UTC).astimezone(zoneinfo.ZoneInfo(zone))
    await ctx.reply(ctx.t("time_zone_set_to", zone=zone, local=local))


# -- events -------------------------------------------------------------------------------


def _chat_is_gone(ev: DeliveryEvent) -> bool:
    if ev.status != "refused":
        return False
    description = ev.description.lower()
    return ev.error_code == 403 or "chat not found" in description or "deactivated" in description


@service.on_delivery
async def refused(ctx: Context, ev: DeliveryEvent) -> None:
    """A chat that blocked the bot (or vanished) loses its subscriptions and reminders."""
    if not _chat_is_gone(ev):
        ctx.log.info(
            "permanent refusal for chat %s kept its subscriptions: %s", ev.chat_id, ev.description
        )
        return
    rt = runtime(ctx)
    dropped = await rt.store.unsubscribe_chat(ev.chat_id)
    for reminder in await rt.store.all_reminders():
        if reminder.chat_id == ev.chat_id:
            await rt.scheduler.cancel(reminder.user_id, reminder.id)
            await rt.store.delete_reminder(reminder.user_id, reminder.id)
    ctx.log.info(
        "chat %s is gone (%s): unsubscribed from %s",
        ev.chat_id,
        ev.description,
        ", ".join(dropped) or "nothing",
    )


@service.on_forget
async def forget(ctx: Context, ev: ForgetUser) -> None:
    """Delete the user's private-chat subscriptions, reminders and time zone."""
    rt = runtime(ctx)
    await rt.store.unsubscribe_chat(ev.user_id)  # a private chat's id is the user's id
    await rt.scheduler.cancel_all(ev.user_id)
    for reminder in await rt.store.user_reminders(ev.user_id):
        await rt.store.delete_reminder(ev.user_id, reminder.id)
    await rt.store.forget_user(ev.user_id)
    ctx.log.info("forgot user %s", ev.user_id)
