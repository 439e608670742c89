"""Tic-tac-toe: against a perfect-play bot, or two members of a group.

The board is a 9-character string of ``.``, ``X`` and ``O`` (cells 0-8, row by
row). X always starts: the player who opened the game. Against the bot, the bot
is O and answers every move at once; in a group, O is the first other member
who presses a cell when it is O's turn.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from services.games.base import GameBase, Player, Pressed, Rows, View
from services.games.protocol import encode_press
from services.games.texts import Localized, Refused

EMPTY_BOARD = "." * 9
BOT = Player(id=0, name="🤖 Bot")
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
# Centre, corners, edges: among equally good moves the bot plays the natural one.
_PREFERENCE = (4, 0, 2, 6, 8, 1, 3, 5, 7)
_LABELS = {".": "·", "X": "❌", "O": "⭕"}

Mark = Literal["X", "O"]

BAD_CELL = Localized("bad_cell")
OCCUPIED = Localized("occupied")
NOT_PLAYER = Localized("not_player")
NOT_YOUR_TURN = Localized("not_your_turn")
WAIT_OPPONENT = Localized("wait_opponent")


def winner(board: str) -> Mark | None:
    """The mark holding a full line, if any."""
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return "X" if board[a] == "X" else "O"
    return None


def to_move(board: str) -> Mark:
    """Whose turn it is (X starts)."""
    return "X" if board.count("X") == board.count("O") else "O"


@cache
def _value(board: str) -> int:
    """Minimax value for X: positive if X wins with best play (sooner is larger), 0 a draw."""
    won = winner(board)
    empty = board.count(".")
    if won is not None:
        return (empty + 1) if won == "X" else -(empty + 1)
    if empty == 0:
        return 0
    mark = to_move(board)
    values = [_value(_place(board, cell, mark)) for cell in range(9) if board[cell] == "."]
    return max(values) if mark == "X" else min(values)


def _place(board: str, cell: int, mark: str) -> str:
    return board[:cell] + mark + board[cell + 1 :]


def best_move(board: str) -> int:
    """The perfect-play move for whoever is to move (never loses)."""
    mark = to_move(board)
    sign = 1 if mark == "X" else -1
    free = [cell for cell in _PREFERENCE if board[cell] == "."]
    if not free or winner(board) is not None:
        raise ValueError(f"no move on a finished board {board!r}")
    return max(free, key=lambda cell: sign * _value(_place(board, cell, mark)))


class TicTacToe(GameBase):
    """A tic-tac-toe game as stored in the chat's record."""

    game: Literal["tictactoe"] = "tictactoe"
    board: str = EMPTY_BOARD
    x: Player
    o: Player | None = None
    vs_bot: bool = True
    result: Literal["X", "O", "draw"] | None = None

    @classmethod
    def start(
        cls, gid: str, language: Literal["en", "es"], starter: Player, *, vs_bot: bool
    ) -> TicTacToe:
        """A new game opened by ``starter`` (X)."""
        return cls(gid=gid, language=language, x=starter, o=BOT if vs_bot else None, vs_bot=vs_bot)

    def press(self, user: Player, arg: str) -> Pressed:
        """Apply ``user`` pressing cell ``arg``; :class:`Refused` leaves the game unchanged."""
        if not arg.isdigit() or not 0 <= int(arg) <= 8:
            raise Refused(BAD_CELL)
        cell = int(arg)
        mark = to_move(self.board)
        o = self.o
        if mark == "X":
            if user.id != self.x.id:
                raise Refused(NOT_YOUR_TURN if self._plays(user) or o is None else NOT_PLAYER)
        elif o is None:
            if user.id == self.x.id:
                raise Refused(WAIT_OPPONENT)
            o = user  # the first other member to press joins as O
        elif user.id != o.id:
            raise Refused(NOT_YOUR_TURN if self._plays(user) else NOT_PLAYER)
        if self.board[cell] != ".":
            raise Refused(OCCUPIED)
        board = _place(self.board, cell, mark)
        if self.vs_bot and winner(board) is None and "." in board:
            board = _place(board, best_move(board), "O")
        result = _result(board)
        state = self.model_copy(
            update={
                "board": board,
                "o": o,
                "move": self.move + 1,
                "result": result,
                "finished": result is not None,
            }
        )
        won_by = {"X": self.x, "O": o}.get(result or "")
        # A human winner scores on the chat's leaderboard (the bot does not).
        points = (won_by,) if won_by is not None and won_by != BOT else ()
        return Pressed(state, None, points)

    def _plays(self, user: Player) -> bool:
        return user.id == self.x.id or (self.o is not None and user.id == self.o.id)

    def view(self) -> View:
        """The board: a status line and a 3x3 keyboard."""
        rows: Rows = [
            [
                (_LABELS[self.board[cell]], encode_press("t", self.gid, self.move, str(cell)))
                for cell in range(row * 3, row * 3 + 3)
            ]
            for row in range(3)
        ]
        o_name = self.o.name if self.o else "?"
        header = f"❌ {self.x.name}  vs  ⭕ {o_name}"
        status = self._status().pick(self.language)
        if self.finished:
            # No buttons on a finished board: it is drawn in the text instead.
            grid = ["".join(_LABELS[c] for c in self.board[r * 3 : r * 3 + 3]) for r in range(3)]
            return View("\n".join([header, *grid, status]), [])
        return View(f"{header}\n{status}", rows)

    def _status(self) -> Localized:
        if self.result == "draw":
            return Localized("draw")
        if self.result is not None:
            player = self.x if self.result == "X" else self.o
            name = player.name if player else "?"
            return Localized("name_wins").format(name=name)
        if to_move(self.board) == "X":
            return Localized("name_to_move_x").format(name=self.x.name)
        if self.o is None:
            return Localized("waiting_for_an_opponent_press")
        return Localized("name_to_move_o").format(name=self.o.name)


def _result(board: str) -> Literal["X", "O", "draw"] | None:
    won = winner(board)
    if won is not None:
        return won
    return "draw" if "." not in board else None
