"""Group-admin status: read from Telegram (the sandbox), cached, carried as ``chat_admin``.

The cache is tested with a controllable clock against the sandbox over HTTP;
the gateway tests read the inbound payloads the services would get; the last
test runs the real alerts service behind the gateway: a group member who is
not an admin cannot subscribe the group, an admin can.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import telegram

from botbus.auth import credentials_for
from botbus.gateway import Gateway
from botbus.gateway.chatadmins import ChatAdmins
from botbus.models import (
    Chat,
    InboundCallback,
    InboundCommand,
    InboundMessage,
)
from botbus.natsserver import NatsServer
from botbus.sandbox import SandboxBot, SandboxClient, SandboxServer
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from services.alerts.service import service as alerts_service

from .conftest import Inbox, MiniService, wait_until_live
from .factories import message_texts

GROUP = -100200
OWNER, MEMBER, BOT_ADMIN = 21, 22, 42
LOOKUP = "getChatAdministrators"
Inbound = InboundCommand | InboundMessage | InboundCallback


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def ptb(quiet_sandbox: SandboxServer, bot: SandboxBot) -> AsyncIterator[telegram.Bot]:
    """A python-telegram-bot Bot on the sandbox, as the gateway holds one."""
    async with telegram.Bot(bot.token, base_url=quiet_sandbox.api_url) as tg:
        yield tg


@pytest.fixture
async def group(user: SandboxClient, bot: SandboxBot) -> Chat:
    """A group owned by OWNER with MEMBER as a plain member."""
    await user.create_group(bot.id, GROUP, "Team", admins=[OWNER], members=[MEMBER])
    return Chat(id=GROUP, type="supergroup", title="Team")


async def lookups(user: SandboxClient, bot: SandboxBot) -> int:
    """How many getChatAdministrators calls the sandbox has answered."""
    return int((await user.stats(bot.id))["methods"].get(LOOKUP, 0))


# -- the cache, against the sandbox ---------------------------------------------------


async def test_admin_list_is_read_once_per_ttl(
    ptb: telegram.Bot, user: SandboxClient, bot: SandboxBot, group: Chat
) -> None:
    clock = Clock()
    admins = ChatAdmins(ptb, ttl=60, clock=clock)
    assert await admins.is_admin(group, OWNER)
    assert await admins.is_admin(group, OWNER)
    assert not await admins.is_admin(group, MEMBER)
    assert await lookups(user, bot) == 1
    clock.now += 61
    assert await admins.is_admin(group, OWNER)
    assert await lookups(user, bot) == 2


async def test_private_chats_need_no_lookup(
    ptb: telegram.Bot, user: SandboxClient, bot: SandboxBot
) -> None:
    admins = ChatAdmins(ptb)
    assert await admins.is_admin(Chat(id=MEMBER, type="private"), MEMBER)
    assert await lookups(user, bot) == 0


async def test_a_promoted_member_is_recognised_after_the_miss_refresh(
    ptb: telegram.Bot, user: SandboxClient, bot: SandboxBot, group: Chat
) -> None:
    clock = Clock()
    admins = ChatAdmins(ptb, ttl=60, miss_refresh=5, clock=clock)
    assert not await admins.is_admin(group, MEMBER)
    await user.promote(bot.id, GROUP, MEMBER)
    # Within the miss-refresh interval a non-admin cannot make the gateway call again.
    assert not await admins.is_admin(group, MEMBER)
    assert await lookups(user, bot) == 1
    clock.now += 6
    assert await admins.is_admin(group, MEMBER)
    assert await lookups(user, bot) == 2


async def test_concurrent_lookups_share_one_call(
    ptb: telegram.Bot, user: SandboxClient, bot: SandboxBot, group: Chat
) -> None:
    admins = ChatAdmins(ptb)
    answers = await asyncio.gather(*(admins.is_admin(group, OWNER) for _ in range(10)))
    assert all(answers)
    assert await lookups(user, bot) == 1


async def test_cache_keeps_at_most_max_chats(
    ptb: telegram.Bot, user: SandboxClient, bot: SandboxBot
) -> None:
    admins = ChatAdmins(ptb, max_chats=2)
    for n in range(3):
        chat_id = GROUP - 1 - n
        await user.create_group(bot.id, chat_id, f"G{n}", admins=[OWNER])
        assert await admins.is_admin(Chat(id=chat_id, type="supergroup"), OWNER)
    assert len(admins) == 2
    # The oldest chat was evicted: asking again costs a call, the newest does not.
    assert await admins.is_admin(Chat(id=GROUP - 3, type="supergroup"), OWNER)
    assert await lookups(user, bot) == 3
    assert await admins.is_admin(Chat(id=GROUP - 1, type="supergroup"), OWNER)
    assert await lookups(user, bot) == 4


async def test_a_refused_lookup_means_not_admin_and_is_logged(
    ptb: telegram.Bot,
    user: SandboxClient,
    bot: SandboxBot,
    group: Chat,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    admins = ChatAdmins(ptb, failure_ttl=5, clock=clock)
    await user.fail_next(bot.id, method=LOOKUP, error_code=403, description="Forbidden: kicked")
    with caplog.at_level(logging.WARNING, logger="botbus.gateway.chatadmins"):
        assert not await admins.is_admin(group, OWNER)
    assert f"could not read the admins of chat {GROUP}" in caplog.text
    # The failure is remembered briefly, so a burst of commands does not retry each time.
    assert not await admins.is_admin(group, OWNER)
    assert await lookups(user, bot) == 1
    clock.now += 6
    assert await admins.is_admin(group, OWNER)


@pytest.mark.slow  # a Telegram call held for seconds
async def test_a_slow_telegram_times_out_as_not_admin(
    ptb: telegram.Bot, user: SandboxClient, bot: SandboxBot, group: Chat
) -> None:
    admins = ChatAdmins(ptb, timeout=0.3)
    await user.slow_next(bot.id, method=LOOKUP, seconds=5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await admins.is_admin(group, OWNER)
    assert loop.time() - started < 3, "the lookup must give up at its timeout"
    assert admins.failures == 1


# -- through the gateway ------------------------------------------------------------------


async def test_commands_carry_group_admin_status_and_messages_cost_no_lookup(
    gateway: Gateway,
    echo: MiniService,
    inbox: Inbox,
    user: SandboxClient,
    bot: SandboxBot,
    group: Chat,
) -> None:
    await wait_until_live(gateway, "echo")
    await user.send_text(bot.id, "/echo hi", user=OWNER, chat_id=GROUP)
    owner_cmd = await inbox.next()
    assert owner_cmd.user.id == OWNER and owner_cmd.chat_admin and not owner_cmd.is_admin
    await user.send_text(bot.id, "/echo hi", user=MEMBER, chat_id=GROUP)
    member_cmd = await inbox.next()
    assert member_cmd.user.id == MEMBER and not member_cmd.chat_admin
    await user.send_text(bot.id, "just chatting", user=OWNER, chat_id=GROUP)
    plain = await inbox.next()
    assert isinstance(plain, InboundMessage) and not plain.chat_admin
    await user.send_text(bot.id, "/echo mine", user=MEMBER)
    private = await inbox.next()
    assert private.chat.type == "private" and private.chat_admin
    # One lookup served both group commands; the plain message and private chat cost none.
    assert await lookups(user, bot) == 1


async def test_button_presses_carry_group_admin_status(
    gateway: Gateway,
    echo: MiniService,
    inbox: Inbox,
    user: SandboxClient,
    bot: SandboxBot,
    group: Chat,
) -> None:
    await wait_until_live(gateway, "echo")
    await user.send_text(bot.id, "/echo pick one", user=OWNER, chat_id=GROUP)
    await inbox.next()
    [reply] = await user.wait_for(bot.id, GROUP, kind="message", timeout=10)
    message_id = reply["message"]["message_id"]
    for presser, expected in ((MEMBER, False), (OWNER, True)):
        await user.press(bot.id, chat_id=GROUP, message_id=message_id, user=presser, data="echo:x")
        press = await inbox.next()
        assert isinstance(press, InboundCallback) and press.user.id == presser
        assert press.chat_admin is expected


@pytest.mark.slow  # a Telegram call held for seconds
async def test_a_slow_lookup_does_not_hold_ingest(
    gateway: Gateway,
    echo: MiniService,
    inbox: Inbox,
    user: SandboxClient,
    bot: SandboxBot,
    group: Chat,
) -> None:
    await wait_until_live(gateway, "echo")
    assert gateway.router is not None and gateway.router.chat_admins is not None
    gateway.router.chat_admins.timeout = 0.3
    await user.slow_next(bot.id, method=LOOKUP, seconds=20)
    sent = await user.send_text(bot.id, "/echo anyone?", user=OWNER, chat_id=GROUP)
    cmd = await inbox.next()
    assert isinstance(cmd, InboundCommand) and cmd.args == "anyone?"
    assert not cmd.chat_admin  # unknown counts as not an admin
    events = await user.wait_for(bot.id, sent["chat_id"], kind="message", timeout=10)
    assert message_texts(events) == ["anyone?"]


# -- end to end: sandbox + gateway + the real alerts service ------------------------------


@pytest.fixture
async def alerts(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[ServiceApp]:
    """The real alerts service, under its own NATS user."""
    settings = alerts_settings(tmp_path, nats_server)
    async with ServiceApp(alerts_service, settings, url=nats_server.url) as app:
        yield app


def alerts_settings(tmp_path: Path, nats_server: NatsServer) -> Settings:
    """Settings of the alerts service: own data dir, free HTTP port, bot admin 42."""
    return load_settings(
        _env_file=None,
        BOTBUS_DATA_DIR=str(tmp_path / "alerts-data"),
        NATS_URL=nats_server.url,
        BOTBUS_ALERTS_HTTP="127.0.0.1:0",
        BOTBUS_ADMIN_IDS=[BOT_ADMIN],
        # alerts' own identity, issued by the broker's authority with the grants it declares
        BOTBUS_NATS_CREDS=str(
            credentials_for(nats_server.settings, "alerts", alerts_service.grants)
        ),
    )


async def ask(client: SandboxClient, bot: SandboxBot, text: str, user: int, chat_id: int) -> str:
    """``user`` writes ``text`` in ``chat_id``; returns the bot's next reply there."""
    seen = await client.messages(bot.id, chat_id)
    after = seen[-1]["seq"] if seen else 0
    await client.send_text(bot.id, text, user=user, chat_id=chat_id)
    events = await client.wait_for(bot.id, chat_id, kind="message", after=after, timeout=15)
    return message_texts(events)[0]


@pytest.mark.slow  # sandbox, gateway and the real alerts service
async def test_only_group_admins_subscribe_a_group_to_alerts(
    gateway: Gateway,
    alerts: ServiceApp,
    user: SandboxClient,
    bot: SandboxBot,
    group: Chat,
) -> None:
    await wait_until_live(gateway, "alerts")
    created = await ask(user, bot, "/newchannel news Storm warnings", BOT_ADMIN, BOT_ADMIN)
    assert re.search(r"Channel news created", created), created

    refused = await ask(user, bot, "/subscribe news", MEMBER, GROUP)
    assert refused == (
        "In a group, only the group's admins can subscribe or unsubscribe the group."
    )
    assert "no subscriptions" in (await ask(user, bot, "/mysubs", MEMBER, GROUP)).lower()

    assert (await ask(user, bot, "/subscribe news", OWNER, GROUP)).startswith("Subscribed to news")
    assert (await ask(user, bot, "/mysubs", MEMBER, GROUP)) == "Subscribed to: news"

    # Promoted in Telegram, the member may now manage the group's subscriptions.
    await user.promote(bot.id, GROUP, MEMBER)
    assert gateway.router is not None and gateway.router.chat_admins is not None
    gateway.router.chat_admins.miss_refresh = 0  # re-check at once instead of in 5 s
    assert (await ask(user, bot, "/unsubscribe news", MEMBER, GROUP)) == "Unsubscribed from news."
