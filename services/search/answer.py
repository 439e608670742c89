"""How /search answers a question: strict first, then corrected, then relaxed.

1. The query without its stop words ("how do I delete my data" looks for
   *delete* and *data*), every word required, documents in the user's
   language first.
2. Nothing found: words the knowledge base lacks are replaced by the closest
   word of the documents in the user's language (:mod:`.spelling`), and the
   corrected query is tried, every word required; the reply says which query
   it shows ("did you mean …").
3. Still nothing and more than one word: a relaxed query, any word may match
   but a result needs at least half of them (one of two), ranked by how many
   it holds, then by bm25.

Paging runs the same steps again on the same text, so every page comes from
the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.search.index import DocumentHit, ResultPage, SearchIndex
from services.search.query import Query


@dataclass(frozen=True)
class Answer:
    """A page of knowledge-base results and how it was found."""

    page: ResultPage[DocumentHit]
    query: Query  # the query the page answers (corrected, when words were)
    relaxed: bool  # True when not every word is in every result
    suggestion: str | None  # the corrected query text, when a word was corrected


def _correctable(query: Query) -> list[str]:
    return [t.words[0] for g in query.groups for t in g if len(t.words) == 1 and not t.prefix]


def answer(
    index: SearchIndex, query: Query, *, page: int, page_size: int, language: str | None
) -> Answer:
    """Run the steps above and return the first that finds something (or the last)."""
    content = query.without_stop_words()
    found = index.search_documents(content, page=page, page_size=page_size, language=language)
    if found.total:
        return Answer(found, content, relaxed=False, suggestion=None)
    # A word some document holds is no typo; the others are corrected toward
    # the words of the user's language, which is what its results show first.
    unknown = [w for w in _correctable(content) if not index.vocabulary().knows(w)]
    corrections = index.vocabulary(language).correct(unknown)
    fixed = content.corrected({c.word: c.suggestion for c in corrections})
    suggestion = fixed.text if corrections else None
    if corrections:
        found = index.search_documents(fixed, page=page, page_size=page_size, language=language)
        if found.total:
            return Answer(found, fixed, relaxed=False, suggestion=suggestion)
    if len(fixed.groups) > 1:
        found = index.search_documents(
            fixed, page=page, page_size=page_size, language=language, relaxed=True
        )
        if found.total:
            return Answer(found, fixed, relaxed=True, suggestion=suggestion)
    return Answer(found, fixed, relaxed=False, suggestion=suggestion)
