"""Benchmark of the search index: answer quality, indexing rate and query latency.

First, quality: the questions of tests/services/search/questions.jsonl (English
and Spanish; natural questions, typos, keywords), asked as /search asks them
(stop words, "did you mean", relaxed search, the user's language first) against
the bundled docs/kb; prints recall@3 and MRR, per kind, each miss, and the
latency of each question. Target: recall@3 >= 0.9.

Then speed: indexes 100,000 chat messages and 10,000 documents of generated
English and Spanish text into a fresh index, then runs 1,000 mixed queries
(/search and /find; words, phrases, prefixes, OR, exclusions) the way the
service does, snippets included. Prints the figures; targets are >= 5,000
messages/s and p99 <= 20 ms.

    .venv/bin/python bench/search.py [--messages N] [--documents N] [--queries N]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.search.answer import answer
from services.search.evaluation import (
    CUTOFF,
    load_questions,
    mean_reciprocal_rank,
    rank,
    recall_at,
)
from services.search.index import ChatMessage, SearchIndex
from services.search.indexing import index_path
from services.search.kb import Document
from services.search.query import parse_query

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "tests" / "services" / "search" / "questions.jsonl"
KB = ROOT / "docs" / "kb"

BATCH = 1_000
CHATS = 200
SEED = 7

# Real words of both languages, the most frequent first; made-up ones follow.
_BASE_TEXT = (
    "the of and to in is it that for on with as was at by be this have from or one had "
    "not but what all were when we there can an your which their said if do will each "
    "about how up out them then she many some so these would other into has more her two "
    "like him see time could de la que el en y a los se del las un por con no una su "
    "para es al lo como más pero sus le ya o este sí porque esta entre cuando muy sin "
    "sobre también me hasta hay donde quien desde todo nos durante todos uno les ni "
    "contra otros ese eso ante ellos e esto mí antes algunos qué unos nats stream "
    "streams consumer consumers subject gateway service services message messages "
    "telegram bot bots webhook polling update updates search index query queries ranking "
    "snippet canción canciones búsqueda mensaje mensajes servidor servicio servicios "
    "pasarela consulta deploy deployed deploying release releases backup backups alert "
    "alerts running runs run cluster replica replicas durable ephemeral acknowledge "
    "acknowledged delivery deliveries "
)
_BASE = _BASE_TEXT.split()


def vocabulary(rng: random.Random, size: int = 6_000) -> tuple[list[str], list[float]]:
    """Real words first, then made-up ones; Zipf weights like natural text."""
    letters = "abcdefghilmnoprstuváéíóñ"
    words = list(dict.fromkeys(_BASE))
    while len(words) < size:
        words.append("".join(rng.choice(letters) for _ in range(rng.randint(4, 10))))
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    return words, weights  # cumulative, for random.choices(cum_weights=...)


def sentence(rng: random.Random, vocab: tuple[list[str], list[float]], n: int) -> str:
    return " ".join(rng.choices(vocab[0], cum_weights=vocab[1], k=n)).capitalize() + "."


def messages(
    rng: random.Random, vocab: tuple[list[str], list[float]], count: int
) -> Iterator[ChatMessage]:
    now = datetime.now(UTC)
    for i in range(count):
        chat = -1_000_000_000_000 - rng.randrange(CHATS)
        yield ChatMessage(
            chat_id=chat,
            message_id=i,
            user_id=rng.randrange(5_000),
            author=f"user{i % 5_000}",
            date=now - timedelta(seconds=rng.randrange(25 * 86_400)),
            text=sentence(rng, vocab, rng.randint(5, 25)),
            chat_type="supergroup",
        )


def documents(
    rng: random.Random, vocab: tuple[list[str], list[float]], count: int
) -> list[Document]:
    return [
        Document(
            file=f"bench-{i // BATCH}",
            title=sentence(rng, vocab, rng.randint(2, 6)),
            body=" ".join(
                sentence(rng, vocab, rng.randint(8, 20)) for _ in range(rng.randint(4, 12))
            ),
            url=f"https://example.org/doc/{i}",
        )
        for i in range(count)
    ]


def query_text(rng: random.Random, vocab: tuple[list[str], list[float]]) -> str:
    # Queries favour meaningful words over the very top stopwords, as users do.
    words = vocab[0][60:400]
    pick = lambda: rng.choice(words)  # noqa: E731
    kind = rng.random()
    if kind < 0.45:
        return " ".join(pick() for _ in range(rng.randint(1, 3)))
    if kind < 0.6:
        return f'"{pick()} {pick()}"'
    if kind < 0.75:
        return next(w for w in iter(pick, "") if len(w) >= 4)[:3] + "*"
    if kind < 0.9:
        return f"{pick()} OR {pick()}"
    return f"{pick()} -{pick()}"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def questions_section() -> None:
    """Recall@3 and MRR of /search on the question set, with each miss."""
    questions = load_questions(QUESTIONS)
    with tempfile.TemporaryDirectory() as tmp, SearchIndex(Path(tmp) / "kb.sqlite3") as index:
        index_path(index, KB)
        for language in ("en", "es"):
            index.vocabulary(language)  # built once per change of the KB, not per query
        latencies, results = [], []
        for question in questions:
            started = time.perf_counter()
            results.append(rank(index, question))
            latencies.append((time.perf_counter() - started) * 1000)
    print(f"== {len(questions)} questions on docs/kb ({QUESTIONS.relative_to(ROOT)})")
    print(
        f"recall@{CUTOFF} {recall_at(results):.3f}  MRR {mean_reciprocal_rank(results):.3f}"
        f"  (target recall@{CUTOFF} >= 0.9)"
    )
    for kind in sorted({q.kind for q in questions}):
        subset = [r for r in results if r.question.kind == kind]
        print(
            f"  {kind:8} n={len(subset):2}  recall@{CUTOFF} {recall_at(subset):.3f}"
            f"  MRR {mean_reciprocal_rank(subset):.3f}"
        )
    for result in results:
        if result.rank is None or result.rank > CUTOFF:
            where = f"rank {result.rank}" if result.rank else "not found"
            print(f"  miss ({where}): {result.question.text!r} -> {list(result.titles[:3])}")
    print(
        f"latency per question: p50 {statistics.median(latencies):.2f} ms, "
        f"max {max(latencies):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1_000)
    args = parser.parse_args()
    questions_section()
    rng = random.Random(SEED)
    vocab = vocabulary(rng)

    with tempfile.TemporaryDirectory() as tmp, SearchIndex(Path(tmp) / "bench.sqlite3") as index:
        generated = list(messages(rng, vocab, args.messages))
        started = time.perf_counter()
        for first in range(0, len(generated), BATCH):
            index.add_messages(generated[first : first + BATCH])
        message_seconds = time.perf_counter() - started

        docs = documents(rng, vocab, args.documents)
        started = time.perf_counter()
        for first in range(0, len(docs), BATCH):
            chunk = docs[first : first + BATCH]
            index.replace_file(chunk[0].file, chunk)
        document_seconds = time.perf_counter() - started

        started = time.perf_counter()
        # What "did you mean" searches, one per reader's language (the service
        # builds each at its first use): built once per change of the KB.
        for language in (None, "en", "es"):
            index.vocabulary(language)
        vocabulary_seconds = time.perf_counter() - started

        latencies: dict[str, list[float]] = {"search": [], "find": []}
        results = 0
        for _ in range(args.queries):
            text = query_text(rng, vocab)
            kind = "search" if rng.random() < 0.5 else "find"
            started = time.perf_counter()
            query = parse_query(text)
            if kind == "search":
                language = "es" if rng.random() < 0.5 else "en"
                found_docs = answer(index, query, page=0, page_size=5, language=language)
                results += len(found_docs.page.hits)
            else:
                chat = -1_000_000_000_000 - rng.randrange(CHATS)
                found = index.find_messages(chat, query, page_size=5)
                results += len(found.hits)
            latencies[kind].append((time.perf_counter() - started) * 1000)
        size_mb = (Path(tmp) / "bench.sqlite3").stat().st_size / 2**20

    every = latencies["search"] + latencies["find"]
    print(
        f"messages indexed:  {args.messages:,} in {message_seconds:.1f} s "
        f"= {args.messages / message_seconds:,.0f} messages/s (target >= 5,000)"
    )
    print(
        f"documents indexed: {args.documents:,} in {document_seconds:.1f} s "
        f"= {args.documents / document_seconds:,.0f} documents/s"
    )
    print(f"index file:        {size_mb:,.0f} MB")
    print(
        f"vocabularies for did-you-mean (all, en, es): built in {vocabulary_seconds:.2f} s "
        "(once per KB change)"
    )
    print(f"queries:           {len(every):,} ({results:,} results shown)")
    for name, values in (
        ("all", every),
        ("/search", latencies["search"]),
        ("/find", latencies["find"]),
    ):
        if values:
            print(
                f"  {name:8} p50 {statistics.median(values):6.2f} ms   "
                f"p99 {percentile(values, 0.99):6.2f} ms   max {max(values):6.2f} ms"
            )
    print("target: p99 <= 20 ms")


if __name__ == "__main__":
    main()
