"""Interactive `botbus chat`, driven through a pseudo-terminal like a person would use it.

The real `botbus chat` process talks to an in-test sandbox; a tiny bot (a plain
getUpdates / sendMessage loop over HTTP) answers inside the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from tests.sandbox.conftest import USER, World, png

BOTBUS = str(Path(sys.executable).with_name("botbus"))  # the installed console script
EXPECT_TIMEOUT = 5.0  # seconds one expected line may take to appear
OTHER_USER = 2002
GROUP = -100777

# each test spawns a botbus chat process: in `make test`, not in the fast loop
pytestmark = [pytest.mark.slow, pytest.mark.timeout(30)]


def _keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton("Red", callback_data="red")],
            [InlineKeyboardButton("Blue", callback_data="blue")],
        ]
    )


async def _handle(update: Update) -> None:
    message = update.message
    if update.edited_message is not None:
        await update.edited_message.reply_text(f"edited to: {update.edited_message.text}")
    elif message is not None and (message.photo or message.location or message.sticker):
        if message.photo:
            size = message.photo[-1]
            seen = f"photo {size.width}x{size.height} {message.caption}"
        elif message.location:
            seen = f"location {message.location.latitude},{message.location.longitude}"
        else:
            seen = f"sticker {message.sticker.emoji if message.sticker else ''}"
        await message.reply_text(f"got {seen}")
    elif message is not None and message.reply_to_message is not None:
        await message.reply_text(f"reply to #{message.reply_to_message.message_id}: {message.text}")
    elif message is not None and message.text == "/menu":
        await message.reply_text("Pick a colour", reply_markup=_keyboard())
    elif message is not None and message.text and message.from_user:
        await message.reply_text(
            f"echo from {message.from_user.id} in {message.chat.id}: {message.text}"
        )
    elif update.callback_query is not None:
        query = update.callback_query
        await query.answer(f"{query.data} seen from {query.from_user.id}")
        await query.edit_message_text(f"You picked {query.data}", reply_markup=_keyboard())


async def _tiny_bot(world: World) -> None:
    """Answer texts, show a keyboard on /menu, acknowledge presses: a raw polling loop."""
    offset = 0
    while True:
        for update in await world.ptb.get_updates(offset=offset, timeout=5):
            offset = update.update_id + 1
            await _handle(update)


@pytest.fixture
async def running_bot(world: World) -> AsyncIterator[World]:
    task = asyncio.create_task(_tiny_bot(world))
    try:
        yield world
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def terminal(running_bot: World) -> AsyncIterator[pexpect.spawn]:
    """`botbus chat` running interactively in a pseudo-terminal."""
    child = spawn_chat(running_bot)
    try:
        await expect(child, f"as user {USER} in chat {USER}")
        yield child
    finally:
        if child.isalive():
            child.terminate(force=True)


def _interactive_signals() -> None:
    # The worst case, made explicit so the result does not depend on how the
    # test runner was started: a shell's '&' job inherits SIGINT ignored. The
    # client installs its own Ctrl-C handler, so Ctrl-C must still end it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def spawn_chat(world: World) -> pexpect.spawn:
    """Start `botbus chat` against ``world``'s sandbox in a fresh pseudo-terminal."""
    return pexpect.spawn(
        BOTBUS,
        ["chat", "--url", world.server.base_url],
        encoding="utf-8",
        timeout=EXPECT_TIMEOUT,
        dimensions=(40, 200),
        preexec_fn=_interactive_signals,
    )


async def expect(child: pexpect.spawn, text: str) -> None:
    """Wait for ``text`` on the terminal; the failure shows what was printed instead."""
    try:
        await child.expect_exact(text, async_=True)
    except (pexpect.TIMEOUT, pexpect.EOF) as exc:
        raise AssertionError(
            f"terminal never showed {text!r}; it showed: {child.before!r}"
        ) from exc


async def test_typed_text_gets_the_bots_reply(terminal: pexpect.spawn) -> None:
    terminal.sendline("hello bot")
    await expect(terminal, f"bot: echo from {USER} in {USER}: hello bot")


async def test_buttons_pressed_by_label_and_by_number(terminal: pexpect.spawn) -> None:
    terminal.sendline("/menu")
    await expect(terminal, "bot: Pick a colour")
    await expect(terminal, "[2] Blue")

    terminal.sendline(":press Red")
    await expect(terminal, f"bot answers the button: red seen from {USER}")
    await expect(terminal, "You picked red")

    terminal.sendline(":press 2")
    await expect(terminal, f"bot answers the button: blue seen from {USER}")
    await expect(terminal, "You picked blue")


async def test_switching_user_and_writing_in_a_group(terminal: pexpect.spawn) -> None:
    terminal.sendline(f":user {OTHER_USER}")
    await expect(terminal, f"now in chat {OTHER_USER} as user {OTHER_USER}")
    terminal.sendline("who am I")
    await expect(terminal, f"bot: echo from {OTHER_USER} in {OTHER_USER}: who am I")

    terminal.sendline(f":group {GROUP} Team")
    await expect(terminal, f"now in chat {GROUP} as user {OTHER_USER}")
    terminal.sendline("/menu")
    await expect(terminal, "bot: Pick a colour")
    terminal.sendline(":press Blue")
    await expect(terminal, f"blue seen from {OTHER_USER}")

    terminal.sendline(f":user {USER}")
    await expect(terminal, f"now in chat {GROUP} as user {USER}")
    terminal.sendline(":press Red")
    await expect(terminal, f"red seen from {USER}")


async def test_photos_locations_stickers_replies_and_edits(
    terminal: pexpect.spawn, tmp_path: Path
) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(png(120, 80))
    terminal.sendline(f":photo {picture} my cat")
    await expect(terminal, "bot: got photo 120x80 my cat")
    terminal.sendline(":location 40.4168, -3.7038")
    await expect(terminal, "bot: got location 40.4168,-3.7038")
    terminal.sendline(":sticker 👍")
    await expect(terminal, "bot: got sticker 👍")

    terminal.sendline("first words")
    await terminal.expect(r"you #(\d+)", async_=True)
    first = int(terminal.match.group(1))
    await expect(terminal, "bot: echo from")
    terminal.sendline(f":reply {first} quoting you")
    await expect(terminal, f"bot: reply to #{first}: quoting you")
    terminal.sendline(f":edit {first} better words")
    await expect(terminal, "bot: edited to: better words")

    terminal.sendline(f":photo {tmp_path / 'missing.png'}")
    await expect(terminal, "error: cannot read")
    terminal.sendline(":location north")
    await expect(terminal, "error: :location needs latitude and longitude")
    terminal.sendline(":edit 9999 nope")
    await expect(terminal, "error: no message 9999")


async def test_bad_input_is_explained_and_the_client_keeps_running(
    terminal: pexpect.spawn,
) -> None:
    terminal.sendline(":frobnicate")
    await expect(terminal, "error: unknown command :frobnicate")

    terminal.sendline(":press Red")
    await expect(terminal, "error: no message with buttons")

    terminal.sendline("/menu")
    await expect(terminal, "[2] Blue")
    terminal.sendline(":press Green")
    await expect(terminal, "error: no button labelled 'Green'")
    terminal.sendline(":press 9")
    await expect(terminal, "error: no button labelled '9'")

    terminal.sendline(":group nope")
    await expect(terminal, "error: :group needs")
    terminal.sendline(":user bob")
    await expect(terminal, "error: :user needs a numeric")
    terminal.sendline(":lang english")
    await expect(terminal, "error: :lang needs a language code")
    terminal.sendline(":lang pt-BR")
    await expect(terminal, "now writing with language pt-BR")

    terminal.sendline("still there?")
    await expect(terminal, "bot: echo from 1001 in 1001: still there?")


async def test_quit_end_of_input_and_ctrl_c_each_exit_zero(running_bot: World) -> None:
    for how in ("quit", "eof", "interrupt"):
        child = spawn_chat(running_bot)
        try:
            await expect(child, "chatting with bot")
            if how == "quit":
                child.sendline(":quit")
            elif how == "eof":
                child.sendeof()
            else:
                child.sendintr()
            await expect_exit(child)
            assert child.exitstatus == 0, (how, child.before)
        finally:
            if child.isalive():
                child.terminate(force=True)


EXIT_TIMEOUT = 20.0  # seconds: a bound that catches a hang, generous for a loaded CI box


async def expect_exit(child: pexpect.spawn) -> None:
    """Wait for the process to end and collect its exit status."""
    await child.expect(pexpect.EOF, async_=True, timeout=EXIT_TIMEOUT)
    child.close()
