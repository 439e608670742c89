"""The labelled evaluation sets and the metrics reported on them.

The sets (``data/eval_en.jsonl``, ``data/eval_es.jsonl``) were written and
labelled by the botbus authors — see ``data/README.md``; they are small and
are not a public benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

from services.sentiment.language import Lang
from services.sentiment.scoring import Label

LABELS: tuple[Label, ...] = ("negative", "neutral", "positive")
EVAL_SET_NAMES: dict[Lang, str] = {
    "en": "botbus hand-labelled English chat set v1 (75 messages, 25 per class)",
    "es": "botbus hand-labelled Spanish chat set v1 (75 messages, 25 per class)",
}


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled message."""

    text: str
    label: Label


@dataclass(frozen=True, slots=True)
class Metrics:
    """Accuracy and macro-averaged F1 over the three labels."""

    n: int
    accuracy: float
    macro_f1: float


def load_eval_set(language: Lang) -> list[Example]:
    """The labelled set of ``language``."""
    data = resources.files("services.sentiment").joinpath("data", f"eval_{language}.jsonl")
    examples = []
    for line_no, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("label") not in LABELS:
            raise ValueError(f"eval_{language}.jsonl:{line_no}: label must be one of {LABELS}")
        examples.append(Example(str(row["text"]), row["label"]))
    return examples


def metrics(gold: Sequence[Label], predicted: Sequence[Label]) -> Metrics:
    """Accuracy and macro-F1 of ``predicted`` against ``gold``."""
    if len(gold) != len(predicted) or not gold:
        raise ValueError("gold and predicted must be non-empty and of equal length")
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    f1s = []
    for label in LABELS:
        tp = sum(g == label and p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return Metrics(len(gold), correct / len(gold), sum(f1s) / len(f1s))


def evaluate(language: Lang, classify: Callable[[str], Label]) -> Metrics:
    """Run ``classify`` over the set of ``language`` and measure it."""
    examples = load_eval_set(language)
    return metrics([e.label for e in examples], [classify(e.text) for e in examples])
