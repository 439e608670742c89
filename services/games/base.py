"""What every game shares: players, the stored state's common fields, views and results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from services.games.texts import Localized

Language = Literal["en", "es"]
DATA_DIR = Path(__file__).parent / "data"  # question bank and word lists shipped with us

# A whole number as people type it: ASCII digits only (str.isdigit() also accepts
# "²", which int() refuses) and few enough of them that int() stays cheap.
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,9}")

# (label, callback data without the service prefix); the service turns these
# into InlineButtons through the SDK, which adds and checks the prefix.
Button = tuple[str, str]
Rows = list[list[Button]]


class Player(BaseModel):
    """Someone taking part: Telegram user id and the name shown on the board."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    name: str


class GameBase(BaseModel):
    """Fields every stored game has.

    ``move`` is the number carried by the game's buttons: a press whose number
    differs from the stored one is stale (pressed on an outdated board, or replayed).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    gid: str
    language: Language
    move: int = 0
    finished: bool = False
    message_id: int | None = None  # the board message, once a receipt or a press told us
    started_by: str | None = None  # correlation id of the command that opened the board


class View(NamedTuple):
    """A board as the user sees it: message text and inline keyboard rows."""

    text: str
    rows: Rows


class Pressed(NamedTuple):
    """The outcome of an accepted move: the new state and a short notice for the presser.

    ``points`` lists players to credit on the chat's leaderboard.
    """

    state: GameBase
    notice: Localized | None = None
    points: tuple[Player, ...] = ()


def whole_number(text: str) -> int | None:
    """``text`` as an integer if it is one written plainly ("42", "-3"), else None."""
    value = text.strip()
    return int(value) if _WHOLE_NUMBER.fullmatch(value) else None
