"""Benchmark of the search index: indexing rate and query latency.

Indexes 100,000 chat messages and 10,000 documents of generated English and
Spanish text into a fresh index, then runs 1,000 mixed queries (/search and
/find; words, phrases, prefixes, OR, exclusions) the way the service does,
snippets included. Prints the figures; targets are >= 5,000 messages/s and
p99 <= 20 ms.

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

from services.search.index import ChatMessage, SearchIndex
from services.search.kb import Document
from services.search.query import parse_query

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1_000)
    args = parser.parse_args()
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

        latencies: dict[str, list[float]] = {"search": [], "find": []}
        results = 0
        for _ in range(args.queries):
            text = query_text(rng, vocab)
            kind = "search" if rng.random() < 0.5 else "find"
            started = time.perf_counter()
            query = parse_query(text)
            if kind == "search":
                page = index.search_documents(query, page_size=5)
                results += len(page.hits)
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
