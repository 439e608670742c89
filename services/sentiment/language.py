"""Which of the two supported languages a message is written in.

Lingua (``lingua-language-detector``) restricted to English and Spanish: the
smaller model set is faster and cannot answer a third language we could not
score anyway. Short chat messages are often ambiguous ("no", "ok", "lol"):
when lingua's confidence is low, the user's own language (Telegram's
``language_code``) decides.
"""

from __future__ import annotations

from typing import Literal

from lingua import Language, LanguageDetectorBuilder

Lang = Literal["en", "es"]

# Below this confidence the user's language_code is a better guess than lingua's.
HINT_WINS_BELOW = 0.75
DEFAULT_LANGUAGE: Lang = "en"

_CODES: dict[Language, Lang] = {Language.ENGLISH: "en", Language.SPANISH: "es"}


def hint_language(language_code: str | None) -> Lang | None:
    """``"es-AR"`` -> ``"es"``; None for a language we do not score."""
    if not language_code:
        return None
    base = language_code.split("-")[0].split("_")[0].lower()
    if base == "en":
        return "en"
    if base == "es":
        return "es"
    return None


class LanguageGuesser:
    """English/Spanish detection per message, with the user's language as a hint."""

    def __init__(self, *, hint_wins_below: float = HINT_WINS_BELOW) -> None:
        self._detector = (
            LanguageDetectorBuilder.from_languages(*_CODES).with_preloaded_language_models().build()
        )
        self._hint_wins_below = hint_wins_below

    def guess(self, text: str, language_code: str | None = None) -> Lang:
        """The language of ``text``; ``language_code`` wins when lingua is unsure."""
        hint = hint_language(language_code)
        if not any(ch.isalpha() for ch in text):
            return hint or DEFAULT_LANGUAGE
        values = self._detector.compute_language_confidence_values(text)
        best = values[0] if values else None
        if best is None or (hint is not None and best.value < self._hint_wins_below):
            return hint or DEFAULT_LANGUAGE
        return _CODES[best.language]
