"""The games service's texts (ids of its catalogue), and the refusal raised on a bad press.

The texts themselves live in ``services/games/locales/<language>.toml``:
adding a language is adding a file (see :mod:`botbus.i18n`).
"""

from __future__ import annotations

from botbus.i18n import REFERENCE, Catalog, Text, catalog_of


def catalog() -> Catalog:
    """The games service's message catalogue (read once)."""
    return catalog_of(__package__ or "services.games")


class Localized(Text):
    """One user-facing text of the games catalogue, filled in when shown."""

    package = __package__ or "services.games"


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
