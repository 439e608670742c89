"""A text in both languages the bot speaks, for errors raised far from a handler."""

from __future__ import annotations

from typing import NamedTuple


class Localized(NamedTuple):
    """An English and a Spanish version of one user-facing text."""

    en: str
    es: str

    def pick(self, language: str) -> str:
        """The text in ``language`` ("es" gives Spanish, anything else English)."""
        return self.es if language == "es" else self.en


class UserInputError(ValueError):
    """Input a user typed was refused; ``text`` tells them what to type instead."""

    def __init__(self, text: Localized) -> None:
        super().__init__(text.en)
        self.text = text
