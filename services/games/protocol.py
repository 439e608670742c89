"""The compact callback-data format of game buttons.

``<kind>:<game id>:<move number>:<argument>``, e.g. ``t:k3x9qa:4:8`` (tic-tac-toe,
game ``k3x9qa``, move 4, cell 8). The SDK prepends ``"games:"``, so the whole
string Telegram stores stays within its 64-byte limit. The game id detects a
button from a finished or replaced game, the move number a replayed or stale
press; both are checked against the stored state, never trusted.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Literal, NamedTuple

from botbus.models import MAX_CALLBACK_DATA_BYTES
from services.games.texts import MALFORMED, Refused

SERVICE_PREFIX = "games:"
MAX_DATA_BYTES = MAX_CALLBACK_DATA_BYTES - len(SERVICE_PREFIX.encode())
GAME_ID_LENGTH = 6
MAX_MOVE = 9999

Kind = Literal["t", "q", "h"]
_KIND_OF: dict[str, Kind] = {"t": "t", "q": "q", "h": "h"}
_ALPHABET = string.ascii_lowercase + string.digits
_DATA_RE = re.compile(
    rf"^(?P<kind>[tqh]):(?P<gid>[a-z0-9]{{{GAME_ID_LENGTH}}}):(?P<move>\d{{1,4}}):(?P<arg>[a-z0-9ñ]{{1,4}})$"
)


class Press(NamedTuple):
    """One decoded button press (not yet validated against any game)."""

    kind: Kind
    gid: str
    move: int
    arg: str


def new_game_id() -> str:
    """A fresh random game id (36**6 ≈ 2e9 values, so a replaced game's buttons never match)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(GAME_ID_LENGTH))


def encode_press(kind: Kind, gid: str, move: int, arg: str) -> str:
    """Callback data (without the service prefix) for one button."""
    data = f"{kind}:{gid}:{move}:{arg}"
    if not _DATA_RE.match(data) or len(data.encode()) > MAX_DATA_BYTES:
        raise ValueError(f"cannot encode button data {data!r}: kind, id, move or argument invalid")
    return data


def decode_press(data: str) -> Press:
    """Parse callback data; :class:`Refused` for anything malformed or oversized."""
    if len(data.encode()) > MAX_DATA_BYTES:
        raise Refused(MALFORMED)
    match = _DATA_RE.match(data)
    if match is None:
        raise Refused(MALFORMED)
    return Press(_KIND_OF[match["kind"]], match["gid"], int(match["move"]), match["arg"])
