"""The search index: one SQLite file with FTS5 tables, owned by the search service.

Layout (schema version 2; a version 1 file is upgraded in place)::

    docs(id, file, url, lang)           knowledge-base documents (lang: "en", "es" or NULL)
    docs_fts(title, body, title_en, body_en, title_es, body_es)
                                        their text + English/Spanish stem shadows
    messages(id, chat_id, chat_type, message_id, user_id, author, date)
    messages_fts(body, en, es, chat)    chat messages; ``chat`` holds one token
                                        per row so a chat's messages are an
                                        FTS5 doclist, not a post-filter
    saved_queries(id, scope, chat_id, query, created)
                                        queries behind Next/Previous buttons

Tokenisation is ``unicode61 remove_diacritics 2`` (case- and accent-
insensitive); stemming happens in Python (:mod:`services.search.text`), so the
shadow columns hold ready-made stems. Ranking is FTS5's ``bm25()``; /find
divides it by ``1 + age / 7 days`` so recent relevant messages come first.
/search puts every document in the user's language before any other (then
language-neutral ones, then the rest), and within that order a relaxed search
(any of the words, see :mod:`.answer`) ranks first by how many of the query's
words a document holds.

All methods are synchronous and serialised by a lock: the service calls them
through ``asyncio.to_thread`` so the event loop never waits on the disk.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Generic, Literal, TypeVar

from botbus.errors import BotbusError
from services.search.kb import Document, plain_text
from services.search.query import Columns, Query
from services.search.spelling import Vocabulary
from services.search.text import Stemmer, clip

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
INDEX_FILENAME = "index.sqlite3"
DEFAULT_RETENTION = timedelta(days=30)
SAVED_QUERY_LIFETIME = timedelta(days=7)
RECENCY_HALF_LIFE = 7 * 24 * 3600.0  # seconds: a week-old message scores half
BUSY_TIMEOUT = 5.0  # seconds to wait for another process holding the write lock
RELAXED_CANDIDATES = 500  # best OR-matches a relaxed search counts words in

# Column weights for bm25(): a word in a title counts five times one in the
# body. Words are matched through their stems; the text columns serve
# prefix queries and snippets. Titles keep their own stem columns because
# FTS5 saturates term frequency per phrase: title and body stems mixed in
# one column would let a body repeating a word outrank a title naming it.
_DOC_WEIGHTS = "5.0, 1.0, 5.0, 1.0, 5.0, 1.0"
_MSG_WEIGHTS = "1.0, 1.0, 1.0, 0.0"
_DOC_COLUMNS = Columns(("title", "body"), ("title_en", "body_en"), ("title_es", "body_es"))
_MSG_COLUMNS = Columns(("body",), ("en",), ("es",))
_TOKENIZE = "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    id INTEGER PRIMARY KEY, file TEXT NOT NULL, url TEXT, lang TEXT);
CREATE INDEX IF NOT EXISTS docs_file ON docs(file);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    title, body, title_en, body_en, title_es, body_es, {_TOKENIZE});
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY,
    chat_id INTEGER NOT NULL, chat_type TEXT NOT NULL, message_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL, author TEXT NOT NULL, date REAL NOT NULL,
    UNIQUE(chat_id, message_id));
CREATE INDEX IF NOT EXISTS messages_user ON messages(user_id);
CREATE INDEX IF NOT EXISTS messages_date ON messages(date);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(body, en, es, chat, {_TOKENIZE});
CREATE TABLE IF NOT EXISTS saved_queries(
    id TEXT PRIMARY KEY, scope TEXT NOT NULL, chat_id INTEGER NOT NULL,
    query TEXT NOT NULL, created REAL NOT NULL);
"""

Scope = Literal["kb", "chat"]
H = TypeVar("H")


class IndexUnusableError(BotbusError):
    """The index file cannot be used; the message tells the operator what to do."""


@dataclass(frozen=True)
class ChatMessage:
    """A chat message to index."""

    chat_id: int
    message_id: int
    user_id: int
    author: str
    date: datetime
    text: str
    chat_type: str = "private"


@dataclass(frozen=True)
class DocumentHit:
    """A knowledge-base result; ``snippet`` is Telegram HTML."""

    title: str
    url: str | None
    snippet: str


@dataclass(frozen=True)
class MessageHit:
    """A chat-history result; ``snippet`` is Telegram HTML, ``link`` None when Telegram has none."""

    message_id: int
    author: str
    date: datetime
    snippet: str
    link: str | None


@dataclass(frozen=True)
class ResultPage(Generic[H]):
    """One page of results; ``page`` counts from 0."""

    hits: list[H]
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages the whole result has."""
        return max(1, -(-self.total // self.page_size))

    @property
    def has_next(self) -> bool:
        """True if a later page exists."""
        return (self.page + 1) * self.page_size < self.total

    @property
    def has_previous(self) -> bool:
        """True if an earlier page exists."""
        return self.page > 0


@dataclass(frozen=True)
class SavedQuery:
    """A query kept so Next/Previous buttons can run it again."""

    id: str
    scope: Scope
    chat_id: int
    query: str


def chat_token(chat_id: int) -> str:
    """The single FTS token standing for a chat (``-100123`` -> ``cm100123``)."""
    return f"cm{-chat_id}" if chat_id < 0 else f"c{chat_id}"


def message_link(chat_id: int, chat_type: str, message_id: int) -> str | None:
    """A t.me link to a message, for the chats where Telegram offers one.

    Supergroups and channels have ids ``-100<internal>`` and links
    ``https://t.me/c/<internal>/<message_id>`` (members only); private chats
    and basic groups have no message links.
    """
    if chat_type not in ("supergroup", "channel"):
        return None
    text = str(chat_id)
    if not text.startswith("-100") or len(text) <= 4:
        return None
    return f"https://t.me/c/{text[4:]}/{message_id}"


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _rows(
    db: sqlite3.Connection, sql: str, params: Sequence[object] | dict[str, object]
) -> list[sqlite3.Row]:
    cursor = db.execute(sql, params)
    cursor.row_factory = sqlite3.Row
    return list(cursor.fetchall())


class SearchIndex:
    """Knowledge-base documents and chat messages in one SQLite FTS5 file."""

    def __init__(self, path: Path, *, retention: timedelta = DEFAULT_RETENTION) -> None:
        self.path = path
        self.retention = retention
        self.stemmer = Stemmer()
        self._lock = threading.Lock()
        self._vocabularies: dict[str | None, Vocabulary] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise IndexUnusableError(
                f"search index {path} cannot be opened ({exc}); delete it and run "
                "`botbus search-index PATH` to rebuild it"
            ) from exc

    @classmethod
    def in_data_dir(
        cls, data_dir: Path, *, retention: timedelta = DEFAULT_RETENTION
    ) -> SearchIndex:
        """The service's index under ``<data_dir>/search/``."""
        return cls(data_dir / "search" / INDEX_FILENAME, retention=retention)

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is not None and row[0] == "1":
            # Version 2 only adds the documents' language: upgrade in place.
            columns = {c[1] for c in self._db.execute("PRAGMA table_info(docs)")}
            if "lang" not in columns:
                self._db.execute("ALTER TABLE docs ADD COLUMN lang TEXT")
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),)
            )
            row = (str(SCHEMA_VERSION),)
        if row is None:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif row[0] != str(SCHEMA_VERSION):
            raise IndexUnusableError(
                f"search index {self.path} has schema {row[0]}, this version needs "
                f"{SCHEMA_VERSION}; delete it and run `botbus search-index PATH` again"
            )

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] | dict[str, object]) -> list[sqlite3.Row]:
        with self._lock:
            return _rows(self._db, sql, params)

    # -- knowledge base ------------------------------------------------------

    def replace_file(self, file: str, documents: Sequence[Document]) -> int:
        """Replace every document of ``file`` with ``documents``; return how many."""
        with self._transaction() as db:
            old = [row[0] for row in db.execute("SELECT id FROM docs WHERE file = ?", (file,))]
            db.executemany("DELETE FROM docs_fts WHERE rowid = ?", ((i,) for i in old))
            db.execute("DELETE FROM docs WHERE file = ?", (file,))
            self._vocabularies.clear()
            for doc in documents:
                cursor = db.execute(
                    "INSERT INTO docs(file, url, lang) VALUES (?, ?, ?)", (file, doc.url, doc.lang)
                )
                title_en, title_es = self.stemmer.shadow(doc.title)
                body_en, body_es = self.stemmer.shadow(doc.body)
                db.execute(
                    "INSERT INTO docs_fts(rowid, title, body, title_en, body_en, title_es, body_es)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (cursor.lastrowid, doc.title, doc.body, title_en, body_en, title_es, body_es),
                )
        return len(documents)

    def holds_files_under(self, folder: Path) -> bool:
        """True if some indexed document was read from a file inside ``folder``."""
        prefix = f"{folder.resolve()}/"
        rows = self._query(
            "SELECT 1 FROM docs WHERE substr(file, 1, ?) = ? LIMIT 1", (len(prefix), prefix)
        )
        return bool(rows)

    def document_count(self) -> int:
        """How many knowledge-base documents are indexed."""
        return int(self._query("SELECT count(*) FROM docs", ())[0][0])

    def vocabulary(self, language: str | None = None) -> Vocabulary:
        """The words of the documents (for "did you mean"), built once per change.

        With ``language``: of its documents and of those without a language;
        of every document when none is in ``language`` (the same object).
        """
        with self._lock:
            has_own = language is not None and bool(
                self._db.execute(
                    "SELECT 1 FROM docs WHERE lang = ? LIMIT 1", (language,)
                ).fetchone()
            )
            key = language if has_own else None
            if key not in self._vocabularies:
                rows = self._db.execute(
                    """SELECT f.title, f.body FROM docs_fts AS f JOIN docs AS d ON d.id = f.rowid
                       WHERE :language IS NULL OR d.lang = :language OR d.lang IS NULL""",
                    {"language": key},
                )
                texts = (f"{title}\n{body}" for title, body in rows)
                self._vocabularies[key] = Vocabulary(texts, self.stemmer)
            return self._vocabularies[key]

    def search_documents(
        self,
        query: Query,
        *,
        page: int = 0,
        page_size: int = 5,
        language: str | None = None,
        relaxed: bool = False,
    ) -> ResultPage[DocumentHit]:
        """Knowledge-base documents matching ``query``, best first.

        Strict (the default): every group of the query must match. ``relaxed``:
        any group may, but a result must match at least
        :attr:`Query.minimum_should_match` groups and ranks by how many it
        matches, then by bm25. Every document in ``language`` ranks above every
        other, and language-neutral ones (no ``lang``) above other languages.
        """
        # Ranking runs on ids and scores only; the text of the few shown rows
        # is read afterwards. Carrying every match's body through the sort
        # costs ten times more than the ranking itself.
        # bm25() only works in the query that runs MATCH, so the window
        # function counting all hits sits in an outer query.
        # A strict preference, not a boost: a user reads a page in their own
        # language before a better-scored one in a language they may not read.
        tier = (
            "(CASE WHEN :language IS NULL OR d.lang = :language THEN 0"
            " WHEN d.lang IS NULL THEN 1 ELSE 2 END)"
        )
        params: dict[str, object] = {
            "language": language,
            "limit": page_size,
            "offset": page * page_size,
        }
        if relaxed:
            groups = query.group_matches(_DOC_COLUMNS, self.stemmer)
            params["match"] = query.relaxed_match(_DOC_COLUMNS, self.stemmer)
            params["candidates"] = RELAXED_CANDIDATES
            params["minimum"] = query.minimum_should_match
            matched = " + ".join(
                f"(hit.id IN (SELECT rowid FROM docs_fts WHERE docs_fts MATCH :g{i}))"
                for i in range(len(groups))
            )
            params.update({f"g{i}": group for i, group in enumerate(groups)})
            sql = f"""SELECT id, count(*) OVER () AS total FROM (
                    SELECT hit.id, hit.tier, hit.score, {matched} AS matched FROM (
                        SELECT f.rowid AS id, {tier} AS tier,
                               bm25(docs_fts, {_DOC_WEIGHTS}) AS score
                        FROM docs_fts AS f JOIN docs AS d ON d.id = f.rowid
                        WHERE docs_fts MATCH :match
                        ORDER BY tier, score LIMIT :candidates) AS hit)
                WHERE matched >= :minimum
                ORDER BY tier, matched DESC, score, id
                LIMIT :limit OFFSET :offset"""
        else:
            params["match"] = query.match(_DOC_COLUMNS, self.stemmer)
            sql = f"""SELECT hit.id, count(*) OVER () AS total FROM (
                    SELECT f.rowid AS id, {tier} AS tier,
                           bm25(docs_fts, {_DOC_WEIGHTS}) AS score
                    FROM docs_fts AS f JOIN docs AS d ON d.id = f.rowid
                    WHERE docs_fts MATCH :match) AS hit
                ORDER BY hit.tier, hit.score, hit.id
                LIMIT :limit OFFSET :offset"""
        with self._lock:
            ranked = _rows(self._db, sql, params)
            ids = [row["id"] for row in ranked]
            details = {
                row["id"]: row
                for row in _rows(
                    self._db,
                    f"""SELECT f.rowid AS id, f.title, f.body, d.url
                        FROM docs_fts AS f JOIN docs AS d ON d.id = f.rowid
                        WHERE f.rowid IN ({", ".join("?" * len(ids))})""",
                    ids,
                )
            }
        rows = [details[i] for i in ids if i in details]
        total = int(ranked[0]["total"]) if ranked else 0
        highlighter = query.highlighter(self.stemmer)
        hits = [
            DocumentHit(
                clip(plain_text(row["title"]), 200),
                row["url"],
                # Bodies indexed before Markdown was stripped on load are cleaned here.
                highlighter.snippet(plain_text(row["body"])),
            )
            for row in rows
        ]
        return ResultPage(hits, page, page_size, total)

    # -- chat messages -------------------------------------------------------

    def add_messages(self, messages: Iterable[ChatMessage]) -> int:
        """Index ``messages`` in one transaction; an edited message replaces its old text."""
        count = 0
        with self._transaction() as db:
            for msg in messages:
                row = (
                    msg.chat_id,
                    msg.chat_type,
                    msg.message_id,
                    msg.user_id,
                    msg.author,
                    _epoch(msg.date),
                )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO messages"
                    "(chat_id, chat_type, message_id, user_id, author, date)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
                if cursor.rowcount == 1:
                    rowid = cursor.lastrowid
                else:
                    # Already indexed: an edit keeps the original date and author.
                    rowid = db.execute(
                        "SELECT id FROM messages WHERE chat_id = ? AND message_id = ?",
                        (msg.chat_id, msg.message_id),
                    ).fetchone()[0]
                    db.execute("DELETE FROM messages_fts WHERE rowid = ?", (rowid,))
                en, es = self.stemmer.shadow(msg.text)
                db.execute(
                    "INSERT INTO messages_fts(rowid, body, en, es, chat) VALUES (?, ?, ?, ?, ?)",
                    (rowid, msg.text, en, es, chat_token(msg.chat_id)),
                )
                count += 1
        return count

    def add_message(self, message: ChatMessage) -> None:
        """Index one message."""
        self.add_messages([message])

    def message_count(self, chat_id: int | None = None) -> int:
        """How many messages are indexed (in one chat, or in all)."""
        if chat_id is None:
            return int(self._query("SELECT count(*) FROM messages", ())[0][0])
        return int(self._query("SELECT count(*) FROM messages WHERE chat_id = ?", (chat_id,))[0][0])

    def find_messages(
        self,
        chat_id: int,
        query: Query,
        *,
        page: int = 0,
        page_size: int = 5,
        now: datetime | None = None,
    ) -> ResultPage[MessageHit]:
        """Messages of ``chat_id`` matching ``query``: relevance weighed by recency.

        Messages older than the retention period are never returned, even
        before :meth:`prune` has removed them.
        """
        now_ts = _epoch(now) if now else time.time()
        match = f'chat : "{chat_token(chat_id)}" AND {query.match(_MSG_COLUMNS, self.stemmer)}'
        params: dict[str, object] = {
            "match": match,
            "chat": chat_id,
            "oldest": now_ts - self.retention.total_seconds(),
            "now": now_ts,
            "limit": page_size,
            "offset": page * page_size,
        }
        # Same two steps as search_documents. CROSS JOIN keeps the FTS table
        # the outer loop: otherwise SQLite walks the chat's rows through the
        # (chat_id, message_id) index and runs the MATCH once for each.
        with self._lock:
            ranked = _rows(
                self._db,
                f"""SELECT hit.id, count(*) OVER () AS total FROM (
                        SELECT f.rowid AS id, m.date,
                               bm25(messages_fts, {_MSG_WEIGHTS}) AS score
                        FROM messages_fts AS f CROSS JOIN messages AS m ON m.id = f.rowid
                        WHERE messages_fts MATCH :match AND m.chat_id = :chat
                          AND m.date >= :oldest) AS hit
                    ORDER BY hit.score / (1.0 + max(0.0, :now - hit.date) / {RECENCY_HALF_LIFE}),
                             hit.date DESC
                    LIMIT :limit OFFSET :offset""",
                params,
            )
            ids = [row["id"] for row in ranked]
            details = {
                row["id"]: row
                for row in _rows(
                    self._db,
                    f"""SELECT m.id, m.message_id, m.author, m.date, m.chat_type, f.body
                        FROM messages AS m JOIN messages_fts AS f ON f.rowid = m.id
                        WHERE m.id IN ({", ".join("?" * len(ids))})""",
                    ids,
                )
            }
        rows = [details[i] for i in ids if i in details]
        total = int(ranked[0]["total"]) if ranked else 0
        highlighter = query.highlighter(self.stemmer)
        hits = [
            MessageHit(
                message_id=row["message_id"],
                author=row["author"],
                date=datetime.fromtimestamp(row["date"], UTC),
                snippet=highlighter.snippet(row["body"]),
                link=message_link(chat_id, row["chat_type"], row["message_id"]),
            )
            for row in rows
        ]
        return ResultPage(hits, page, page_size, total)

    def _delete_messages(self, where: str, params: Sequence[object]) -> int:
        with self._transaction() as db:
            ids = [
                (row[0],) for row in db.execute(f"SELECT id FROM messages WHERE {where}", params)
            ]
            db.executemany("DELETE FROM messages_fts WHERE rowid = ?", ids)
            db.executemany("DELETE FROM messages WHERE id = ?", ids)
        return len(ids)

    def prune(self, now: datetime | None = None) -> int:
        """Delete messages older than the retention period and stale saved queries."""
        now_ts = _epoch(now) if now else time.time()
        removed = self._delete_messages("date < ?", (now_ts - self.retention.total_seconds(),))
        with self._transaction() as db:
            db.execute(
                "DELETE FROM saved_queries WHERE created < ?",
                (now_ts - SAVED_QUERY_LIFETIME.total_seconds(),),
            )
        if removed:
            logger.info("pruned %s messages older than %s", removed, self.retention)
        return removed

    def forget_user(self, user_id: int) -> int:
        """Delete every indexed message written by ``user_id``; return how many."""
        return self._delete_messages("user_id = ?", (user_id,))

    # -- saved queries (paging) ---------------------------------------------

    def save_query(self, scope: Scope, chat_id: int, query: str) -> str:
        """Keep ``query`` under a short id (8 characters) for paging buttons.

        The id is a hash of what it stands for, so the same search reuses it.
        """
        digest = hashlib.blake2b(f"{scope}\0{chat_id}\0{query}".encode(), digest_size=6).digest()
        query_id = base64.urlsafe_b64encode(digest).decode()
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO saved_queries(id, scope, chat_id, query, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (query_id, scope, chat_id, query, time.time()),
            )
        return query_id

    def saved_query(self, query_id: str) -> SavedQuery | None:
        """The query saved under ``query_id``, or None if unknown or expired."""
        rows = self._query(
            "SELECT id, scope, chat_id, query FROM saved_queries WHERE id = ?", (query_id,)
        )
        if not rows:
            return None
        row = rows[0]
        scope: Scope = "chat" if row["scope"] == "chat" else "kb"
        return SavedQuery(row["id"], scope, row["chat_id"], row["query"])
