"""Texts in both languages the bot speaks, and the refusal raised on a bad press."""

from __future__ import annotations

from typing import NamedTuple


class Localized(NamedTuple):
    """An English and a Spanish version of one user-facing text."""

    en: str
    es: str

    def pick(self, language: str) -> str:
        """The text in ``language`` ("es" gives Spanish, anything else English)."""
        return self.es if language == "es" else self.en

    def format(self, **values: object) -> Localized:
        """Both versions with ``{name}`` placeholders filled in."""
        return Localized(self.en.format(**values), self.es.format(**values))


class Refused(Exception):
    """A button press or move the server will not apply; ``reason`` is shown to the user.

    Raised before any state changes, so refusing is always safe to retry.
    """

    def __init__(self, reason: Localized) -> None:
        super().__init__(reason.en)
        self.reason = reason


# Refusals shared by every game.
NO_GAME = Localized(
    "No game is running here. Start one with /trivia, /tictactoe, /hangman or /guess.",
    "No hay ninguna partida aquí. Empieza una con /trivia, /tictactoe, /hangman o /guess.",
)
GAME_OVER = Localized("This game is over.", "Esta partida ha terminado.")
STALE = Localized(
    "Too late: the board has changed since.", "Demasiado tarde: el tablero ya ha cambiado."
)
MALFORMED = Localized("This button is not valid.", "Este botón no es válido.")
