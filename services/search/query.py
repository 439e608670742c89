"""Our own query language, turned into a safe SQLite FTS5 MATCH expression.

User text never reaches FTS5 as written: it is parsed here into terms made
only of normalised words (letters and digits), and the MATCH expression is
built from those, each quoted. Anything we cannot make sense of is refused
with a :class:`QueryError` whose text tells the user how to fix the query.

Syntax (documented for users in ``/search`` help and docs/search.md)::

    word word        both words (stemmed: "songs" finds "song")
    "two words"      the exact phrase
    word*            words starting with "word" (at least 2 letters)
    a OR b           either (upper-case OR)
    -word, NOT word  leave out results with that word (or "-"phrase"")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from botbus.errors import ServiceError
from botbus.i18n import Catalog
from services.search.stopwords import is_stop_word
from services.search.text import WORD_RE, Highlighter, Stemmer, normalize

MAX_QUERY_CHARS = 300
MAX_TERMS = 12
MIN_PREFIX_CHARS = 2

# What users may type: a quoted phrase (optionally followed by * or preceded
# by -), or a run of non-space characters. Quotes are checked for balance
# before this runs, so every '"' here is part of a closed phrase.
_PIECE_RE = re.compile(r'(-?)"([^"]*)"(\*?)|(\S+)')

# The values a refusal's text may use ({max_chars} and so on); the texts
# themselves are the catalogue's ``query_<code>`` ids (locales/<language>.toml).
_VALUES: dict[str, int] = {
    "max_chars": MAX_QUERY_CHARS,
    "min_prefix": MIN_PREFIX_CHARS,
    "max_terms": MAX_TERMS,
}


@cache
def _catalog() -> Catalog:
    return Catalog.load("services.search")


class QueryError(ServiceError):
    """The user's query cannot be searched; the message says how to fix it.

    ``code`` names the problem; ``msg_id`` and ``values`` are its text in the
    search catalogue (``ctx.t(exc.msg_id, **exc.values)``), :meth:`text` the
    same for a language code.
    """

    def __init__(self, code: str) -> None:
        self.msg_id = f"query_{code}"
        if self.msg_id not in _catalog().ids:
            raise ValueError(f"query error {code!r} has no text ({self.msg_id} in locales/en.toml)")
        self.values: dict[str, Any] = dict(_VALUES)
        super().__init__(_catalog().text("en", self.msg_id, **self.values), code=code)

    def text(self, language: str) -> str:
        """The user-facing message in ``language`` (English if the catalogue has none)."""
        return _catalog().text(language, self.msg_id, **self.values)


@dataclass(frozen=True)
class Columns:
    """The FTS5 columns a term is matched in: original text and each stem shadow."""

    text: tuple[str, ...]
    en: tuple[str, ...]
    es: tuple[str, ...]


def _column_set(names: tuple[str, ...]) -> str:
    return "{" + " ".join(names) + "}"


@dataclass(frozen=True)
class Term:
    """One thing to look for: a word or a phrase, maybe a prefix."""

    words: tuple[str, ...]
    prefix: bool = False

    @property
    def is_stop_word(self) -> bool:
        """True for a single stop word searched as a word (not a phrase or a prefix)."""
        return len(self.words) == 1 and not self.prefix and is_stop_word(self.words[0])

    def match(self, columns: Columns, stemmer: Stemmer) -> str:
        """This term as an FTS5 expression over the text and stem columns."""
        phrase = '"' + " ".join(self.words) + '"'
        text = _column_set(columns.text)
        if self.prefix:
            # A prefix is not a word, so its stem means nothing: match text only.
            return f"({text} : {phrase} *)"
        stems = [stemmer.stems(word) for word in self.words]
        en = '"' + " ".join(s[0] for s in stems) + '"'
        es = '"' + " ".join(s[1] for s in stems) + '"'
        # The exact form needs no phrase of its own: its stems are in the
        # shadow columns, and every extra phrase costs bm25() a pass over
        # each matching row.
        return f"({_column_set(columns.en)} : {en} OR {_column_set(columns.es)} : {es})"


@dataclass(frozen=True)
class Query:
    """A parsed query: every group must match (a group is terms joined by OR)."""

    text: str
    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...] = ()

    def match(self, columns: Columns, stemmer: Stemmer) -> str:
        """The FTS5 MATCH expression, fully parenthesised."""
        parts = [
            "(" + " OR ".join(t.match(columns, stemmer) for t in group) + ")"
            for group in self.groups
        ]
        expression = "(" + " AND ".join(parts) + ")"
        for term in self.excluded:
            expression = f"({expression} NOT {term.match(columns, stemmer)})"
        return expression

    def without_stop_words(self) -> Query:
        """This query without the groups that are only stop words (if any group is left)."""
        kept = tuple(g for g in self.groups if not all(t.is_stop_word for t in g))
        if not kept or len(kept) == len(self.groups):
            return self
        return Query(self.text, kept, self.excluded)

    def corrected(self, corrections: dict[str, str]) -> Query:
        """This query with words replaced (normalised word -> replacement) and its text too."""
        if not corrections:
            return self

        def fix(term: Term) -> Term:
            words = tuple(normalize(corrections.get(w, w)) for w in term.words)
            return Term(words, term.prefix)

        text = WORD_RE.sub(lambda m: corrections.get(normalize(m.group()), m.group()), self.text)
        return Query(text, tuple(tuple(fix(t) for t in g) for g in self.groups), self.excluded)

    def group_matches(self, columns: Columns, stemmer: Stemmer) -> list[str]:
        """One FTS5 expression per group: what a relaxed search counts, group by group."""
        return ["(" + " OR ".join(t.match(columns, stemmer) for t in g) + ")" for g in self.groups]

    def relaxed_match(self, columns: Columns, stemmer: Stemmer) -> str:
        """Any of the groups (OR), still without the excluded terms."""
        expression = "(" + " OR ".join(self.group_matches(columns, stemmer)) + ")"
        for term in self.excluded:
            expression = f"({expression} NOT {term.match(columns, stemmer)})"
        return expression

    @property
    def minimum_should_match(self) -> int:
        """How many groups a relaxed result must match: one of two, half of more (rounded up)."""
        count = len(self.groups)
        return 1 if count <= 2 else -(-count // 2)

    def highlighter(self, stemmer: Stemmer) -> Highlighter:
        """What to highlight in the results of this query."""
        exact: set[str] = set()
        prefixes: list[str] = []
        for group in self.groups:
            for term in group:
                exact.update(term.words)
                if term.prefix:
                    prefixes.append(term.words[-1])
        whole = [w for w in exact if w not in prefixes]
        return Highlighter(
            exact=frozenset(exact),
            en=frozenset(stemmer.stems(w)[0] for w in whole),
            es=frozenset(stemmer.stems(w)[1] for w in whole),
            prefixes=tuple(prefixes),
            stemmer=stemmer,
        )


def _term(raw: str, prefix: bool) -> Term | None:
    found = [normalize(m.group()) for m in WORD_RE.finditer(raw)]
    if not found:
        return None
    if prefix and len(found[-1]) < MIN_PREFIX_CHARS:
        raise QueryError("prefix")
    return Term(tuple(found), prefix)


def parse_query(text: str) -> Query:
    """Parse user text into a :class:`Query`; raise :class:`QueryError` if unusable."""
    text = text.strip()
    if not text:
        raise QueryError("empty")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError("too_long")
    if text.count('"') % 2:
        raise QueryError("quotes")

    groups: list[list[Term]] = []
    excluded: list[Term] = []
    pending: str | None = None  # "OR" or "NOT" waiting for its right-hand side
    saw_words = False
    for match in _PIECE_RE.finditer(text):
        minus, quoted, star, bare = match.groups()
        if bare in ("OR", "AND", "NOT"):
            # An operator needs a left side (except NOT) and must not follow another.
            if pending is not None or (bare != "NOT" and not groups):
                raise QueryError("operator")
            pending = bare
            continue
        if bare is not None:
            negated = bare.startswith("-") and len(bare) > 1
            body = bare[1:] if negated else bare
            term = _term(body.rstrip("*"), prefix=body.endswith("*"))
        else:
            negated = bool(minus)
            term = _term(quoted, prefix=bool(star))
        if term is None:
            if pending is not None:
                raise QueryError("operator")
            continue
        saw_words = True
        if negated and pending == "OR":
            raise QueryError("operator")
        if negated or pending == "NOT":
            excluded.append(term)
        elif pending == "OR" and groups:
            groups[-1].append(term)
        else:
            groups.append([term])
        pending = None
    if pending is not None:
        raise QueryError("operator")
    if not saw_words:
        raise QueryError("no_words")
    if not groups:
        raise QueryError("only_excluded")
    if sum(len(g) for g in groups) + len(excluded) > MAX_TERMS:
        raise QueryError("too_many")
    return Query(text, tuple(tuple(g) for g in groups), tuple(excluded))
