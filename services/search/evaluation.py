"""How well /search answers questions: recall@3 and mean reciprocal rank on a question set.

A question set is JSON lines ``{"q": ..., "lang": "en"|"es", "kind": ...,
"expect": [titles]}``: a question as a user would type it (natural
questions, typos, keywords), the user's language, and the titles of the
documents that answer it (any of them counts). ``tests/services/search/
questions.jsonl`` is the set for the bundled knowledge base (``docs/kb``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.search.answer import answer
from services.search.index import SearchIndex
from services.search.query import parse_query

CUTOFF = 3  # recall@3: an expected document among the first three results


@dataclass(frozen=True, slots=True)
class Question:
    """A question, its asker's language, its kind and the titles that answer it."""

    text: str
    language: str
    kind: str
    expect: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ranked:
    """Where the first expected document came (1-based; None if not in the results)."""

    question: Question
    rank: int | None
    titles: tuple[str, ...]


def load_questions(path: Path) -> list[Question]:
    """The questions of a JSON-lines file; a malformed line is a ValueError naming it."""
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(
                Question(row["q"], row["lang"], row.get("kind", ""), tuple(row["expect"]))
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: expected q, lang and expect ({exc})") from exc
    return questions


def rank(index: SearchIndex, question: Question, depth: int = 10) -> Ranked:
    """Ask ``question`` as /search does and find where its answer ranks."""
    found = answer(
        index, parse_query(question.text), page=0, page_size=depth, language=question.language
    )
    titles = tuple(hit.title for hit in found.page.hits)
    position = next((i for i, t in enumerate(titles, 1) if t in question.expect), None)
    return Ranked(question, position, titles)


def recall_at(results: list[Ranked], cutoff: int = CUTOFF) -> float:
    """Share of questions whose answer is among the first ``cutoff`` results."""
    return sum(r.rank is not None and r.rank <= cutoff for r in results) / len(results)


def mean_reciprocal_rank(results: list[Ranked]) -> float:
    """Mean of 1/rank of the first answer (0 when it is not found)."""
    return sum(1 / r.rank for r in results if r.rank) / len(results)
