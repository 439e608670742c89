"""Game logic without a bus: rules, the perfect tic-tac-toe bot, and refused presses."""

from __future__ import annotations

import json
import random

import pytest

from services.games import engine
from services.games.base import Player
from services.games.engine import ChatRecord
from services.games.guess import Guess
from services.games.hangman import MAX_MISSES, Hangman, load_words
from services.games.protocol import MAX_DATA_BYTES, SERVICE_PREFIX, decode_press, encode_press
from services.games.texts import GAME_OVER, MALFORMED, NO_GAME, STALE, Refused
from services.games.tictactoe import (
    BOT,
    NOT_PLAYER,
    NOT_YOUR_TURN,
    OCCUPIED,
    WAIT_OPPONENT,
    TicTacToe,
    best_move,
    to_move,
    winner,
)
from services.games.trivia import ALREADY_TRIED, Trivia, load_bank

ANA = Player(id=1, name="Ana")
BEN = Player(id=2, name="Ben")
CARL = Player(id=3, name="Carl")


def ttt_record(*, vs_bot: bool, gid: str = "game01") -> ChatRecord:
    return engine.start(ChatRecord(), TicTacToe.start(gid, "en", ANA, vs_bot=vs_bot)).record


def cell(record: ChatRecord, n: int) -> str:
    """The callback data of cell ``n`` on the board currently shown."""
    game = record.game
    assert game is not None
    # Also on a finished board, whose buttons a client may still show.
    return encode_press("t", game.gid, game.move, str(n))


def play(record: ChatRecord, user: Player, n: int) -> ChatRecord:
    return engine.press(record, user, cell(record, n), message_id=5).record


def refusal(record: ChatRecord, user: Player, data: str) -> str:
    with pytest.raises(Refused) as info:
        engine.press(record, user, data, message_id=5)
    return info.value.reason.pick("en")


# -- tic-tac-toe ---------------------------------------------------------------


def test_bot_never_loses_against_any_sequence_of_moves() -> None:
    """Every game a human can play as X against the bot ends in a draw or a bot win."""
    outcomes: set[str] = set()

    def explore(game: TicTacToe) -> None:
        for n in range(9):
            if game.board[n] != ".":
                continue
            after = game.press(ANA, str(n)).state
            assert isinstance(after, TicTacToe)
            if after.finished:
                assert after.result in ("O", "draw"), after.board
                outcomes.add(str(after.result))
            else:
                explore(after)

    explore(TicTacToe.start("game01", "en", ANA, vs_bot=True))
    assert outcomes == {"O", "draw"}


def test_best_move_as_x_never_loses_either() -> None:
    def worst_for_x(board: str) -> int:
        if winner(board) is not None or "." not in board:
            return {"X": 1, "O": -1, None: 0}[winner(board)]
        if to_move(board) == "X":
            n = best_move(board)
            return worst_for_x(board[:n] + "X" + board[n + 1 :])
        return min(
            worst_for_x(board[:n] + "O" + board[n + 1 :]) for n in range(9) if board[n] == "."
        )

    assert worst_for_x("." * 9) == 0


def test_bot_takes_a_win_and_blocks_a_loss() -> None:
    assert best_move("OO.XX....") == 5  # X to move: wins on 5 rather than blocking
    assert best_move("XX.OO....") == 2  # X to move: wins on 2
    assert best_move("XX.O.....") == 2  # O to move: must block 2


def test_vs_bot_game_answers_each_move_and_records_result() -> None:
    record = ttt_record(vs_bot=True)
    record = play(record, ANA, 0)
    game = record.game
    assert isinstance(game, TicTacToe)
    assert game.board.count("X") == 1 and game.board.count("O") == 1
    assert game.move == 1 and game.message_id == 5
    assert "Ana to move" in game.view().text


def test_two_players_in_a_group_first_other_presser_joins_as_o() -> None:
    record = ttt_record(vs_bot=False)
    assert refusal(record, BEN, cell(record, 4)) == NOT_YOUR_TURN.pick("en")
    record = play(record, ANA, 4)
    assert refusal(record, ANA, cell(record, 0)) == WAIT_OPPONENT.pick("en")
    record = play(record, BEN, 0)
    game = record.game
    assert isinstance(game, TicTacToe) and game.o == BEN
    assert refusal(record, CARL, cell(record, 1)) == NOT_PLAYER.pick("en")
    assert refusal(record, BEN, cell(record, 1)) == NOT_YOUR_TURN.pick("en")
    for user, n in ((ANA, 1), (BEN, 2), (ANA, 7)):  # X: 4, 1, 7 is a column
        record = play(record, user, n)
    game = record.game
    assert isinstance(game, TicTacToe)
    assert game.finished and game.result == "X"
    assert "Ana wins!" in game.view().text
    assert record.scores["1"].points == 1 and "2" not in record.scores


def test_forged_presses_change_nothing() -> None:
    record = ttt_record(vs_bot=True)
    record = play(record, ANA, 4)
    game = record.game
    assert isinstance(game, TicTacToe)
    taken = next(n for n in range(9) if game.board[n] == "O")
    before = record.dump()
    cases = {
        "occupied": (ANA, cell(record, taken), OCCUPIED.pick("en")),
        "not a player": (
            BEN,
            cell(record, 0 if game.board[0] == "." else 8),
            NOT_PLAYER.pick("en"),
        ),
        "stale move number": (ANA, f"t:game01:0:{taken}", STALE.pick("en")),
        "replaced game": (ANA, "t:other1:1:0", GAME_OVER.pick("en")),
        "wrong game kind": (ANA, "q:game01:1:0", GAME_OVER.pick("en")),
        "malformed": (ANA, "t:game01:1", MALFORMED.pick("en")),
        "bad cell": (ANA, "t:game01:1:9", "That is not a cell of the board."),
        "oversized": (ANA, "t:game01:1:0" + "x" * 60, MALFORMED.pick("en")),
        "junk": (ANA, "💥" * 10, MALFORMED.pick("en")),
    }
    for name, (user, data, reason) in cases.items():
        assert refusal(record, user, data) == reason, name
        assert record.dump() == before, name


def test_finished_game_refuses_its_buttons() -> None:
    record = ttt_record(vs_bot=False)
    for user, n in ((ANA, 0), (BEN, 3), (ANA, 1), (BEN, 4), (ANA, 2)):
        record = play(record, user, n)
    assert refusal(record, BEN, cell(record, 8)) == GAME_OVER.pick("en")


def test_no_game_refuses() -> None:
    assert refusal(ChatRecord(), ANA, "t:game01:0:0") == NO_GAME.pick("en")


# -- callback data -------------------------------------------------------------


def test_every_button_fits_telegrams_64_bytes_with_the_prefix() -> None:
    rng = random.Random(1)
    games: list[TicTacToe | Trivia | Hangman] = [
        TicTacToe.start("zzzzzz", "es", ANA, vs_bot=False).model_copy(update={"move": 9999}),
        Trivia.start("zzzzzz", "es", group=True, count=20, rng=rng),
        Hangman.start("zzzzzz", "es", rng=rng),
    ]
    for game in games:
        for row in game.view().rows:
            for label, data in row:
                assert 1 <= len(label) <= 64
                assert len((SERVICE_PREFIX + data).encode()) <= 64
                assert decode_press(data).gid == "zzzzzz"
    assert 64 - len("games:") == MAX_DATA_BYTES


def test_encoding_refuses_what_cannot_be_decoded() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        encode_press("t", "BAD", 0, "0")


# -- trivia --------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "es"])
def test_question_banks_have_100_valid_questions(language: str) -> None:
    bank = load_bank("es" if language == "es" else "en")
    assert len(bank) >= 100
    assert len({q.question for q in bank}) == len(bank)


def test_banks_are_parallel_translations() -> None:
    assert [q.answer for q in load_bank("en")] == [q.answer for q in load_bank("es")]


def answer_data(record: ChatRecord, *, right: bool) -> str:
    game = record.game
    assert isinstance(game, Trivia)
    q = game.question
    option = q.answer if right else (q.answer + 1) % 4
    return game.view().rows[option][0][1]


def test_private_trivia_round_scores_right_answers() -> None:
    game = Trivia.start("triv01", "es", group=False, count=3, rng=random.Random(3))
    record = engine.start(ChatRecord(), game).record
    assert "Pregunta 1/3" in game.view().text
    out = engine.press(record, ANA, answer_data(record, right=True), 9)
    assert out.notice is not None and out.notice.pick("es") == "✅ ¡Correcto!"
    out = engine.press(out.record, ANA, answer_data(out.record, right=False), 9)
    assert "Respuesta:" in out.view.text and "Pregunta 3/3" in out.view.text
    out = engine.press(out.record, ANA, answer_data(out.record, right=True), 9)
    assert out.record.game is not None and out.record.game.finished
    assert "Ana: 2" in out.view.text and out.view.rows == []
    assert out.record.scores["1"].points == 2
    assert "🥇 Ana — 2" in engine.leaderboard(out.record, "en")


def test_group_trivia_locks_out_wrong_answers_until_someone_is_right() -> None:
    game = Trivia.start("triv01", "en", group=True, count=2, rng=random.Random(4))
    record = engine.start(ChatRecord(), game).record
    wrong = engine.press(record, ANA, answer_data(record, right=False), 9)
    assert not wrong.redraw  # the board looks the same: no edit for Telegram to refuse
    record = wrong.record
    assert refusal(record, ANA, answer_data(record, right=True)) == ALREADY_TRIED.pick("en")
    out = engine.press(record, BEN, answer_data(record, right=True), 9)
    assert out.view.text.startswith("✅ Ben:")
    assert out.record.scores.keys() == {"2"}
    # The first question's buttons are stale now.
    assert refusal(out.record, CARL, answer_data(record, right=True)) == STALE.pick("en")


def test_trivia_skip_reveals_the_answer() -> None:
    game = Trivia.start("triv01", "en", group=True, count=2, rng=random.Random(5))
    record = engine.start(ChatRecord(), game).record
    right = game.question.options[game.question.answer]
    out = engine.press(record, ANA, "q:triv01:0:s", 9)
    assert f"Skipped. Answer: {right}" in out.view.text
    assert out.record.scores == {}


# -- hangman -------------------------------------------------------------------


def letter(record: ChatRecord, char: str) -> str:
    game = record.game
    assert isinstance(game, Hangman)
    return next(data for row in game.view().rows for label, data in row if label == char.upper())


def test_hangman_solved_by_guessing_its_letters() -> None:
    game = Hangman.start("hang01", "es", rng=random.Random(0)).model_copy(
        update={"word": "pingüino"}
    )
    record = engine.start(ChatRecord(), game).record
    assert "_ _ _ _ _ _ _ _" in game.view().text
    record = engine.press(record, ANA, letter(record, "u"), 3).record
    assert "_ _ _ _ Ü _ _ _" in record.game.view().text  # type: ignore[union-attr]
    assert refusal(record, BEN, "h:hang01:1:u") == "That letter was already tried."
    for char in "pingo":
        out = engine.press(record, BEN, letter(record, char), 3)
        record = out.record
    assert "¡Resuelto!" in out.view.text and out.view.rows == []
    assert record.scores["2"].points == 1


def test_hangman_lost_after_six_misses() -> None:
    game = Hangman.start("hang01", "en", rng=random.Random(0)).model_copy(update={"word": "jazz"})
    record = engine.start(ChatRecord(), game).record
    for char in "bcdefg"[:MAX_MISSES]:
        out = engine.press(record, ANA, letter(record, char), 3)
        record = out.record
    assert record.game is not None and record.game.finished
    # The losing press and the board say the same thing.
    assert out.notice is not None and out.notice.pick("en") == "💀 Out of lives. The word was JAZZ."
    assert out.view.text.splitlines()[-1] == out.notice.pick("en") and out.view.rows == []


def test_a_stopped_hangman_is_not_lost() -> None:
    game = Hangman.start("hang01", "en", rng=random.Random(0)).model_copy(update={"word": "jazz"})
    record = engine.press(engine.start(ChatRecord(), game).record, ANA, "h:hang01:0:b", 3).record
    stopped = engine.stop(record).game
    assert stopped is not None
    view = stopped.view()
    assert "Out of lives" not in view.text and view.text.endswith("The word was JAZZ.")
    assert view.rows == []


def test_word_lists_are_single_words() -> None:
    for language in ("en", "es"):
        words = load_words(language)
        assert len(words) >= 80 and all(w.isalpha() for w in words)


# -- guess the number ----------------------------------------------------------


def test_guess_higher_lower_until_found() -> None:
    record = engine.start(ChatRecord(), Guess.start("gues01", "en", rng=random.Random(2))).record
    low, high, notice = 1, 100, ""
    for _ in range(7):  # binary search needs at most 7 guesses for 1..100
        mid = (low + high) // 2
        out = engine.guess(record, ANA, str(mid))
        record = out.record
        assert out.notice is not None
        notice = out.notice.pick("en")
        if notice.startswith("⬆️"):
            low = mid + 1
        elif notice.startswith("⬇️"):
            high = mid - 1
        else:
            break
    assert notice.startswith("🎉 Ana got it")
    assert record.scores["1"].points == 1
    with pytest.raises(Refused):
        engine.guess(record, ANA, "5")  # the game is over


@pytest.mark.parametrize("text", ["", "abc", "0", "101", "-3", "5.5", "9" * 50])
def test_guess_refuses_what_is_not_a_number_in_range(text: str) -> None:
    record = engine.start(ChatRecord(), Guess.start("gues01", "en")).record
    with pytest.raises(Refused, match="whole number from 1 to 100"):
        engine.guess(record, ANA, text)


# -- records -------------------------------------------------------------------


def test_record_round_trips_through_json_and_forget_removes_scores() -> None:
    record = ttt_record(vs_bot=True).credit((ANA, BEN, ANA))
    again = ChatRecord.load(record.dump())
    assert again == record
    assert json.loads(record.dump())["game"]["game"] == "tictactoe"
    forgotten = engine.forget(again, ANA.id)
    assert forgotten is not None and set(forgotten.scores) == {"2"}
    assert engine.forget(forgotten, ANA.id) is None


def test_stop_ends_the_game_and_its_buttons() -> None:
    record = engine.stop(ttt_record(vs_bot=True))
    assert refusal(record, ANA, cell(record, 0)) == GAME_OVER.pick("en")
    with pytest.raises(Refused):
        engine.stop(record)


def test_bot_player_is_shown_by_name() -> None:
    assert BOT.name in ttt_record(vs_bot=True).game.view().text  # type: ignore[union-attr]


def test_a_redelivered_press_shows_the_board_without_moving_again() -> None:
    record = ttt_record(vs_bot=True)
    data = cell(record, 4)
    first = engine.press(record, ANA, data, 5, press_id="1:77")
    again = engine.press(first.record, ANA, data, 5, press_id="1:77")
    assert again.record is first.record and again.view == first.view
    assert refusal(first.record, ANA, data) == STALE.pick("en")  # the same button, pressed anew
