"""The labelled evaluation sets and the metrics reported on them.

English, public: ``data/vader_tweets_groundtruth.txt``, the 4,200 tweet-like
texts rated by at least 20 people each that Hutto & Gilbert (ICWSM 2014)
evaluated VADER on, shipped in the vaderSentiment 3.3.2 sdist under its MIT
license (see ``data/README.md``). It was made by VADER's own authors, so it is
not independent of the English method. The gold label comes from the mean
rating (-4..+4) normalised to [-1, 1] with the paper's cut-offs, the same
+/-0.05 that turn a compound value into a label: ``|rating| < 0.2`` is neutral.

Ours: ``data/eval_en.jsonl`` and ``data/eval_es.jsonl`` were written and
labelled by the botbus authors; they are small and are not a public benchmark.
No openly licensed, labelled Spanish set ships in a package reachable here, so
Spanish is measured on ours only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from services.sentiment.language import Lang
from services.sentiment.scoring import Label, label_of

LABELS: tuple[Label, ...] = ("negative", "neutral", "positive")
POLAR_LABELS: tuple[Label, ...] = ("negative", "positive")
MAX_RATING = 4.0  # the VADER ground truth's mean ratings run from -4 to +4
VADER_TWEETS_FILE = "vader_tweets_groundtruth.txt"
AMAZON_SNIPPETS_FILE = "amazon_review_snippets_groundtruth.txt"
AMAZON_SNIPPETS_NAME = "VADER Amazon review snippets (Hutto & Gilbert, ICWSM 2014)"
AMAZON_SNIPPETS_PROVENANCE = (
    "public; vaderSentiment 3.3.2 sdist, additional_resources/hutto_ICWSM_2014/"
    "amazonReviewSnippets_GroundTruth.txt, MIT License (c) 2016 C.J. Hutto; review "
    "sentences, never used to train or tune anything here"
)
EVAL_SET_NAMES: dict[Lang, str] = {
    "en": "botbus hand-labelled English chat set v1 (75 messages, 25 per class)",
    "es": "botbus hand-labelled Spanish chat set v1 (75 messages, 25 per class)",
}
VADER_TWEETS_NAME = "VADER tweets ground truth (Hutto & Gilbert, ICWSM 2014)"
VADER_TWEETS_PROVENANCE = (
    "public; vaderSentiment 3.3.2 sdist, additional_resources/hutto_ICWSM_2014/"
    "tweets_GroundTruth.txt, MIT License (c) 2016 C.J. Hutto; made by VADER's own "
    "authors, so NOT independent of the English method"
)
VADER_TWEETS_GOLD = (
    "mean of >= 20 human ratings (-4..+4) / 4, cut at +/-0.05 as in the paper: "
    "|rating| < 0.2 is neutral"
)
VADER_TWEETS_PUBLISHED = (
    "Hutto & Gilbert 2014, Table 4: VADER 3-class F1 = 0.96 on this set "
    "(how F1 is averaged over classes is not stated), individual human raters 0.84"
)
OWN_SET_PROVENANCE = "ours, written by the botbus authors; NOT a public benchmark"
NO_PUBLIC_SPANISH_SET = (
    "the public Spanish sets live outside the repository (services/sentiment/datasets.py)"
)
OWN_SET_GOLD = "one label per message, chosen by the botbus authors before scoring"


class EvalSetError(ValueError):
    """A shipped evaluation file is malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled message."""

    text: str
    label: Label


@dataclass(frozen=True, slots=True)
class EvalSet:
    """A labelled set, with what a reader of its figures must know about it."""

    language: Lang
    name: str
    provenance: str  # where it comes from, its license, and how independent it is
    gold: str  # how its gold labels were obtained
    examples: tuple[Example, ...]
    published: str = ""  # figures published on it by others, to compare with


@dataclass(frozen=True, slots=True)
class Metrics:
    """Accuracy, and F1 per label and macro-averaged over a set of labels."""

    n: int
    accuracy: float
    macro_f1: float
    f1_by_label: dict[Label, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Report:
    """A method's figures on one set.

    ``polar`` counts only the messages whose gold label is positive or negative,
    and reads the method's polarity from the sign of its compound value (a
    compound of exactly 0 has no polarity and counts as wrong).
    """

    three_class: Metrics
    polar: Metrics
    polar_answered_neutral: float = 0.0  # share of gold-polar messages labelled neutral
    polar_wrong_sign: float = 0.0  # share of gold-polar messages labelled the other polarity


def label_of_rating(rating: float) -> Label:
    """The gold label of a mean human rating on VADER's -4..+4 scale."""
    if not -MAX_RATING <= rating <= MAX_RATING:
        raise ValueError(f"a rating must lie in [-{MAX_RATING}, {MAX_RATING}], got {rating}")
    # The paper normalises ratings to [-1, 1] and cuts at -0.05 and +0.05,
    # the cut-offs label_of applies to a compound value.
    return label_of(rating / MAX_RATING)


def parse_vader_ground_truth(text: str, source: str) -> list[Example]:
    """Examples from a VADER ``*_GroundTruth.txt`` file: ``ID<TAB>MEAN-RATING<TAB>TEXT``."""
    examples = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise EvalSetError(
                f"{source}:{line_no}: expected 3 tab-separated fields (id, mean rating, text), "
                f"got {len(fields)}; ship the file unchanged from the vaderSentiment sdist"
            )
        try:
            rating = float(fields[1])
            if not math.isfinite(rating):
                raise ValueError(f"{fields[1]!r} is not finite")
            label = label_of_rating(rating)
        except ValueError as exc:
            raise EvalSetError(f"{source}:{line_no}: bad mean rating: {exc}") from exc
        if not fields[2].strip():
            raise EvalSetError(f"{source}:{line_no}: the text is empty")
        examples.append(Example(fields[2], label))
    if not examples:
        raise EvalSetError(f"{source}: no examples; ship the file unchanged")
    return examples


def parse_jsonl(text: str, source: str) -> list[Example]:
    """Examples from our JSON-lines format: ``{"text": ..., "label": ...}`` per line."""
    examples = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{source}:{line_no}: not valid JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise EvalSetError(f'{source}:{line_no}: expected {{"text": "...", "label": "..."}}')
        label = row.get("label")
        if label not in LABELS:
            raise EvalSetError(f"{source}:{line_no}: label must be one of {LABELS}, got {label!r}")
        examples.append(Example(row["text"], label))
    return examples


def _read_data(name: str) -> str:
    return resources.files("services.sentiment").joinpath("data", name).read_text(encoding="utf-8")


def load_eval_set(language: Lang) -> list[Example]:
    """Our own labelled set of ``language`` (short chat messages, balanced classes)."""
    name = f"eval_{language}.jsonl"
    return parse_jsonl(_read_data(name), name)


def load_vader_tweets() -> EvalSet:
    """The public English set: VADER's human-rated tweets, three classes from the mean rating."""
    examples = parse_vader_ground_truth(_read_data(VADER_TWEETS_FILE), VADER_TWEETS_FILE)
    name = f"{VADER_TWEETS_NAME} ({len(examples):,} tweets)"
    return EvalSet(
        "en",
        name,
        VADER_TWEETS_PROVENANCE,
        VADER_TWEETS_GOLD,
        tuple(examples),
        VADER_TWEETS_PUBLISHED,
    )


def load_amazon_snippets() -> EvalSet:
    """Review sentences rated by >= 20 people each (VADER's Amazon set), three classes."""
    examples = parse_vader_ground_truth(_read_data(AMAZON_SNIPPETS_FILE), AMAZON_SNIPPETS_FILE)
    return EvalSet(
        "en",
        f"{AMAZON_SNIPPETS_NAME} ({len(examples):,} sentences)",
        AMAZON_SNIPPETS_PROVENANCE,
        VADER_TWEETS_GOLD,
        tuple(examples),
    )


def eval_sets(language: Lang) -> list[EvalSet]:
    """Every set ``language`` is measured on: the public one first, where there is one."""
    own = EvalSet(
        language,
        EVAL_SET_NAMES[language],
        OWN_SET_PROVENANCE
        if language == "en"
        else f"{OWN_SET_PROVENANCE}; {NO_PUBLIC_SPANISH_SET}",
        OWN_SET_GOLD,
        tuple(load_eval_set(language)),
    )
    return [load_vader_tweets(), load_amazon_snippets(), own] if language == "en" else [own]


def metrics(
    gold: Sequence[Label], predicted: Sequence[Label], labels: Sequence[Label] = LABELS
) -> Metrics:
    """Accuracy of ``predicted`` against ``gold``, and F1 macro-averaged over ``labels``."""
    if len(gold) != len(predicted) or not gold:
        raise ValueError("gold and predicted must be non-empty and of equal length")
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    f1s: dict[Label, float] = {}
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s[label] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Metrics(len(gold), correct / len(gold), sum(f1s.values()) / len(f1s), f1s)


def _polarity(compound: float) -> Label:
    if compound > 0:
        return "positive"
    if compound < 0:
        return "negative"
    return "neutral"


def evaluate_set(eval_set: EvalSet, judge: Callable[[str], tuple[Label, float]]) -> Report:
    """Run a method (text -> its label and compound value in [-1, 1]) over ``eval_set``."""
    gold = [e.label for e in eval_set.examples]
    judged = [judge(e.text) for e in eval_set.examples]
    three_class = metrics(gold, [label for label, _ in judged])
    polar_pairs = [(g, j) for g, j in zip(gold, judged, strict=True) if g != "neutral"]
    if not polar_pairs:
        raise ValueError(f"{eval_set.name} has no positive or negative example")
    as_neutral = sum(label == "neutral" for _, (label, _) in polar_pairs)
    wrong_sign = sum(label not in ("neutral", g) for g, (label, _) in polar_pairs)
    return Report(
        three_class,
        metrics(
            [g for g, _ in polar_pairs], [_polarity(c) for _, (_, c) in polar_pairs], POLAR_LABELS
        ),
        as_neutral / len(polar_pairs),
        wrong_sign / len(polar_pairs),
    )


def by_compound(compound_of: Callable[[str], float]) -> Callable[[str], tuple[Label, float]]:
    """A judge for :func:`evaluate_set` from a method that gives only a compound value."""

    def judge(text: str) -> tuple[Label, float]:
        compound = compound_of(text)
        return label_of(compound), compound

    return judge


def evaluate(language: Lang, classify: Callable[[str], Label]) -> Metrics:
    """Run ``classify`` over our own set of ``language`` and measure it."""
    examples = load_eval_set(language)
    return metrics([e.label for e in examples], [classify(e.text) for e in examples])
