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

NOT_A_NUMBER = Localized("not_a_number").format(low=LOW, high=HIGH)


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
            notice = Localized("name_got_it_n_found").format(name=user.name, n=number, m=move)
            return Pressed(state, notice, (user,))
        if number < self.secret:
            state = self.model_copy(update={"move": move, "low": max(self.low, number + 1)})
            notice = Localized("higher_than_n").format(n=number)
        else:
            state = self.model_copy(update={"move": move, "high": min(self.high, number - 1)})
            notice = Localized("lower_than_n").format(n=number)
        return Pressed(state, notice)

    def view(self) -> View:
        """Where the game stands: the range still open."""
        text = Localized("i_am_thinking_of_number").format(lo=self.low, hi=self.high)
        return View(text.pick(self.language), [])
