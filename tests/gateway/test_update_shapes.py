"""Real Telegram update shapes: forum topics, anonymous admins, other bots' commands,
inline-mode buttons, edited and service messages, channel posts, future update kinds.

Users write through the sandbox and read what the bot answered there; shapes the
sandbox cannot produce (Telegram sends them only to bots that ask for them) are fed
to the gateway's ingest as raw JSON, as polling and the webhook hand them over.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from botbus.gateway import Gateway
from botbus.models import InboundCommand, InboundMessage
from botbus.sandbox import SandboxBot, SandboxClient

from .conftest import Inbox, MiniService, wait_until_live

FORUM = -1007700
GROUP = -1007800
OWNER, MEMBER, BOT_ADMIN = 71, 72, 42
_update_ids = itertools.count(50_000)


class Room:
    """One chat as its users see it: the bot's events, read in order."""

    def __init__(self, user: SandboxClient, bot: SandboxBot, chat_id: int) -> None:
        self.user, self.bot, self.chat_id = user, bot, chat_id
        self.seen = 0

    async def write(self, text: str, **kw: Any) -> dict[str, Any]:
        """A user writes ``text`` here."""
        group = self.chat_id if self.chat_id < 0 else None
        return await self.user.send_text(self.bot.id, text, chat_id=group, **kw)

    async def next(self, kind: str = "message") -> dict[str, Any]:
        """The bot's next event of ``kind`` here."""
        [event] = await self.user.wait_for(
            self.bot.id, self.chat_id, kind=kind, after=self.seen, timeout=10
        )
        self.seen = event["seq"]
        return event

    async def answer(self, text: str, **kw: Any) -> dict[str, Any]:
        """Write ``text`` and return the message the bot sent next."""
        await self.write(text, **kw)
        message: dict[str, Any] = (await self.next())["message"]
        return message


@pytest.fixture
async def forum(user: SandboxClient, bot: SandboxBot) -> Room:
    """A forum supergroup (topics) owned by OWNER, with MEMBER."""
    await user.create_group(bot.id, FORUM, "Forum", admins=[OWNER], members=[MEMBER], forum=True)
    return Room(user, bot, FORUM)


@pytest.fixture
async def group(user: SandboxClient, bot: SandboxBot) -> Room:
    """A plain supergroup owned by OWNER, with MEMBER and the bot admin."""
    await user.create_group(bot.id, GROUP, "Team", admins=[OWNER], members=[MEMBER, BOT_ADMIN])
    return Room(user, bot, GROUP)


# -- forum topics ------------------------------------------------------------------------


@pytest.mark.slow  # 5 s of real waiting under load
async def test_gateway_replies_go_to_the_topic_they_answer(
    gateway: Gateway, echo: MiniService, forum: Room, inbox: Inbox
) -> None:
    await wait_until_live(gateway, "echo")
    help_reply = await forum.answer("/help", user=MEMBER, thread_id=11)
    assert help_reply["message_thread_id"] == 11 and help_reply["text"].startswith("Commands:")
    start = await forum.answer("/start", user=MEMBER, thread_id=12)
    assert start["message_thread_id"] == 12 and start["text"].startswith("Hi User 72!")
    unknown = await forum.answer(f"/frobnicate@{forum.bot.username}", user=MEMBER, thread_id=13)
    assert unknown["message_thread_id"] == 13
    assert unknown["text"].startswith("Unknown command /frobnicate")
    # The services learn the topic, so their answers can go there too.
    await forum.write("/echo in a topic", user=MEMBER, thread_id=14)
    cmd = await inbox.next()
    assert cmd.message_thread_id == 14 and cmd.chat.id == FORUM
    await forum.next()  # the stand-in's echo
    await echo.stop()
    await wait_until_live(gateway, "echo", live=False)
    notice = await forum.answer("/echo anyone?", user=MEMBER, thread_id=15)
    assert notice["message_thread_id"] == 15
    assert notice["text"] == "echo is unavailable right now; I will answer when it is back."
    # General (no topic) stays General: no thread id, which Telegram would refuse there.
    general = await forum.answer("/help", user=OWNER)
    assert "message_thread_id" not in general


async def test_the_flood_notice_goes_to_the_flooders_topic(
    gateway: Gateway, forum: Room, user: SandboxClient
) -> None:
    assert gateway.router is not None
    gateway.router.flood.rate = 1e-6  # no refill while the messages arrive, however slowly
    for i in range(gateway.settings.flood_burst + 3):
        await forum.write(f"spam {i}", user=MEMBER, thread_id=21)
    notice = (await forum.next())["message"]
    assert notice["text"].startswith("You are sending messages too fast")
    assert notice["message_thread_id"] == 21


# -- groups: other bots' commands ----------------------------------------------------------


async def test_unknown_commands_in_groups_are_answered_only_when_addressed_to_us(
    gateway: Gateway, echo: MiniService, group: Room
) -> None:
    await wait_until_live(gateway, "echo")
    await group.write("/weather", user=MEMBER)  # meant for another bot in the group
    await group.write("/weather@some_other_bot Madrid", user=MEMBER)
    addressed = await group.write(f"/weather@{group.bot.username}", user=MEMBER)
    reply = (await group.next())["message"]  # the first answer is to the addressed one
    assert reply["reply_to_message"]["message_id"] == addressed["message_id"]
    assert reply["text"] == "Unknown command /weather. Send /help to see what I can do."
    # Replying to one of the bot's messages addresses the bot too.
    answering = await group.write("/weather", user=MEMBER, reply_to=reply["message_id"])
    reply = (await group.next())["message"]
    assert reply["reply_to_message"]["message_id"] == answering["message_id"]
    assert reply["text"].startswith("Unknown command /weather")
    # Known commands need no address; a private chat has only us to talk to.
    assert (await group.answer("/echo bare", user=MEMBER))["text"] == "bare"
    private = Room(group.user, group.bot, MEMBER)
    assert (await private.answer("/weather", user=MEMBER))["text"].startswith("Unknown command")


# -- admins ----------------------------------------------------------------------------------


async def test_an_anonymous_group_admin_is_an_admin_of_that_group(
    gateway: Gateway, echo: MiniService, group: Room, inbox: Inbox, user: SandboxClient
) -> None:
    await wait_until_live(gateway, "echo")
    await group.write("/echo as the group", user=OWNER, as_group=True)
    cmd = await inbox.next()
    assert cmd.chat_admin and not cmd.is_admin
    # The group wrote: not Telegram's GroupAnonymousBot, shared by every group's admins.
    assert cmd.user.id == GROUP and cmd.user.first_name == "Team" and not cmd.user.is_bot
    # Telegram vouches for it: no getChatAdministrators call was needed.
    assert (await user.stats(group.bot.id))["methods"].get("getChatAdministrators", 0) == 0
    await group.write("/echo as myself", user=MEMBER)
    assert not (await inbox.next()).chat_admin


async def test_admin_only_refusals_say_how_to_become_an_admin(
    gateway: Gateway, echo: MiniService, group: Room
) -> None:
    await wait_until_live(gateway, "echo")
    refusal = await group.answer("/secret x", user=MEMBER)
    assert refusal["text"] == (
        "/secret is for the bot's admins only. To become one, the bot's operator adds your "
        f"user id {MEMBER} to BOTBUS_ADMIN_IDS and restarts the bot."
    )
    anonymous = await group.answer("/secret x", user=OWNER, as_group=True)
    assert "writing anonymously as the group" in anonymous["text"]
    assert "Remain anonymous" in anonymous["text"]
    assert (await group.answer("/secret x", user=BOT_ADMIN))["text"] == "x"


async def test_help_marks_admin_commands_once(
    gateway: Gateway, echo: MiniService, group: Room
) -> None:
    await wait_until_live(gateway, "echo")
    lines = (await group.answer("/help", user=BOT_ADMIN))["text"].splitlines()
    assert "/secret - Admins only (admin)" in lines
    assert "/secret" not in (await group.answer("/help", user=MEMBER))["text"]


# -- buttons under inline-mode messages ------------------------------------------------------


async def test_a_stale_inline_mode_button_is_answered_in_private(
    gateway: Gateway, user: SandboxClient, bot: SandboxBot
) -> None:
    await user.press_inline(bot.id, "gone:1", user=MEMBER)
    [answer] = await user.wait_for(bot.id, MEMBER, kind="callback_answer", timeout=10)
    assert answer["text"] == "This button no longer works."
    assert answer["message_id"] is None


# -- raw shapes: never crash ingest; each handled as Telegram users expect --------------------


def _message(**fields: Any) -> dict[str, Any]:
    return {
        "message_id": next(_update_ids),
        "date": 0,
        "chat": {"id": GROUP, "type": "supergroup", "title": "Team"},
        "from": {"id": MEMBER, "is_bot": False, "first_name": "M"},
        **fields,
    }


def _update(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"update_id": next(_update_ids), kind: payload}


CHANNEL = {"id": -1009900, "type": "channel", "title": "News"}
IGNORED_SHAPES = [
    # A channel's own post, and its edit: no sender, nothing to answer.
    _update("channel_post", {"message_id": 5, "date": 0, "chat": CHANNEL, "text": "/help"}),
    _update("edited_channel_post", {"message_id": 5, "date": 0, "chat": CHANNEL, "text": "x"}),
    # Service messages: joins, pins, topic creation, title changes.
    _update("message", _message(new_chat_members=[{"id": 9, "is_bot": False, "first_name": "N"}])),
    _update("message", _message(pinned_message=_message(text="pinned"))),
    _update("message", _message(forum_topic_created={"name": "Ideas", "icon_color": 1})),
    _update("message", _message(new_chat_title="Renamed")),
    # Media without text, and kinds Telegram may add after this code was written.
    _update("message", _message(sticker={"file_id": "s", "width": 1, "height": 1})),
    _update("message_reaction", {"chat": CHANNEL, "message_id": 1, "date": 0}),
    _update("some_future_update", {"anything": [1, 2, {"x": None}]}),
]


async def test_every_real_update_shape_is_taken_without_crashing_ingest(
    gateway: Gateway, inbox: Inbox
) -> None:
    assert gateway.ingest is not None
    routed = [
        # An edited command is not run again; services see the edit as text.
        _update("edited_message", _message(text="/echo again", edit_date=1)),
        # A message with fields this code does not know yet is still routed.
        _update("message", _message(text="plain", story={"id": 1}, paid_star_count=3)),
        # Posting as a channel in a group: routed, the sender is Telegram's channel bot.
        _update(
            "message",
            _message(
                text="as a channel",
                sender_chat=CHANNEL,
                **{"from": {"id": 136817688, "is_bot": True, "first_name": "Channel"}},
            ),
        ),
    ]
    await gateway.ingest.handle([*IGNORED_SHAPES, *routed])
    edited = await inbox.next()
    assert isinstance(edited, InboundMessage) and edited.edited and edited.text == "/echo again"
    plain = await inbox.next()
    assert isinstance(plain, InboundMessage) and plain.text == "plain"
    as_channel = await inbox.next()
    assert isinstance(as_channel, InboundMessage) and not as_channel.chat_admin
    assert as_channel.user.id == CHANNEL["id"] and as_channel.user.first_name == "News"
    assert gateway.metrics.updates_malformed._value.get() == 0
    assert gateway.metrics.updates_ignored._value.get() == len(IGNORED_SHAPES)
    assert gateway.health()["tasks_running"]


async def test_edits_are_not_run_again_and_media_is_passed_over(
    gateway: Gateway, echo: MiniService, group: Room, inbox: Inbox, user: SandboxClient
) -> None:
    await wait_until_live(gateway, "echo")
    sent = await group.write("/echo one", user=MEMBER)
    assert (await inbox.next()).kind == "command"
    assert (await group.next())["message"]["text"] == "one"
    # Editing a command does not run it again; services see the edit as edited text.
    await user.edit_text(group.bot.id, GROUP, sent["message_id"], "/echo two", user=MEMBER)
    edited = await inbox.next()
    assert isinstance(edited, InboundMessage) and edited.edited and edited.text == "/echo two"
    # A sticker, a location and a photo carry no text for the services: nothing is routed.
    await user.send_sticker(group.bot.id, "👍", user=MEMBER, chat_id=GROUP)
    await user.send_location(group.bot.id, 40.4, -3.7, user=MEMBER, chat_id=GROUP)
    await group.write("/echo three", user=MEMBER)
    after = await inbox.next()
    assert isinstance(after, InboundCommand) and after.args == "three"
    assert (await group.next())["message"]["text"] == "three"  # nothing was said in between
    assert gateway.metrics.updates_malformed._value.get() == 0


async def test_a_flood_of_button_presses_is_answered_press_by_press(
    gateway: Gateway, user: SandboxClient, bot: SandboxBot
) -> None:
    assert gateway.router is not None
    gateway.router.flood.rate = 1e-6  # no refill while the presses arrive, however slowly
    flooder = 7301
    presses = gateway.settings.flood_burst + 5
    for _ in range(presses):
        await user.press_inline(bot.id, "gone:1", user=flooder)
    answers = await user.wait_for(
        bot.id, flooder, kind="callback_answer", count=presses, timeout=15
    )
    texts = [a["text"] for a in answers]
    # Within the budget the gateway says the button is gone; beyond it, one
    # "slow down", then answers without a text: no press is left spinning.
    assert texts.count("This button no longer works.") == gateway.settings.flood_burst
    assert (
        texts.count("You are sending messages too fast; please slow down. I will skip some.") == 1
    )
    assert texts.count("") == presses - gateway.settings.flood_burst - 1
