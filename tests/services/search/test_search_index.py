"""The SQLite FTS5 index: ranking, languages, history, retention, paging."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.search.index import (
    ChatMessage,
    DocumentHit,
    SearchIndex,
    chat_token,
    message_link,
)
from services.search.kb import Document
from services.search.query import parse_query
from services.search.render import page_data, parse_page_data

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SUPERGROUP = -1001234567890


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SearchIndex]:
    with SearchIndex(tmp_path / "index.sqlite3", retention=timedelta(days=30)) as ix:
        yield ix


def doc(title: str, body: str, url: str | None = None) -> Document:
    return Document("kb.jsonl", title, body, url)


def titles(index: SearchIndex, text: str, page_size: int = 10) -> list[str]:
    return [h.title for h in index.search_documents(parse_query(text), page_size=page_size).hits]


def message(
    text: str,
    *,
    message_id: int,
    chat_id: int = SUPERGROUP,
    user_id: int = 7,
    age: timedelta = timedelta(hours=1),
    chat_type: str = "supergroup",
) -> ChatMessage:
    return ChatMessage(chat_id, message_id, user_id, f"user{user_id}", NOW - age, text, chat_type)


def found(index: SearchIndex, text: str, chat_id: int = SUPERGROUP) -> list[int]:
    page = index.find_messages(chat_id, parse_query(text), now=NOW, page_size=20)
    return [hit.message_id for hit in page.hits]


def test_accents_and_case_are_ignored(index: SearchIndex) -> None:
    index.replace_file("kb", [doc("Música", "La canción del verano")])
    assert titles(index, "cancion") == ["Música"]
    assert titles(index, "CANCIÓN") == ["Música"]
    assert titles(index, "musica") == ["Música"]


def test_english_and_spanish_stemming(index: SearchIndex) -> None:
    index.replace_file(
        "kb",
        [doc("Songs", "She was singing two songs"), doc("Canciones", "Las canciones populares")],
    )
    assert titles(index, "song") == ["Songs"]
    assert titles(index, "sings") == ["Songs"]  # sings, singing -> sing
    assert titles(index, "dance") == []
    assert titles(index, "canción") == ["Canciones"]
    assert titles(index, "popular") == ["Canciones"]


def test_phrase_prefix_or_and_exclusion(index: SearchIndex) -> None:
    index.replace_file(
        "kb",
        [
            doc("A", "durable consumers survive restarts"),
            doc("B", "consumers of durable goods"),
            doc("C", "streams keep messages"),
        ],
    )
    assert titles(index, '"durable consumers"') == ["A"]
    assert sorted(titles(index, "stre*")) == ["C"]
    assert sorted(titles(index, "restarts OR goods")) == ["A", "B"]
    assert titles(index, "consumers -goods") == ["A"]
    assert titles(index, "consumers NOT restarts") == ["B"]


def test_bm25_ranks_title_and_frequent_matches_first(index: SearchIndex) -> None:
    # BM25 needs a word to be rare in the collection to count at all.
    filler = [doc(f"Filler {i}", f"nothing to see in document {i}") for i in range(10)]
    index.replace_file(
        "kb",
        [
            *filler,
            doc("Unrelated", "a long text that mentions jetstream once among many other words"),
            doc("JetStream", "persistence for NATS"),
            doc("Notes", "jetstream jetstream jetstream"),
        ],
    )
    assert titles(index, "jetstream") == ["JetStream", "Notes", "Unrelated"]


def test_snippets_highlight_hits_and_escape_html(index: SearchIndex) -> None:
    body = "Intro words. " * 30 + "Use <b>bold</b> & the Streams API. " + "Tail words. " * 30
    index.replace_file("kb", [doc("T", body, "https://example.org/?a=1&b=2")])
    (hit,) = index.search_documents(parse_query("stream")).hits
    assert "<b>Streams</b>" in hit.snippet
    assert "&lt;b&gt;bold&lt;/b&gt; &amp;" in hit.snippet
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert len(hit.snippet) < 400
    assert hit.url == "https://example.org/?a=1&b=2"


def test_reindexing_a_file_replaces_its_documents(index: SearchIndex) -> None:
    index.replace_file("a.md", [doc("Old", "old text")])
    index.replace_file("b.md", [doc("Other", "old text")])
    index.replace_file("a.md", [doc("New", "new text")])
    assert titles(index, "old") == ["Other"]
    assert titles(index, "new") == ["New"]
    assert index.document_count() == 2


def test_paging_splits_results_and_counts_them(index: SearchIndex) -> None:
    index.replace_file("kb", [doc(f"Doc {i}", f"paging test {i}") for i in range(12)])
    query = parse_query("paging")
    pages = [index.search_documents(query, page=p, page_size=5) for p in range(3)]
    assert [len(p.hits) for p in pages] == [5, 5, 2]
    assert all(p.total == 12 and p.pages == 3 for p in pages)
    assert (pages[0].has_previous, pages[0].has_next) == (False, True)
    assert (pages[2].has_previous, pages[2].has_next) == (True, False)
    seen = [h.title for p in pages for h in p.hits]
    assert sorted(seen) == sorted(f"Doc {i}" for i in range(12))


def test_saved_query_ids_fit_in_callback_data(index: SearchIndex) -> None:
    long_query = "ñ" * 300
    query_id = index.save_query("chat", SUPERGROUP, long_query)
    data = "search:" + page_data(query_id, 9999)
    assert len(data.encode()) <= 64
    assert parse_page_data(page_data(query_id, 3)) == (query_id, 3)
    saved = index.saved_query(query_id)
    assert saved is not None
    assert (saved.scope, saved.chat_id, saved.query) == ("chat", SUPERGROUP, long_query)
    assert index.save_query("chat", SUPERGROUP, long_query) == query_id
    assert index.saved_query("nope") is None
    assert parse_page_data("garbage") is None


def test_find_searches_only_this_chat(index: SearchIndex) -> None:
    index.add_messages(
        [
            message("the deploy failed again", message_id=1),
            message("deploy from another chat", message_id=2, chat_id=-1009, chat_type="group"),
        ]
    )
    assert found(index, "deploy") == [1]
    assert found(index, "deploy", chat_id=-1009) == [2]
    assert chat_token(-1009) != chat_token(1009)


def test_find_prefers_recent_relevant_messages(index: SearchIndex) -> None:
    index.add_messages(
        [
            message("release notes", message_id=1, age=timedelta(days=20)),
            message("release notes", message_id=2, age=timedelta(hours=2)),
            message("release notes", message_id=3, age=timedelta(days=5)),
        ]
    )
    assert found(index, "release") == [2, 3, 1]


def test_find_links_to_supergroup_messages_only(index: SearchIndex) -> None:
    index.add_messages(
        [
            message("hola mundo", message_id=11),
            message("hola mundo", message_id=12, chat_id=42, chat_type="private"),
        ]
    )
    (group_hit,) = index.find_messages(SUPERGROUP, parse_query("hola"), now=NOW).hits
    assert group_hit.link == "https://t.me/c/1234567890/11"
    assert group_hit.author == "user7"
    (private_hit,) = index.find_messages(42, parse_query("hola"), now=NOW).hits
    assert private_hit.link is None
    assert message_link(-4001, "group", 5) is None


def test_edited_message_replaces_its_text(index: SearchIndex) -> None:
    index.add_message(message("tpyo here", message_id=5))
    index.add_message(message("typo here", message_id=5))
    assert found(index, "tpyo") == []
    assert found(index, "typo") == [5]
    assert index.message_count() == 1


def test_retention_hides_then_prunes_old_messages(index: SearchIndex) -> None:
    index.add_messages(
        [
            message("backup done", message_id=1, age=timedelta(days=31)),
            message("backup done", message_id=2, age=timedelta(days=29)),
        ]
    )
    assert found(index, "backup") == [2]
    assert index.prune(now=NOW) == 1
    assert index.message_count() == 1


def test_forgetting_a_user_removes_their_messages(index: SearchIndex) -> None:
    index.add_messages(
        [
            message("secret plan", message_id=1, user_id=7),
            message("secret recipe", message_id=2, user_id=8),
        ]
    )
    assert index.forget_user(7) == 1
    assert found(index, "secret") == [2]


def test_index_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "search" / "index.sqlite3"
    with SearchIndex(path) as first:
        first.replace_file("kb", [doc("Persisted", "still here after restart")])
        first.add_message(message("remember me", message_id=9))
    with SearchIndex(path) as second:
        hits: list[DocumentHit] = second.search_documents(parse_query("restart")).hits
        assert [h.title for h in hits] == ["Persisted"]
        assert found(second, "remember") == [9]
