"""A sandbox with a data directory keeps its world across restarts; two never share one."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import telegram
from click.testing import CliRunner
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from botbus.sandbox import (
    Limits,
    SandboxBusy,
    SandboxClient,
    SandboxServer,
    running_url,
)
from botbus.sandbox._persist import state_dir
from botbus.sandbox.chat import chat
from botbus.sandbox.cli import sandbox as sandbox_command
from botbus.sandbox.cli import start_on
from tests.sandbox.conftest import USER, png

GROUP = -100123


async def _persistent(directory: Path) -> SandboxServer:
    server = SandboxServer(Limits(enabled=False), data_dir=directory)
    await server.start()
    return server


async def test_chats_messages_files_menus_and_pending_updates_survive_a_restart(
    tmp_path: Path,
) -> None:
    first = await _persistent(tmp_path)
    bot = first.add_bot(username="kept_bot")
    async with SandboxClient(first.base_url) as client:
        await client.send_text(bot.id, "/start", user={"id": USER, "first_name": "Ana"}, lang="es")
        await client.create_group(bot.id, GROUP, "Team", admins=[USER], members=[2002])
        photo = await client.send_photo(bot.id, png(100, 50), caption="cat", chat_id=GROUP)
        async with telegram.Bot(bot.token, base_url=first.api_url) as ptb:
            updates = await ptb.get_updates(timeout=0)
            await ptb.set_my_commands([BotCommand("start", "Empezar")], language_code="es")
            markup = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="go")]])
            await ptb.send_message(USER, "Hola", reply_markup=markup)
    await first.stop()
    assert running_url(tmp_path) is None  # stopped: nothing to find

    second = await _persistent(tmp_path)
    try:
        assert [b.token for b in second.bots] == [bot.token]
        async with SandboxClient(second.base_url) as client:
            chats = {c["id"]: c for c in await client.chats(bot.id)}
            assert chats[USER]["first_name"] == "Ana"
            assert chats[GROUP]["title"] == "Team" and chats[GROUP]["admins"] == [USER]
            (hola,) = await client.messages(bot.id, USER)
            assert hola["message"]["text"] == "Hola"
            # the button still works, and numbering goes on where it stopped
            await client.press(
                bot.id, chat_id=USER, message_id=hola["message"]["message_id"], label="Go"
            )
            again = await client.send_text(bot.id, "again", user=USER)
            assert again["message_id"] == hola["message"]["message_id"] + 1
            menu = await client.commands(bot.id, user_id=USER, lang="es")
            assert menu == [{"command": "start", "description": "Empezar"}]
            async with telegram.Bot(
                bot.token, base_url=second.api_url, base_file_url=second.file_url
            ) as ptb:
                pending = await ptb.get_updates(offset=updates[-1].update_id + 1, timeout=0)
                assert [u.message.text for u in pending if u.message] == ["again"]
                assert pending[0].update_id > updates[-1].update_id
                (sent,) = [u.message for u in updates if u.message and u.message.photo]
                assert sent.photo[-1].file_id
                file = await ptb.get_file(sent.photo[-1].file_id)
                assert bytes(await file.download_as_bytearray()) == png(100, 50)
        assert photo["chat_id"] == GROUP
    finally:
        await second.stop()


async def test_a_second_sandbox_on_the_same_directory_is_refused_with_the_url(
    tmp_path: Path,
) -> None:
    first = await _persistent(tmp_path)
    try:
        assert running_url(tmp_path) == first.base_url
        second = SandboxServer(data_dir=tmp_path)
        with pytest.raises(SandboxBusy) as caught:
            await second.start()
        assert caught.value.base_url == first.base_url
        await second.stop()  # a refused server stops without touching the state
        assert running_url(tmp_path) == first.base_url
    finally:
        await first.stop()


async def test_an_unreadable_state_file_says_how_to_start_afresh(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    server = SandboxServer(data_dir=tmp_path)
    with pytest.raises(Exception, match="move the file away"):
        await server.start()
    assert running_url(tmp_path) is None  # the lock was released


async def test_botbus_chat_finds_the_running_sandbox_from_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("TELEGRAM_API_URL", raising=False)
    monkeypatch.setenv("BOTBUS_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, chat, ["--send", "hi", "--timeout", "0.2"])
    assert result.exit_code == 1
    assert "no sandbox is running with the data directory" in result.output

    server = await _persistent(state_dir(tmp_path / "data"))
    try:
        server.add_bot()
        result = await asyncio.to_thread(runner.invoke, chat, ["--send", "hi", "--timeout", "0.2"])
        assert result.exit_code == 0, result.output
        assert "no reply: the bot does not answer plain text here" in result.output
        # and a second `botbus sandbox` on that data directory says where the first one is
        result = await asyncio.to_thread(runner.invoke, sandbox_command, ["--port", "0"])
        assert result.exit_code == 1
        assert f"already running at {server.base_url}" in result.output
    finally:
        await server.stop()


async def test_a_busy_default_port_falls_back_and_says_which_url_to_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = SandboxServer()
        try:
            base_url = await start_on(server, "127.0.0.1", port, default_port=True)
            assert base_url != f"http://127.0.0.1:{port}"
            said = capsys.readouterr().out
            assert f"port {port} is busy" in said and f"listens on {base_url} instead" in said
        finally:
            await server.stop()
        explicit = SandboxServer()
        with pytest.raises(OSError):  # a port the user chose is not second-guessed
            await start_on(explicit, "127.0.0.1", port, default_port=False)
