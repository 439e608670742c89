"""How /search answers questions: stop words, relaxed queries, "did you mean", languages."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botbus.i18n import Catalog
from services.search.answer import answer
from services.search.evaluation import load_questions, mean_reciprocal_rank, rank, recall_at
from services.search.index import SearchIndex
from services.search.indexing import index_path
from services.search.kb import Document, find_files, load_file, plain_text
from services.search.query import QueryError, parse_query
from services.search.render import nothing_found, render_documents
from services.search.spelling import Vocabulary, edit_distance
from services.search.text import Stemmer

KB = Path(__file__).parents[3] / "docs" / "kb"
QUESTIONS = Path(__file__).parent / "questions.jsonl"


CATALOG = Catalog.load("services.search")


def english(msg_id: str, /, **values: object) -> str:
    return CATALOG.text("en", msg_id, **values)


def spanish(msg_id: str, /, **values: object) -> str:
    return CATALOG.text("es", msg_id, **values)


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SearchIndex]:
    with SearchIndex(tmp_path / "index.sqlite3") as ix:
        ix.replace_file(
            "kb",
            [
                Document("kb", "Privacy", "Send /forgetme to delete your data.", None, "en"),
                Document("kb", "Privacidad", "Envía /forgetme para borrar tus datos.", None, "es"),
                Document("kb", "Streams", "JetStream streams store messages.", "https://s", "en"),
                Document("kb", "Flujos", "Los flujos de JetStream guardan mensajes.", None, "es"),
                Document("kb", "Songs", "A canción about streams and rivers.", None, "en"),
                Document("kb", "Keys", "A bucket keeps keys with revisions and a history.", None),
            ],
        )
        yield ix


def ask(index: SearchIndex, text: str, language: str | None = "en") -> list[str]:
    found = answer(index, parse_query(text), page=0, page_size=10, language=language)
    return [h.title for h in found.page.hits]


def test_stop_words_do_not_have_to_occur() -> None:
    query = parse_query("how do I delete my data").without_stop_words()
    assert [t.words for g in query.groups for t in g] == [("delete",), ("data",)]
    spanish_query = parse_query("¿cómo borro mis datos?").without_stop_words()
    assert [t.words for g in spanish_query.groups for t in g] == [("borro",), ("datos",)]
    # A query of stop words only is searched as it is.
    assert len(parse_query("to be or not to be").without_stop_words().groups) == 6


def test_a_natural_question_finds_its_page(index: SearchIndex) -> None:
    assert ask(index, "how do I delete my data")[0] == "Privacy"
    assert ask(index, "¿cómo borro mis datos?", "es")[0] == "Privacidad"


def test_the_users_language_ranks_first(index: SearchIndex) -> None:
    assert ask(index, "jetstream", "en")[:2] == ["Streams", "Flujos"]
    assert ask(index, "jetstream", "es")[:2] == ["Flujos", "Streams"]
    # A page without a language comes after the user's, before a foreign one,
    # however much better it scores.
    index.replace_file(
        "tiers",
        [
            Document("tiers", "Neutral", "nats nats nats nats", None, None),
            Document("tiers", "Inglés", "nats and more words", None, "en"),
            Document("tiers", "Español", "nats y más palabras", None, "es"),
        ],
    )
    assert ask(index, "nats", "es") == ["Español", "Neutral", "Inglés"]
    assert ask(index, "nats", "en") == ["Inglés", "Neutral", "Español"]


def test_when_no_page_has_every_word_a_relaxed_search_ranks_by_words_held(
    index: SearchIndex,
) -> None:
    found = answer(
        index, parse_query("jetstream streams unicorns"), page=0, page_size=10, language="en"
    )
    assert found.relaxed and found.suggestion is None
    # 2 of 3 words are needed: "Songs" holds only "streams" and is left out.
    assert [h.title for h in found.page.hits] == ["Streams"]
    assert parse_query("a b c d e").minimum_should_match == 3
    assert parse_query("a b").minimum_should_match == 1


def test_a_typo_is_corrected_from_the_documents_words(index: SearchIndex) -> None:
    found = answer(index, parse_query("jetstrem"), page=0, page_size=10, language="en")
    assert found.suggestion == "jetstream" and not found.relaxed
    assert found.page.hits[0].title == "Streams"
    # Accent-aware: the suggestion is spelled as the documents spell it.
    assert index.vocabulary().closest("canciom") == "canción"
    assert index.vocabulary().closest("cancion") is None  # not a typo, just no accent


def test_nothing_found_says_did_you_mean(index: SearchIndex) -> None:
    found = answer(index, parse_query("revisons unicorn"), page=0, page_size=10, language="en")
    assert found.suggestion == "revisions unicorn"
    text = nothing_found(english, "revisons unicornio", chat=False, suggestion="revisions")
    assert "Did you mean <i>revisions</i>?" in text
    assert "¿Quisiste decir" in nothing_found(spanish, "x", chat=False, suggestion="y")


def test_edit_distance_counts_transpositions_as_one() -> None:
    assert edit_distance("teh", "the") == 1
    assert edit_distance("kitten", "sitting") == 3
    vocabulary = Vocabulary(["The streams of JetStream", "revisions"], Stemmer())
    assert vocabulary.closest("strems") == "streams"
    assert vocabulary.closest("revisoins") == "revisions"  # a transposition is one edit
    assert vocabulary.closest("rrevisoins") == "revisions"  # two edits: long words only
    assert vocabulary.closest("strreems") is None  # two edits: too short a word
    assert vocabulary.closest("zzz") is None
    assert vocabulary.closest("stream") is None  # known through its stem


def test_results_show_links_and_say_how_they_were_found(index: SearchIndex) -> None:
    found = answer(index, parse_query("jetstrem"), page=0, page_size=10, language="en")
    text = render_documents(english, found.page, "jetstrem", suggestion=found.suggestion)
    assert '🔗 <a href="https://s">https://s</a>' in text
    assert "showing <i>jetstream</i>" in text
    relaxed = render_documents(spanish, found.page, "q", relaxed=True)
    assert "Ninguna página tiene todas las palabras" in relaxed


def test_snippets_carry_no_markdown(index: SearchIndex) -> None:
    index.replace_file(
        "md.jsonl",
        [Document("md.jsonl", "Md", "Use **bold** and *italic*, `code` and [a link](http://x).")],
    )
    (hit,) = index.search_documents(parse_query("italic")).hits
    assert hit.snippet == "Use bold and <b>italic</b>, code and a link."
    assert plain_text("# Head\n---\n> quote\n- item") == "Head\nquote\nitem"


def test_documents_know_their_language(tmp_path: Path) -> None:
    folder = tmp_path / "es"
    folder.mkdir()
    (folder / "a.md").write_text("# Hola\nTexto.", encoding="utf-8")
    (tmp_path / "b.md").write_text("---\ntitle: B\nlang: en\n---\nText.", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"title": "C", "body": "x", "lang": "es"}\n')
    assert load_file(folder / "a.md").documents[0].lang == "es"
    assert load_file(tmp_path / "b.md").documents[0].lang == "en"
    assert load_file(tmp_path / "c.jsonl").documents[0].lang == "es"


def test_a_version_1_index_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE docs(id INTEGER PRIMARY KEY, file TEXT NOT NULL, url TEXT);"
    )
    db.close()
    with SearchIndex(path) as upgraded:
        upgraded.replace_file("kb", [Document("kb", "T", "words", None, "es")])
        assert ask(upgraded, "words") == ["T"]


def test_the_question_set_is_answered_within_the_first_three_results(tmp_path: Path) -> None:
    questions = load_questions(QUESTIONS)
    assert len(questions) >= 40
    assert {q.language for q in questions} == {"en", "es"}
    assert {"natural", "typo"} <= {q.kind for q in questions}
    with SearchIndex(tmp_path / "kb.sqlite3") as kb:
        index_path(kb, KB)
        results = [rank(kb, q) for q in questions]
    # The bench prints the exact figures and each miss.
    assert recall_at(results) >= 0.9
    assert mean_reciprocal_rank(results) >= 0.8


@pytest.fixture(scope="module")
def bundled_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchIndex]:
    """The knowledge base shipped in docs/kb, as `make run` indexes it."""
    with SearchIndex(tmp_path_factory.mktemp("kb") / "kb.sqlite3") as kb:
        index_path(kb, KB)
        yield kb


def test_the_readme_showcase_question_finds_the_privacy_page_first(
    bundled_kb: SearchIndex,
) -> None:
    found = answer(
        bundled_kb, parse_query("how do I delete my data"), page=0, page_size=5, language="en"
    )
    # Every word is on the page: no "no page has all the words" notice.
    assert not found.relaxed
    assert found.page.hits[0].title == "Privacy and /forgetme"
    spanish_found = answer(
        bundled_kb, parse_query("¿cómo borro mis datos?"), page=0, page_size=5, language="es"
    )
    assert spanish_found.page.hits[0].title == "Privacidad y /forgetme"


def test_did_you_mean_offers_words_of_the_users_language(bundled_kb: SearchIndex) -> None:
    # "erase" is in no page; the Spanish "frase" is one edit away, but an
    # English reader was offered "how do I frase my data".
    found = answer(
        bundled_kb, parse_query("how do I erase my data"), page=0, page_size=5, language="en"
    )
    assert found.suggestion is None
    assert "Privacy and /forgetme" in [h.title for h in found.page.hits]
    # A word of the user's language is still corrected, and a Spanish word an
    # English reader types on purpose is not "corrected" at all.
    typo = answer(bundled_kb, parse_query("privcy"), page=0, page_size=5, language="en")
    assert typo.suggestion == "privacy"
    spanish = answer(bundled_kb, parse_query("privacidad"), page=0, page_size=5, language="en")
    assert spanish.suggestion is None and spanish.page.total


def test_every_result_in_the_users_language_comes_before_any_other(
    bundled_kb: SearchIndex,
) -> None:
    language = {d.title: d.lang for f in find_files(KB) for d in load_file(f).documents}
    checked = 0
    for question in load_questions(QUESTIONS):
        found = answer(
            bundled_kb, parse_query(question.text), page=0, page_size=10, language=question.language
        )
        own = [language[h.title] == question.language for h in found.page.hits]
        assert own == sorted(own, reverse=True), (question.text, found.page.hits)
        checked += own.count(False) > 0 and own.count(True) > 0
    assert checked  # some answers do mix languages


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=120))
def test_any_text_gets_results_or_a_clear_error(index: SearchIndex, text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError as exc:
        assert exc.text("en") and exc.text("es")
        return
    found = answer(index, query, page=0, page_size=5, language="es")
    assert found.page.total >= len(found.page.hits)
