"""The query parser: what users may type, and the clear errors for what they may not."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botbus.errors import ServiceError
from services.search.query import MAX_TERMS, Columns, QueryError, parse_query
from services.search.text import Stemmer


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ('"unbalanced quote', "quotes"),
        ('nats "streams', "quotes"),
        ("OR", "operator"),
        ("AND", "operator"),
        ("NOT", "operator"),
        ("OR nats", "operator"),
        ("nats OR", "operator"),
        ("nats OR OR streams", "operator"),
        ("nats AND NOT", "operator"),
        ("x" * 10_000, "too_long"),
        ("!!! ??? ...", "no_words"),
        ("-nats", "only_excluded"),
        ("NOT nats", "only_excluded"),
        ("a*", "prefix"),
        (" ".join(["word"] * (MAX_TERMS + 1)), "too_many"),
    ],
)
def test_bad_queries_get_a_clear_error(text: str, code: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_query(text)
    assert info.value.code == code
    # The SDK replies with ServiceError.user_message, so it must be readable text.
    assert isinstance(info.value, ServiceError)
    assert len(info.value.user_message) > 20


def test_errors_speak_spanish() -> None:
    with pytest.raises(QueryError) as info:
        parse_query('"sin cerrar')
    assert info.value.msg_id == "query_quotes"
    assert info.value.text("es") == (
        'Falta cerrar unas comillas: pon las frases entre dos ", p. ej. "clave valor".'
    )
    assert info.value.text("en") == (
        'A quote is not closed: put phrases between two " marks, e.g. "key value".'
    )
    # A language without a file (or without the id) falls back to English.
    assert info.value.text("pt") == info.value.text("en") == info.value.user_message


def test_error_texts_fill_in_the_limits() -> None:
    with pytest.raises(QueryError) as info:
        parse_query(" ".join(["word"] * (MAX_TERMS + 1)))
    assert info.value.text("en") == f"Too many words: use at most {MAX_TERMS}."
    assert info.value.text("es") == f"Demasiadas palabras: usa como máximo {MAX_TERMS}."
    with pytest.raises(QueryError) as info:
        parse_query("x" * 10_000)
    assert info.value.text("en") == "That query is too long: keep it under 300 characters."


def test_words_are_normalised_and_grouped() -> None:
    query = parse_query('Canción "Key Value" stre* cats OR dogs -spam NOT eggs')
    assert [[t.words for t in g] for g in query.groups] == [
        [("cancion",)],
        [("key", "value")],
        [("stre",)],
        [("cats",), ("dogs",)],
    ]
    assert query.groups[2][0].prefix
    assert [t.words for t in query.excluded] == [("spam",), ("eggs",)]


# Any text at all must either parse into an expression FTS5 accepts or raise
# QueryError: an sqlite error must never reach the user.
_FTS = sqlite3.connect(":memory:")
_FTS.execute(
    "CREATE VIRTUAL TABLE t USING fts5(title, body, ten, ben, tes, bes, "
    "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')"
)
_FTS.execute("INSERT INTO t VALUES ('a title', 'some body text', 'a', 'b', 'c', 'd')")
_COLUMNS = Columns(("title", "body"), ("ten", "ben"), ("tes", "bes"))
_STEMMER = Stemmer()
_ALPHABET = st.sampled_from(
    [*list("abcñé \"*-()OR NOT AND:^{}+.,'\\"), "OR", "NOT", "AND", "NEAR", '"', "*"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=25).map("".join) | st.text(max_size=60))
def test_any_text_is_safe(text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError:
        return
    expression = query.match(_COLUMNS, _STEMMER)
    _FTS.execute("SELECT rowid FROM t WHERE t MATCH ?", (expression,)).fetchall()
