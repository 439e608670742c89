"""One chat's stored record, and the authoritative checks every press goes through.

A chat's record (one KV value) holds its current game and its leaderboard, so
a move and the point it scores are written together by one compare-and-set.
Every function here is pure: it takes a record and returns a new one, or
raises :class:`~services.games.texts.Refused` and changes nothing.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from services.games.base import Player, View
from services.games.guess import Guess
from services.games.hangman import Hangman
from services.games.protocol import decode_press
from services.games.texts import GAME_OVER, NO_GAME, STALE, Localized, Refused
from services.games.tictactoe import TicTacToe
from services.games.trivia import Trivia

LEADERBOARD_SIZE = 10
_KIND_OF_GAME = {"t": "tictactoe", "q": "trivia", "h": "hangman"}

Game = Annotated[TicTacToe | Trivia | Hangman | Guess, Field(discriminator="game")]


class Score(BaseModel):
    """One member's points in one chat."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    points: int = 0


class ChatRecord(BaseModel):
    """Everything the service stores about one chat (one KV value)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    game: Game | None = None
    scores: dict[str, Score] = Field(default_factory=dict)  # str(user id) -> score
    # The inbound id of the last press applied: a redelivery of that same press
    # (the service crashed after writing, before answering) re-shows the board
    # instead of being refused as stale.
    last_press: str | None = None

    def dump(self) -> bytes:
        """The JSON stored in the KV bucket."""
        return self.model_dump_json().encode()

    @classmethod
    def load(cls, data: bytes | None) -> ChatRecord:
        """Decode a stored record (an absent key is an empty record)."""
        return cls.model_validate_json(data) if data else cls()

    def credit(self, players: tuple[Player, ...]) -> ChatRecord:
        """The record with one point more for each of ``players``."""
        if not players:
            return self
        scores = dict(self.scores)
        for player in players:
            old = scores.get(str(player.id), Score(name=player.name))
            scores[str(player.id)] = Score(name=player.name, points=old.points + 1)
        return self.model_copy(update={"scores": scores})


class Outcome(NamedTuple):
    """An accepted press or guess: the record to store, the board to show, a notice.

    ``redraw`` is False when the board looks exactly as before (e.g. a wrong
    trivia answer in a group): Telegram refuses an edit that changes nothing.
    """

    record: ChatRecord
    view: View
    notice: Localized | None
    redraw: bool = True


def start(record: ChatRecord, game: TicTacToe | Trivia | Hangman | Guess) -> Outcome:
    """Start ``game`` in the chat, replacing any game still running (its buttons go stale)."""
    updated = record.model_copy(update={"game": game})
    return Outcome(updated, game.view(), None)


def press(
    record: ChatRecord,
    user: Player,
    data: str,
    message_id: int | None,
    press_id: str | None = None,
) -> Outcome:
    """Validate and apply a button press (callback data after ``"games:"``).

    ``press_id`` identifies the press (its correlation id): pressing is
    idempotent, a second delivery of the same press returns the current board.

    Refused, with nothing changed: malformed or oversized data, no game, a
    button of another (finished or replaced) game, a stale move number, and
    whatever the game itself forbids (occupied cell, not a player, not your turn...).
    """
    parsed = decode_press(data)
    game = record.game
    if game is None:
        raise Refused(NO_GAME)
    if press_id is not None and press_id == record.last_press:
        return Outcome(record, game.view(), None)
    if isinstance(game, Guess) or game.game != _KIND_OF_GAME[parsed.kind] or game.gid != parsed.gid:
        raise Refused(GAME_OVER)
    if game.finished:
        raise Refused(GAME_OVER)
    if parsed.move != game.move:
        raise Refused(STALE)
    pressed = game.press(user, parsed.arg)
    state = pressed.state
    if message_id is not None and state.message_id != message_id:
        state = state.model_copy(update={"message_id": message_id})
    assert isinstance(state, TicTacToe | Trivia | Hangman)  # a game returns its own type
    updated = record.model_copy(update={"game": state, "last_press": press_id})
    view = state.view()
    return Outcome(updated.credit(pressed.points), view, pressed.notice, view != game.view())


def guess(record: ChatRecord, user: Player, text: str) -> Outcome:
    """Apply ``/guess N`` to the chat's guess-the-number game."""
    game = record.game
    if not isinstance(game, Guess) or game.finished:
        raise Refused(Localized("no_number_game_running_here"))
    pressed = game.guess(user, text)
    assert isinstance(pressed.state, Guess)
    updated = record.model_copy(update={"game": pressed.state}).credit(pressed.points)
    return Outcome(updated, pressed.state.view(), pressed.notice)


def stop(record: ChatRecord) -> ChatRecord:
    """The record with its game ended (:class:`Refused` if none is running)."""
    if record.game is None or record.game.finished:
        raise Refused(NO_GAME)
    return record.model_copy(update={"game": record.game.model_copy(update={"finished": True})})


def leaderboard(record: ChatRecord, language: str) -> str:
    """The chat's top scores as a message."""
    ranking = sorted(record.scores.values(), key=lambda s: (-s.points, s.name))[:LEADERBOARD_SIZE]
    if not ranking:
        return Localized("no_scores_yet_here_win").pick(language)
    medals = ["🥇", "🥈", "🥉"]
    lines = [Localized("leaderboard_title").pick(language)]
    for rank, score in enumerate(ranking):
        badge = medals[rank] if rank < len(medals) else f"{rank + 1}."
        lines.append(f"{badge} {score.name} — {score.points}")
    return "\n".join(lines)


def forget(record: ChatRecord, user_id: int) -> ChatRecord | None:
    """The record without ``user_id``'s score, or None if it held none."""
    if str(user_id) not in record.scores:
        return None
    scores = {uid: s for uid, s in record.scores.items() if uid != str(user_id)}
    return record.model_copy(update={"scores": scores})
