"""Sentiment service benchmark: quality of each language's method and scoring speed.

Prints:
- accuracy and macro-F1 of VADER (English) and of the SentiLeak lexicon with
  VADER-like rules (Spanish) on each language's labelled evaluation set
  (small sets written by the botbus authors, see services/sentiment/data/README.md);
- messages/s scored by one instance, and by two instances side by side (two
  processes started together, each scoring the same number of messages), with
  the speed-up of two over one. "Scored" is what the service does to each plain
  message: detect the language (with a language_code hint), score it, and
  count it in the chat's and the user's mood documents (serialised as stored).

Usage: python bench/sentiment.py [--messages N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.sentiment.aggregate import MoodDoc
from services.sentiment.evaluation import EVAL_SET_NAMES, evaluate, load_eval_set
from services.sentiment.language import Lang
from services.sentiment.scoring import SentimentAnalyzer

DEFAULT_MESSAGES = 20_000  # per instance
LANGUAGES: tuple[Lang, ...] = ("en", "es")


def _corpus() -> list[tuple[str, str]]:
    # Both languages interleaved, each with its speaker's language_code.
    texts: list[tuple[str, str]] = []
    for language in LANGUAGES:
        texts.extend((e.text, language) for e in load_eval_set(language))
    return texts


def _worker(count: int, start: mp.synchronize.Barrier, results: mp.Queue[float]) -> None:
    analyzer = SentimentAnalyzer()
    corpus = _corpus()
    chat, user = MoodDoc(), MoodDoc()
    analyzer.score(corpus[0][0], corpus[0][1])  # warm the caches before timing
    start.wait()
    began = time.perf_counter()
    for i in range(count):
        text, hint = corpus[i % len(corpus)]
        score = analyzer.score(text, hint)
        now = datetime.now(UTC)
        chat.add(score.compound, score.label, now)
        user.add(score.compound, score.label, now)
        chat.to_json()
        user.to_json()
    results.put(time.perf_counter() - began)


def _run_instances(instances: int, count: int) -> float:
    """Messages per second scored by ``instances`` processes together."""
    # spawn, not fork: lingua's native thread pool does not survive a fork.
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(instances + 1)
    results: mp.Queue[float] = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(count, barrier, results)) for _ in range(instances)]
    for proc in procs:
        proc.start()
    barrier.wait()
    elapsed = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return instances * count / max(elapsed)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="per instance")
    args = parser.parse_args()

    analyzer = SentimentAnalyzer()
    print("== quality (labelled evaluation sets)")
    methods = {
        "en": "VADER 3.3.2 (vaderSentiment)",
        "es": "SentiLeak lexicon + VADER-like rules",
    }
    for language in LANGUAGES:
        result = evaluate(language, lambda text, lang=language: analyzer.score_as(text, lang).label)
        print(
            f"{language}: {methods[language]} on {EVAL_SET_NAMES[language]}: "
            f"accuracy {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}"
        )
    detected = sum(
        analyzer.score(e.text, None).language == language
        for language in LANGUAGES
        for e in load_eval_set(language)
    )
    print(f"language detection without hint: {detected}/150 correct")

    print(f"== throughput ({args.messages} messages per instance, cpus={mp.cpu_count()})")
    one = _run_instances(1, args.messages)
    print(f"one instance:  {one:,.0f} messages/s")
    two = _run_instances(2, args.messages)
    print(f"two instances: {two:,.0f} messages/s  (x{two / one:.2f} of one; target >= x1.8)")


if __name__ == "__main__":
    main()
