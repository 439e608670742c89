"""The games service on a real nats-server: full games, forged presses, races, forget."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from botbus import subjects
from botbus.auth import credentials_for
from botbus.models import AnswerCallback, EditText, InlineKeyboard, SendText
from botbus.natsserver import NatsServer
from botbus.provision import service_bucket
from botbus.service import ServiceApp
from botbus.settings import Settings
from services.games import engine
from services.games.base import Player
from services.games.engine import ChatRecord
from services.games.hangman import Hangman
from services.games.store import GameStore
from services.games.tictactoe import TicTacToe
from services.games.trivia import load_bank
from tests.services.games.conftest import GROUP, Telegram, games_nc, second_instance


def buttons(keyboard: InlineKeyboard | None) -> list[list[str]]:
    """The callback data (after ``games:``) of every button, row by row."""
    assert keyboard is not None
    rows = []
    for row in keyboard.rows:
        data = []
        for button in row:
            assert button.callback_data is not None and button.callback_data.startswith("games:")
            data.append(button.callback_data.removeprefix("games:"))
        rows.append(data)
    return rows


def cells(keyboard: InlineKeyboard | None) -> list[str]:
    return [data for row in buttons(keyboard) for data in row]


def labels(keyboard: InlineKeyboard | None) -> list[str]:
    assert keyboard is not None
    return [b.text for row in keyboard.rows for b in row]


async def test_tictactoe_vs_bot_played_to_the_end_never_won_by_the_human(
    games: ServiceApp, telegram: Telegram
) -> None:
    board = await telegram.reply(await telegram.command("tictactoe"))
    assert len(buttons(board.keyboard)) == 3 and all(len(r) == 3 for r in buttons(board.keyboard))
    assert "❌ Ana  vs  ⭕ 🤖 Bot" in board.text
    keyboard = board.keyboard
    edit: EditText | None = None
    for _ in range(5):
        free = [
            d for d, label in zip(cells(keyboard), labels(keyboard), strict=True) if label == "·"
        ]
        answer, edit = await telegram.press(free[-1])
        assert answer.text is None  # accepted: just stop the spinner
        assert edit is not None and edit.message_id == 500 and edit.chat_id == 1
        if edit.text.endswith(("wins!", "Draw!")):
            break
        keyboard = edit.keyboard
    assert edit is not None
    assert edit.text.endswith(("🤖 Bot wins!", "Draw!")), edit.text
    record = await telegram.record(1)
    assert isinstance(record.game, TicTacToe) and record.game.finished


async def test_two_player_tictactoe_in_a_group(games: ServiceApp, telegram: Telegram) -> None:
    board = await telegram.reply(await telegram.command("tictactoe", user=1, chat=GROUP))
    c = cells(board.keyboard)
    assert "⭕ ?" in board.text
    _, edit = await telegram.press(c[4], user=1, chat=GROUP)
    assert edit is not None and "Waiting for an opponent" in edit.text
    # Ben is the first other member to press: he joins as O.
    answer, edit = await telegram.press(cells(edit.keyboard)[0], user=2, chat=GROUP)
    assert answer.text is None and edit is not None
    assert "⭕ Ben" in edit.text and "Ana to move" in edit.text
    # Carl is not playing; Ben must wait for Ana.
    answer, _ = await telegram.press(cells(edit.keyboard)[1], user=3, chat=GROUP, expect_edit=False)
    assert answer.text == "You are not playing this game."
    answer, _ = await telegram.press(cells(edit.keyboard)[1], user=2, chat=GROUP, expect_edit=False)
    assert answer.text == "It is not your turn."
    for user, n in ((1, 1), (2, 2), (1, 7)):  # Ana: 4, 1, 7 — the middle column
        last_buttons = cells(edit.keyboard)
        _, edit = await telegram.press(last_buttons[n], user=user, chat=GROUP)
        assert edit is not None
    assert edit.text.endswith("Ana wins!") and edit.keyboard is None  # no live-looking buttons
    answer, _ = await telegram.press(last_buttons[8], user=2, chat=GROUP, expect_edit=False)
    assert answer.text == "This game is over."


async def test_forged_and_replayed_presses_are_refused_and_change_nothing(
    games: ServiceApp, telegram: Telegram
) -> None:
    board = await telegram.reply(await telegram.command("tictactoe", user=1, chat=GROUP))
    _, edit = await telegram.press(cells(board.keyboard)[4], user=1, chat=GROUP)
    assert edit is not None
    kv = (await telegram.store()).kv
    before = await kv.get(f"chat.{GROUP}")
    gid = cells(edit.keyboard)[0].split(":")[1]
    cases = {
        "occupied cell": (f"t:{gid}:1:4", 2, "That cell is taken."),
        "replayed first move": (f"t:{gid}:0:4", 1, "Too late: the board has changed since."),
        "not their turn": (
            f"t:{gid}:1:0",
            1,
            "Waiting for an opponent: another member should press a cell.",
        ),
        "button of a replaced game": ("t:zzzzzz:1:0", 2, "This game is over."),
        "malformed": ("t:nope", 2, "This button is not valid."),
        "oversized": (f"t:{gid}:1:0".ljust(64, "0"), 2, "This button is not valid."),
        "invented argument": (f"t:{gid}:1:99", 2, "That is not a cell of the board."),
    }
    for name, (data, user, reason) in cases.items():
        answer, edit_ = await telegram.press(data, user=user, chat=GROUP, expect_edit=False)
        assert answer.text == reason, name
        assert edit_ is None, name
    after = await kv.get(f"chat.{GROUP}")
    assert after.revision == before.revision and after.value == before.value
    # A new game replaces the old one: the old board's buttons are refused.
    await telegram.reply(await telegram.command("tictactoe", user=1, chat=GROUP))
    answer, _ = await telegram.press(cells(edit.keyboard)[0], user=2, chat=GROUP, expect_edit=False)
    assert answer.text == "This game is over."
    # No refused press produced an edit; the replaced board lost its buttons.
    edits = [a for a in telegram.actions if isinstance(a, EditText)]
    assert len(edits) == 2 and edits[1].text.endswith("⏹ Replaced by a new game.")
    assert edits[1].keyboard is None and edits[1].message_id == edit.message_id


async def test_press_without_a_game_is_answered_in_the_users_language(
    games: ServiceApp, telegram: Telegram
) -> None:
    answer, _ = await telegram.press("t:abcdef:0:0", user=5, language="es", expect_edit=False)
    assert answer.text is not None and answer.text.startswith("No hay ninguna partida")


async def test_trivia_round_in_spanish_scores_on_the_leaderboard(
    games: ServiceApp, telegram: Telegram
) -> None:
    board = await telegram.reply(await telegram.command("trivia", "2", user=7, language="es"))
    assert "Pregunta 1/2" in board.text
    bank = {q.question: q for q in load_bank("es")}
    keyboard = board.keyboard
    text = board.text
    for _ in range(2):
        question = bank[text.splitlines()[-1]]
        data = buttons(keyboard)[question.answer][0]
        answer, edit = await telegram.press(data, user=7, language="es")
        assert answer.text == "✅ ¡Correcto!" and edit is not None
        text, keyboard = edit.text, edit.keyboard
    assert "🏁 ¡Ronda terminada!" in text and "U7: 2" in text and keyboard is None
    reply = await telegram.reply(await telegram.command("leaderboard", user=7, language="es"))
    assert reply.text == "🏆 Clasificación\n🥇 U7 — 2"


async def test_group_trivia_first_right_answer_wins_the_point(
    games: ServiceApp, telegram: Telegram
) -> None:
    board = await telegram.reply(await telegram.command("trivia", "1", user=1, chat=GROUP))
    question = {q.question: q for q in load_bank("en")}[board.text.splitlines()[-1]]
    rows = buttons(board.keyboard)
    wrong = rows[(question.answer + 1) % 4][0]
    # A wrong answer changes nothing anyone sees: answered, but no (refused) empty edit.
    answer, edit = await telegram.press(wrong, user=1, chat=GROUP, expect_edit=False)
    assert answer.text == "❌ Wrong." and edit is None
    answer, _ = await telegram.press(
        rows[question.answer][0], user=1, chat=GROUP, expect_edit=False
    )
    assert answer.text == "You already answered this question."
    answer, edit = await telegram.press(rows[question.answer][0], user=2, chat=GROUP)
    assert answer.text == "✅ Right!" and edit is not None and "Ben: 1" in edit.text
    reply = await telegram.reply(await telegram.command("leaderboard", chat=GROUP))
    assert "Ben — 1" in reply.text and "Ana" not in reply.text


async def test_hangman_solved_with_the_letter_keyboard(
    games: ServiceApp, telegram: Telegram
) -> None:
    board = await telegram.reply(await telegram.command("hangman"))
    record = await telegram.record(1)
    assert isinstance(record.game, Hangman)
    word = record.game.word
    assert board.text.startswith("🔤 " + " ".join("_" * len(word)))
    keyboard = board.keyboard
    edit: EditText | None = None
    for letter in dict.fromkeys(word):
        data = dict(zip(labels(keyboard), cells(keyboard), strict=True))[letter.upper()]
        answer, edit = await telegram.press(data)
        assert answer.text is not None and answer.text.startswith("✅")
        assert edit is not None
        keyboard = edit.keyboard
    assert edit is not None and edit.text.endswith("🎉 Solved!") and edit.keyboard is None


async def test_guess_the_number_with_higher_and_lower_hints(
    games: ServiceApp, telegram: Telegram
) -> None:
    intro = await telegram.reply(await telegram.command("guess", user=4))
    assert "from 1 to 100" in intro.text
    bad = await telegram.reply(await telegram.command("guess", "lots", user=4))
    assert bad.text == "Guess a whole number from 1 to 100, e.g. /guess 50."
    low, high = 1, 100
    for _ in range(7):
        mid = (low + high) // 2
        reply = await telegram.reply(await telegram.command("guess", str(mid), user=4))
        if reply.text.startswith("⬆️"):
            low = mid + 1
        elif reply.text.startswith("⬇️"):
            high = mid - 1
        else:
            break
    assert reply.text.startswith(f"🎉 U4 got it: {mid}!")


async def test_stop_ends_the_game_and_strips_the_board(
    games: ServiceApp, telegram: Telegram
) -> None:
    board = await telegram.reply(await telegram.command("hangman"))
    await telegram.press(cells(board.keyboard)[0])
    cmd = await telegram.command("stop")
    got = await telegram.answers(cmd.correlation_id, 2)
    edit = next(a for a in got if isinstance(a, EditText))
    reply = next(a for a in got if isinstance(a, SendText))
    assert edit.message_id == 500 and edit.keyboard is None
    assert edit.text.endswith("⏹ Game stopped.") and reply.text == "⏹ Game stopped."
    answer, _ = await telegram.press(cells(board.keyboard)[1], expect_edit=False)
    assert answer.text == "This game is over."
    again = await telegram.reply(await telegram.command("stop", language="es"))
    assert again.text.startswith("No hay ninguna partida")


async def test_bad_arguments_get_a_clear_reply(games: ServiceApp, telegram: Telegram) -> None:
    reply = await telegram.reply(await telegram.command("trivia", "lots"))
    assert reply.text == "Usage: /trivia [1-20] (how many questions)"
    reply = await telegram.reply(await telegram.command("guess", "50", user=9, language="es"))
    assert reply.text == "No hay ningún juego de números aquí: /guess empieza uno."


async def test_unknown_arguments_are_refused_and_start_no_game(
    games: ServiceApp, telegram: Telegram
) -> None:
    reply = await telegram.reply(await telegram.command("tictactoe", "garbage", user=11))
    assert reply.text.startswith("Usage: /tictactoe") and reply.keyboard is None
    reply = await telegram.reply(await telegram.command("hangman", "x", user=11, language="es"))
    assert reply.text == "/hangman no lleva nada detrás: envía solo /hangman."
    assert (await telegram.record(11)).game is None
    reply = await telegram.reply(await telegram.command("leaderboard", "all", user=11))
    assert reply.text == "/leaderboard takes nothing after it: send just /leaderboard."
    # What the usage offers still works, in a group too.
    board = await telegram.reply(await telegram.command("tictactoe", "Bot", user=11, chat=GROUP))
    assert "🤖 Bot" in board.text


async def test_forget_removes_the_users_scores(games: ServiceApp, telegram: Telegram) -> None:
    store = await telegram.store()
    scored = ChatRecord().credit((Player(id=1, name="Ana"), Player(id=2, name="Ben")))
    assert await store.save(GROUP, scored, None)
    await telegram.forget(1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while "1" in (await telegram.record(GROUP)).scores:
        assert loop.time() < deadline, "the forget event was not honoured"
        await asyncio.sleep(0.05)
    reply = await telegram.reply(await telegram.command("leaderboard", chat=GROUP))
    assert "Ben — 1" in reply.text and "Ana" not in reply.text


async def test_compare_and_set_refuses_a_write_based_on_an_old_revision(
    nats_server: NatsServer, settings: Settings, telegram: Telegram
) -> None:
    """Two instances read the same board; only the first write lands, the second re-validates."""
    connections: list[Client] = [await games_nc(nats_server, settings) for _ in range(2)]
    try:
        kv_a, kv_b = [await service_bucket(nc, "games") for nc in connections]
        a, b = GameStore(kv_a), GameStore(kv_b)
        ana, ben, carl = (
            Player(id=1, name="Ana"),
            Player(id=2, name="Ben"),
            Player(id=3, name="Carl"),
        )
        game = TicTacToe.start("race01", "en", ana, vs_bot=False)
        record = engine.press(
            engine.start(ChatRecord(), game).record, ana, "t:race01:0:4", 9
        ).record
        assert await a.save(GROUP, record, None)
        seen_a, rev_a = await a.load(GROUP)
        seen_b, rev_b = await b.load(GROUP)
        assert rev_a == rev_b
        assert await a.save(GROUP, engine.press(seen_a, ben, "t:race01:1:0", 9).record, rev_a)
        assert not await b.save(GROUP, engine.press(seen_b, carl, "t:race01:1:8", 9).record, rev_b)
        final, _ = await b.load(GROUP)
        assert isinstance(final.game, TicTacToe)
        assert final.game.board == "O...X...." and final.game.o == ben
    finally:
        for nc in connections:
            await nc.drain()


async def test_simultaneous_presses_on_two_instances_apply_exactly_one_move(
    nats_server: NatsServer, settings: Settings, games: ServiceApp, telegram: Telegram
) -> None:
    other = await second_instance(nats_server, settings)
    try:
        for round_ in range(3):
            board = await telegram.reply(await telegram.command("tictactoe", user=1, chat=GROUP))
            _, edit = await telegram.press(cells(board.keyboard)[4], user=1, chat=GROUP)
            assert edit is not None
            # Ben and Carl both try to join as O, at the same moment, on different cells.
            ben = telegram.callback(cells(edit.keyboard)[0], user=2, chat=GROUP)
            carl = telegram.callback(cells(edit.keyboard)[8], user=3, chat=GROUP)
            await asyncio.gather(telegram.publish(ben), telegram.publish(carl))
            got_ben = await telegram.answers(ben.correlation_id, 1)
            got_carl = await telegram.answers(carl.correlation_id, 1)
            record = await telegram.record(GROUP)
            game = record.game
            assert isinstance(game, TicTacToe)
            assert game.move == 2 and game.board.count("O") == 1, round_
            winner, loser = (
                (got_ben, got_carl) if game.o and game.o.id == 2 else (got_carl, got_ben)
            )
            assert game.board == ("O...X...." if winner is got_ben else "....X...O")
            loser_answer = next(a for a in loser if isinstance(a, AnswerCallback))
            assert loser_answer.text == "Too late: the board has changed since."
            await telegram.answers(winner[0].correlation_id or "", 2)  # answer + the edit
            assert not any(isinstance(a, EditText) for a in loser)
    finally:
        await other.stop()


@pytest.mark.slow  # a service process
async def test_runs_as_its_own_process_and_drains_on_sigterm(
    nats_server: NatsServer, telegram: Telegram, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "BOTBUS_"))}
    env.update(
        NATS_URL=nats_server.url,
        BOTBUS_DATA_DIR=str(tmp_path / "games"),
        BOTBUS_NATS_CREDS=str(credentials_for(nats_server.settings, "games")),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.games",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # Commands sent before its consumer exists are not its to answer: wait until
        # it registers (it binds its consumers first).
        for _ in range(100):
            try:
                await telegram.nc.request(f"{subjects.SRV_PING}.games", b"", timeout=0.2)
                break
            except (NatsTimeoutError, NoRespondersError):
                await asyncio.sleep(0.1)
                assert proc.returncode is None, "python -m services.games exited"
        reply = await telegram.reply(await telegram.command("leaderboard", user=11))
        assert reply.text.startswith("No scores yet")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
