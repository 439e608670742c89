"""Train the sentiment models: ``python -m services.sentiment.train`` (``make train-sentiment``).

For each language, reads the training sets of :mod:`.datasets` from the data
directory, computes every text's features (:mod:`.features`, the lexicon's
verdict included), and fits a multinomial logistic regression with
scikit-learn (a training-only dependency: ``pip install -e '.[train]'``).
The regularisation strength is chosen on a 10% split of the training data
itself. One more scalar, how much the lexicon's verdict adds to the model's
(:func:`.model.combine`), is chosen on the language's development split (a
validation split of a public tweet set); the evaluation sets are never read here. The weights go to
``services/sentiment/data/model_<lang>.npz``, which the service loads with
NumPy alone.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from services.sentiment.datasets import DEFAULT_DATA_DIR, public_sets
from services.sentiment.evaluation import Example, metrics
from services.sentiment.features import DEFAULT_BITS, featurize
from services.sentiment.language import Lang
from services.sentiment.model import CLASSES, LinearModel, combine
from services.sentiment.scoring import EnglishScorer, Label, SpanishScorer

SEED = 17
C_GRID = (0.1, 0.3, 1.0)  # inverse regularisation strengths tried
LEXICON_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # how much the lexicon adds, tried
TUNING_SHARE = 0.1
MAX_ITER = 300
OUTPUT_DIR = Path(__file__).parent / "data"


def lexicon_scorer(language: Lang) -> EnglishScorer | SpanishScorer:
    """The rule-based scorer whose verdict is one of the model's features."""
    return EnglishScorer() if language == "en" else SpanishScorer()


def _matrix(examples: list[Example], compounds: list[float], bits: int) -> Any:
    from scipy.sparse import csr_matrix

    indptr, indices = [0], []
    for example, compound in zip(examples, compounds, strict=True):
        indices.extend(featurize(example.text, compound, bits))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    matrix = csr_matrix((data, indices, indptr), shape=(len(examples), 1 << bits))
    matrix.sum_duplicates()
    return matrix


def _fit(x: Any, y: list[int], c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=MAX_ITER, class_weight="balanced")
    return model.fit(x, y)


def train(language: Lang, data_dir: Path, bits: int = DEFAULT_BITS) -> LinearModel:
    """Fit the model of ``language`` on its training sets."""
    sets = public_sets(language, "train")
    examples: list[Example] = []
    described = []
    for public in sets:
        loaded = public.load(data_dir)
        examples.extend(loaded)
        counts = Counter(e.label for e in loaded)
        described.append(
            {
                "key": public.key,
                "name": public.name,
                "repository": public.repository,
                "commit": public.commit,
                "licence": public.licence,
                "examples": {label: counts.get(label, 0) for label in CLASSES},
            }
        )
        print(f"{language}: {public.key}: {len(loaded)} examples {dict(counts)}", flush=True)
    scorer = lexicon_scorer(language)
    compounds = [scorer.score(e.text).compound for e in examples]
    order = list(range(len(examples)))
    random.Random(SEED).shuffle(order)
    examples = [examples[i] for i in order]
    compounds = [compounds[i] for i in order]
    labels: list[Label] = [e.label for e in examples]
    y = [CLASSES.index(label) for label in labels]
    x = _matrix(examples, compounds, bits)

    cut = int(len(examples) * TUNING_SHARE)
    best_c, best_f1 = C_GRID[0], -1.0
    for c in C_GRID:
        fitted = _fit(x[cut:], y[cut:], c)
        predicted: list[Label] = [CLASSES[i] for i in fitted.predict(x[:cut])]
        f1 = metrics(labels[:cut], predicted).macro_f1
        print(f"{language}: C={c}: macro-F1 {f1:.3f} on the 10% tuning split", flush=True)
        if f1 > best_f1:
            best_c, best_f1 = c, f1
    final = _fit(x, y, best_c)
    order_of = [list(final.classes_).index(i) for i in range(len(CLASSES))]
    weights = final.coef_[order_of].T.astype(np.float32)
    bias = final.intercept_[order_of].astype(np.float32)
    meta: dict[str, Any] = {
        "language": language,
        "training_sets": described,
        "examples": len(examples),
        "C": best_c,
        "tuning_macro_f1": round(best_f1, 4),
        "seed": SEED,
        "features": "word 1-2-grams with negation marking, char 4-grams, lexicon bins",
    }
    model = LinearModel(np.ascontiguousarray(weights), bias, bits, meta)
    meta.update(_tune_lexicon_weight(model, language, data_dir, scorer))
    return model


def _tune_lexicon_weight(
    model: LinearModel, language: Lang, data_dir: Path, scorer: EnglishScorer | SpanishScorer
) -> dict[str, Any]:
    """Choose how much the lexicon adds to the model, on the development split."""
    dev: list[Example] = []
    names = []
    for public in public_sets(language, "dev"):
        dev.extend(public.load(data_dir))
        names.append(public.key)
    gold: list[Label] = [e.label for e in dev]
    scored = [
        (model.logits(e.text, c), c) for e, c in ((e, scorer.score(e.text).compound) for e in dev)
    ]
    best_weight, best_f1 = LEXICON_WEIGHTS[0], -1.0
    for weight in LEXICON_WEIGHTS:
        predicted: list[Label] = [combine(lg, c, weight).label for lg, c in scored]
        f1 = metrics(gold, predicted).macro_f1
        print(f"{language}: lexicon weight {weight}: macro-F1 {f1:.3f} on {names}", flush=True)
        if f1 > best_f1:
            best_weight, best_f1 = weight, f1
    return {
        "lexicon_weight": best_weight,
        "dev_sets": names,
        "dev_macro_f1": round(best_f1, 4),
    }


def main(argv: list[str] | None = None) -> int:
    """Train and write the models; exit status 1 with a clear message if data is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--language", choices=["en", "es"], action="append")
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    parser.add_argument(
        "--tune-only",
        action="store_true",
        help="keep the shipped weights, only choose the lexicon weight again",
    )
    args = parser.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("training needs scikit-learn: pip install -e '.[train]'", file=sys.stderr)
        return 1
    from services.sentiment.datasets import DataMissingError

    for language in args.language or ["en", "es"]:
        try:
            if args.tune_only:
                model = LinearModel.load(language)
                model.meta.update(
                    _tune_lexicon_weight(model, language, args.data_dir, lexicon_scorer(language))
                )
            else:
                model = train(language, args.data_dir)
        except DataMissingError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        path = args.out / f"model_{language}.npz"
        model.save(str(path))
        print(f"{language}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
