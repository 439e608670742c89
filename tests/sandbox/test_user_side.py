"""The user-side HTTP API: clear refusals and the wait_for helper's messages."""

from __future__ import annotations

import httpx
import pytest
import telegram

from botbus.sandbox import SandboxClient, SandboxServer, UserApiError
from tests.sandbox.conftest import USER, World


async def test_unknown_bot_is_a_clear_404(world: World) -> None:
    with pytest.raises(UserApiError, match="no bot with id 42") as refused:
        await world.client.send_text(42, "hi")
    assert refused.value.status == 404


async def test_group_membership_is_required_to_write(world: World) -> None:
    await world.client.create_group(world.bot.id, -7, "Club", admins=[1])
    with pytest.raises(UserApiError, match="not a member of group -7; join it first"):
        await world.client.send_text(world.bot.id, "hi", user=2, chat_id=-7)
    await world.client.join(world.bot.id, -7, 2)
    assert (await world.client.send_text(world.bot.id, "hi", user=2, chat_id=-7))["chat_id"] == -7


async def test_pressing_an_unknown_label_lists_the_buttons(world: World) -> None:
    await world.user_says("hi")
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Red", callback_data="r")]])
    sent = await world.ptb.send_message(USER, "colour?", reply_markup=markup)
    with pytest.raises(UserApiError, match=r"no button labelled 'Blue'; buttons: \['Red'\]"):
        await world.client.press(
            world.bot.id, chat_id=USER, message_id=sent.message_id, label="Blue"
        )
    pressed = await world.client.press(
        world.bot.id, chat_id=USER, message_id=sent.message_id, label="1"
    )
    (update,) = [u for u in await world.ptb.get_updates() if u.callback_query]
    assert update.update_id == pressed["update_id"]


async def test_wait_for_timeout_lists_what_arrived(world: World) -> None:
    await world.user_says("hi")
    await world.ptb.send_message(USER, "only one")
    with pytest.raises(TimeoutError, match=r"1 of 2 expected event.*'only one'"):
        await world.client.wait_for(world.bot.id, USER, count=2, timeout=0.3)


async def test_blocked_user_cannot_write_until_unblocking(world: World) -> None:
    await world.client.block(world.bot.id, USER)
    with pytest.raises(UserApiError, match="blocked the bot; unblock it first"):
        await world.user_says("hi")
    await world.client.unblock(world.bot.id, USER)
    assert await world.user_says("hi") > 0


async def test_bad_user_side_bodies_get_clear_400s(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.server.base_url) as raw:
        junk = await raw.post(f"/sandbox/bots/{world.bot.id}/messages", content=b"{")
        assert junk.status_code == 400 and "not valid JSON" in junk.json()["error"]
        no_text = await raw.post(f"/sandbox/bots/{world.bot.id}/messages", json={"user": 1})
        assert no_text.status_code == 400 and "'text'" in no_text.json()["error"]
        limits = await raw.put("/sandbox/limits", json={"chat_burst": -1})
        assert limits.status_code == 400 and "chat_burst" in limits.json()["error"]
        nowhere = await raw.get("/sandbox/nothing-here")
        assert (
            nowhere.status_code == 404 and "no such user-side endpoint" in nowhere.json()["error"]
        )


async def test_bots_are_listed_and_created_over_http(world: World) -> None:
    created = await world.client.create_bot(username="made_over_http", token="555:abcDEF_123")
    assert created.id == 555
    listed = {b.username for b in await world.client.bots()}
    assert listed == {"sandbox_test_bot", "made_over_http"}
    with pytest.raises(UserApiError, match="bot token looks like"):
        await world.client.create_bot(token="not a token")


async def test_shared_fixtures_give_a_running_sandbox(
    sandbox: SandboxServer, sandbox_client: SandboxClient
) -> None:
    bot = sandbox.add_bot()
    async with telegram.Bot(bot.token, base_url=sandbox.api_url) as tg:
        await sandbox_client.send_text(bot.id, "/start")
        (update,) = await tg.get_updates()
        assert update.message is not None
        await tg.send_message(update.message.chat_id, "welcome")
    (reply,) = await sandbox_client.wait_for(bot.id, USER, kind="message")
    assert reply["message"]["text"] == "welcome"
