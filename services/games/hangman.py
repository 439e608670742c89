"""Hangman: guess the word a letter at a time, from an inline keyboard of letters.

Everyone in the chat guesses together. Six wrong letters lose the game.
Accents do not need their own key: "a" reveals "á" (Spanish "ñ" has its own).
"""

from __future__ import annotations

import json
import random
import unicodedata
from functools import lru_cache
from typing import Literal

from services.games.base import DATA_DIR, GameBase, Language, Player, Pressed, Rows, View
from services.games.protocol import encode_press
from services.games.texts import Localized, Refused

MAX_MISSES = 6
_KEYS_PER_ROW = 7
_ALPHABETS: dict[str, str] = {
    "en": "abcdefghijklmnopqrstuvwxyz",
    "es": "abcdefghijklmnñopqrstuvwxyz",
}

BAD_LETTER = Localized("bad_letter")
ALREADY_GUESSED = Localized("already_guessed")
# The loss, said the same way on the board and in the losing press's notice.
OUT_OF_LIVES = Localized("out_of_lives")
THE_WORD_WAS = Localized("the_word_was")


def fold(char: str) -> str:
    """``char`` without its accent, except ``ñ`` which is a letter of its own."""
    if char in "ñÑ":
        return char.lower()
    decomposed = unicodedata.normalize("NFD", char.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=2)
def load_words(language: Language) -> tuple[str, ...]:
    """The word list of ``language`` (``data/hangman_<language>.json``)."""
    words = json.loads((DATA_DIR / f"hangman_{language}.json").read_text(encoding="utf-8"))
    if not isinstance(words, list) or not all(isinstance(w, str) and w.isalpha() for w in words):
        raise ValueError(f"hangman_{language}.json must be a JSON list of single words")
    return tuple(w.lower() for w in words)


class Hangman(GameBase):
    """A hangman game as stored in the chat's record."""

    game: Literal["hangman"] = "hangman"
    word: str
    guessed: str = ""  # letters tried, in order

    @classmethod
    def start(cls, gid: str, language: Language, *, rng: random.Random | None = None) -> Hangman:
        """A new game with a random word of ``language``."""
        return cls(
            gid=gid, language=language, word=(rng or random.Random()).choice(load_words(language))
        )

    @property
    def misses(self) -> list[str]:
        """Tried letters that are not in the word."""
        letters = {fold(c) for c in self.word}
        return [c for c in self.guessed if c not in letters]

    @property
    def lost(self) -> bool:
        """True once the misses used up every life (a stopped game is not lost)."""
        return len(self.misses) >= MAX_MISSES

    @property
    def solved(self) -> bool:
        """True once every letter of the word is revealed."""
        return all(fold(c) in self.guessed for c in self.word)

    def press(self, user: Player, arg: str) -> Pressed:
        """Try letter ``arg``; :class:`Refused` changes nothing."""
        if len(arg) != 1 or arg not in _ALPHABETS[self.language]:
            raise Refused(BAD_LETTER)
        if arg in self.guessed:
            raise Refused(ALREADY_GUESSED)
        state = self.model_copy(update={"guessed": self.guessed + arg, "move": self.move + 1})
        hit = any(fold(c) == arg for c in self.word)
        done = state.solved or state.lost
        state = state.model_copy(update={"finished": done})
        if hit:
            notice = Localized("letter_in_word")
        elif state.lost:
            notice = OUT_OF_LIVES.format(w=self.word.upper())
        else:
            notice = Localized("letter_not_in_word")
        points = (user,) if state.solved else ()
        return Pressed(state, notice.format(l=arg.upper()), points)

    def view(self) -> View:
        """The masked word, the misses so far, and the letters still to try."""
        lang = self.language
        shown = " ".join(c.upper() if fold(c) in self.guessed else "_" for c in self.word)
        misses = self.misses
        lives = "❤️" * (MAX_MISSES - len(misses)) + "🖤" * len(misses)
        lines = [f"🔤 {shown}", lives]
        if misses:
            label = Localized("misses").pick(lang)
            lines.append(f"{label}: {', '.join(m.upper() for m in misses)}")
        if self.solved:
            lines.append(Localized("solved").pick(lang))
        elif self.lost:
            lines.append(OUT_OF_LIVES.format(w=self.word.upper()).pick(lang))
        elif self.finished:  # stopped: not lost, but the word is no secret any more
            lines.append(THE_WORD_WAS.format(w=self.word.upper()).pick(lang))
        if self.finished:
            return View("\n".join(lines), [])
        keys = [c for c in _ALPHABETS[lang] if c not in self.guessed]
        rows: Rows = [
            [
                (c.upper(), encode_press("h", self.gid, self.move, c))
                for c in keys[i : i + _KEYS_PER_ROW]
            ]
            for i in range(0, len(keys), _KEYS_PER_ROW)
        ]
        return View("\n".join(lines), rows)
