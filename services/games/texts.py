"""The games service's texts (ids of its catalogue), and the refusal raised on a bad press.

The texts themselves live in ``services/games/locales/<language>.toml``:
adding a language is adding a file (see :mod:`botbus.i18n`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

from botbus.i18n import REFERENCE, Catalog


@cache
def catalog() -> Catalog:
    """The games service's message catalogue (read once)."""
    return Catalog.load(__package__ or "services.games")


@dataclass(frozen=True)
class Localized:
    """One user-facing text: a message id of the catalogue and its placeholders' values."""

    msg_id: str
    values: Mapping[str, object] = field(default_factory=dict)

    def pick(self, language: str) -> str:
        """The text in ``language`` (English where that language has no file or no such id)."""
        return catalog().text(language, self.msg_id, **self.values)

    def format(self, **values: object) -> Localized:
        """The same text with (more of) its ``{name}`` placeholders' values."""
        return Localized(self.msg_id, {**self.values, **values})


class Refused(Exception):
    """A button press or move the server will not apply; ``reason`` is shown to the user.

    Raised before any state changes, so refusing is always safe to retry.
    """

    def __init__(self, reason: Localized) -> None:
        super().__init__(reason.pick(REFERENCE))
        self.reason = reason


# Refusals shared by every game.
NO_GAME = Localized("no_game")
GAME_OVER = Localized("game_over")
STALE = Localized("stale")
MALFORMED = Localized("malformed")
