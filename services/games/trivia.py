"""Trivia: multiple-choice questions from the bank shipped in ``data/``.

A round asks a few questions. In a private chat the player answers each one
and the next follows. In a group anyone may answer, once per question: the
first right answer scores a point and moves on, a wrong answer locks that
member out of the question, and "Skip" reveals the answer.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from services.games.base import DATA_DIR, GameBase, Language, Player, Pressed, Rows, View
from services.games.protocol import encode_press
from services.games.texts import Localized, Refused

DEFAULT_ROUND = 5  # questions
MAX_ROUND = 20  # questions
OPTIONS = 4
_LETTERS = "ABCD"
SKIP = "s"

BAD_OPTION = Localized("bad_option")
ALREADY_TRIED = Localized("already_tried")
RIGHT = Localized("right")
WRONG = Localized("wrong")


class Question(BaseModel):
    """One question of the bank: the text, four options and the index of the right one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str = Field(min_length=1, max_length=300)
    options: tuple[str, str, str, str]
    answer: int = Field(ge=0, lt=OPTIONS)

    @field_validator("options")
    @classmethod
    def _distinct(cls, value: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
        if len(set(value)) != OPTIONS or not all(value):
            raise ValueError("a question needs four distinct, non-empty options")
        return value


_bank_adapter = TypeAdapter(list[Question])


@lru_cache(maxsize=2)
def load_bank(language: Language) -> tuple[Question, ...]:
    """The question bank of ``language`` (``data/trivia_<language>.json``)."""
    path = DATA_DIR / f"trivia_{language}.json"
    return tuple(_bank_adapter.validate_json(path.read_bytes()))


class Trivia(GameBase):
    """A trivia round as stored in the chat's record; ``move`` is the question number."""

    game: Literal["trivia"] = "trivia"
    group: bool
    questions: tuple[int, ...]  # indices into the bank of ``language``
    tried: tuple[int, ...] = ()  # users who already answered the current question
    last: str = ""  # what happened to the previous question, shown above the next one
    round_points: dict[str, int] = Field(default_factory=dict)  # str(user id) -> points
    names: dict[str, str] = Field(default_factory=dict)  # str(user id) -> name shown

    @classmethod
    def start(
        cls,
        gid: str,
        language: Language,
        *,
        group: bool,
        count: int = DEFAULT_ROUND,
        rng: random.Random | None = None,
    ) -> Trivia:
        """A new round of ``count`` distinct random questions."""
        bank = load_bank(language)
        count = max(1, min(count, MAX_ROUND, len(bank)))
        picked = (rng or random.Random()).sample(range(len(bank)), count)
        return cls(gid=gid, language=language, group=group, questions=tuple(picked))

    @property
    def question(self) -> Question:
        """The question being asked (the last one once the round is over)."""
        bank = load_bank(self.language)
        return bank[self.questions[min(self.move, len(self.questions) - 1)]]

    def press(self, user: Player, arg: str) -> Pressed:
        """Apply an answer (``"0"``-``"3"``) or a skip; :class:`Refused` changes nothing."""
        question = self.question
        right = question.options[question.answer]
        if arg == SKIP:
            line = Localized("skipped_answer_right")
            return Pressed(self._next(line.format(right=right)))
        if not arg.isdigit() or not 0 <= int(arg) < OPTIONS:
            raise Refused(BAD_OPTION)
        if user.id in self.tried:
            raise Refused(ALREADY_TRIED)
        if int(arg) == question.answer:
            line = Localized("name_right").format(name=user.name, right=right)
            uid = str(user.id)
            points = {**self.round_points, uid: self.round_points.get(uid, 0) + 1}
            names = {**self.names, uid: user.name}
            return Pressed(self._next(line, round_points=points, names=names), RIGHT, (user,))
        if self.group:
            # Others may still answer; this member is out for this question.
            return Pressed(self.model_copy(update={"tried": (*self.tried, user.id)}), WRONG)
        line = Localized("wrong_answer_by")
        return Pressed(self._next(line.format(name=user.name, right=right)), WRONG)

    def _next(self, line: Localized, **update: object) -> Trivia:
        move = self.move + 1
        return self.model_copy(
            update={
                "move": move,
                "tried": (),
                "last": line.pick(self.language),
                "finished": move >= len(self.questions),
                **update,
            }
        )

    def view(self) -> View:
        """The question and its four answers, or the round's results once over."""
        lang = self.language
        head = [self.last] if self.last else []
        if self.finished:
            ranking = sorted(
                ((self.names.get(uid, uid), points) for uid, points in self.round_points.items()),
                key=lambda item: (-item[1], item[0]),
            )
            lines = [f"{name}: {points}" for name, points in ranking] or [
                Localized("nobody_scored").pick(lang)
            ]
            title = Localized("round_over").pick(lang)
            more = Localized("trivia_plays_again_leaderboard_shows").pick(lang)
            return View("\n".join([*head, "", title, *lines, "", more]).strip(), [])
        question = self.question
        number = Localized("question_n_total").format(n=self.move + 1, total=len(self.questions))
        text = "\n".join([*head, "", f"❓ {number.pick(lang)}", question.question]).strip()
        rows: Rows = [
            [(f"{_LETTERS[i]}. {option}"[:64], encode_press("q", self.gid, self.move, str(i)))]
            for i, option in enumerate(question.options)
        ]
        skip = Localized("skip").pick(lang)
        rows.append([(skip, encode_press("q", self.gid, self.move, SKIP))])
        return View(text, rows)
