"""Guess the number: the bot thinks of a number, players guess with ``/guess N``.

Each guess is answered "higher" or "lower" until someone finds it.
"""

from __future__ import annotations

import random
from typing import Literal

from services.games.base import GameBase, Language, Player, Pressed, View, whole_number
from services.games.texts import Localized, Refused

LOW = 1
HIGH = 100

NOT_A_NUMBER = Localized(
    f"Guess a whole number from {LOW} to {HIGH}, e.g. /guess 50.",
    f"Di un número entero del {LOW} al {HIGH}, p. ej. /guess 50.",
)


class Guess(GameBase):
    """A guess-the-number game as stored in the chat's record; ``move`` counts guesses."""

    game: Literal["guess"] = "guess"
    secret: int
    low: int = LOW  # the range still possible, narrowed by each hint
    high: int = HIGH

    @classmethod
    def start(cls, gid: str, language: Language, *, rng: random.Random | None = None) -> Guess:
        """A new game with a secret number in ``LOW..HIGH``."""
        return cls(gid=gid, language=language, secret=(rng or random.Random()).randint(LOW, HIGH))

    def guess(self, user: Player, text: str) -> Pressed:
        """Apply ``user``'s guess ``text``; :class:`Refused` for anything but a number in range."""
        number = whole_number(text)
        if number is None or not LOW <= number <= HIGH:
            raise Refused(NOT_A_NUMBER)
        move = self.move + 1
        if number == self.secret:
            state = self.model_copy(
                update={"move": move, "finished": True, "low": number, "high": number}
            )
            notice = Localized(
                "🎉 {name} got it: {n}! Found in {m} guesses.",
                "🎉 ¡{name} lo ha adivinado: {n}! En {m} intentos.",
            ).format(name=user.name, n=number, m=move)
            return Pressed(state, notice, (user,))
        if number < self.secret:
            state = self.model_copy(update={"move": move, "low": max(self.low, number + 1)})
            notice = Localized("⬆️ Higher than {n}.", "⬆️ Más alto que {n}.").format(n=number)
        else:
            state = self.model_copy(update={"move": move, "high": min(self.high, number - 1)})
            notice = Localized("⬇️ Lower than {n}.", "⬇️ Más bajo que {n}.").format(n=number)
        return Pressed(state, notice)

    def view(self) -> View:
        """Where the game stands: the range still open."""
        text = Localized(
            "🔢 I am thinking of a number from {lo} to {hi}. Guess with /guess N.",
            "🔢 Estoy pensando en un número del {lo} al {hi}. Adivina con /guess N.",
        ).format(lo=self.low, hi=self.high)
        return View(text.pick(self.language), [])
