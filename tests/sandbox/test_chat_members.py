"""getChatMember / getChatAdministrators through python-telegram-bot, and promoting members."""

from __future__ import annotations

import asyncio

import pytest
from telegram import ChatMemberAdministrator, ChatMemberLeft, ChatMemberMember, ChatMemberOwner
from telegram.error import BadRequest

from botbus.sandbox import UserApiError
from tests.sandbox.conftest import USER, World

GROUP = -100777
OWNER, HELPER, MEMBER, STRANGER = 11, 12, 13, 14


async def make_group(world: World) -> None:
    """A group owned by OWNER, with HELPER as a second admin and MEMBER as a member."""
    await world.client.create_group(
        world.bot.id, GROUP, "Club", admins=[OWNER, HELPER], members=[MEMBER]
    )
    await world.client.send_text(world.bot.id, "hi", user=STRANGER)  # known, not in the group


async def test_chat_member_status_follows_the_group(world: World) -> None:
    await make_group(world)
    owner = await world.ptb.get_chat_member(GROUP, OWNER)
    assert isinstance(owner, ChatMemberOwner) and owner.user.id == OWNER
    helper = await world.ptb.get_chat_member(GROUP, HELPER)
    assert isinstance(helper, ChatMemberAdministrator) and helper.can_delete_messages
    member = await world.ptb.get_chat_member(GROUP, MEMBER)
    assert isinstance(member, ChatMemberMember) and member.user.first_name == f"User {MEMBER}"
    stranger = await world.ptb.get_chat_member(GROUP, STRANGER)
    assert isinstance(stranger, ChatMemberLeft)
    me = await world.ptb.get_chat_member(GROUP, world.bot.id)
    assert me.status == "member" and me.user.is_bot


async def test_administrators_list_the_owner_first(world: World) -> None:
    await make_group(world)
    admins = await world.ptb.get_chat_administrators(GROUP)
    assert [(a.user.id, a.status) for a in admins] == [
        (OWNER, "creator"),
        (HELPER, "administrator"),
    ]


async def test_promote_and_demote_change_what_the_bot_sees(world: World) -> None:
    await make_group(world)
    await world.client.promote(world.bot.id, GROUP, MEMBER)
    assert (await world.ptb.get_chat_member(GROUP, MEMBER)).status == "administrator"
    assert MEMBER in {a.user.id for a in await world.ptb.get_chat_administrators(GROUP)}
    await world.client.demote(world.bot.id, GROUP, MEMBER)
    assert (await world.ptb.get_chat_member(GROUP, MEMBER)).status == "member"
    assert MEMBER not in {a.user.id for a in await world.ptb.get_chat_administrators(GROUP)}


async def test_promotion_refusals_say_what_to_do(world: World) -> None:
    await make_group(world)
    with pytest.raises(UserApiError, match="not a member of group") as not_member:
        await world.client.promote(world.bot.id, GROUP, STRANGER)
    assert not_member.value.status == 409
    with pytest.raises(UserApiError, match="owner cannot be demoted"):
        await world.client.demote(world.bot.id, GROUP, OWNER)
    with pytest.raises(UserApiError, match="is not an administrator") as not_admin:
        await world.client.demote(world.bot.id, GROUP, MEMBER)
    assert not_admin.value.status == 404
    with pytest.raises(UserApiError, match="no group -5"):
        await world.client.promote(world.bot.id, -5, MEMBER)


async def test_member_lookups_are_refused_like_telegram(world: World) -> None:
    await make_group(world)
    with pytest.raises(BadRequest, match="Chat not found"):
        await world.ptb.get_chat_member(-999, OWNER)
    with pytest.raises(BadRequest, match="User not found"):
        await world.ptb.get_chat_member(GROUP, 987654)
    with pytest.raises(BadRequest, match="Participant_id_invalid"):
        await world.ptb.get_chat_member(GROUP, -3)
    with pytest.raises(BadRequest, match="Chat not found"):
        await world.ptb.get_chat_administrators(-999)


async def test_private_chat_has_a_member_and_no_administrators(world: World) -> None:
    await world.user_says("hello")
    me = await world.ptb.get_chat_member(USER, USER)
    assert isinstance(me, ChatMemberMember) and me.user.id == USER
    with pytest.raises(BadRequest, match="no administrators in the private chat"):
        await world.ptb.get_chat_administrators(USER)
    with pytest.raises(BadRequest, match="User not found"):
        await world.ptb.get_chat_member(USER, STRANGER)


async def test_a_slow_fault_holds_the_call_then_answers(world: World) -> None:
    await make_group(world)
    await world.client.slow_next(world.bot.id, method="getChatAdministrators", seconds=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    admins = await world.ptb.get_chat_administrators(GROUP)
    assert loop.time() - started >= 0.3
    assert [a.user.id for a in admins] == [OWNER, HELPER]
    with pytest.raises(UserApiError, match="'delay' must be a number of seconds"):
        await world.client.slow_next(world.bot.id, method="getChatMember", seconds=600)
