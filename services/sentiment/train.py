"""Train the sentiment models: ``python -m services.sentiment.train`` (``make train-sentiment``).

For each language, reads the training sets committed in ``training/`` (see
:mod:`.datasets`; nothing is fetched), computes every text's features
(:mod:`.features`, the lexicon's verdict included), and fits a multinomial
logistic regression with scikit-learn (a training-only dependency:
``pip install -e '.[train]'``). The regularisation strength is chosen on a
10% split of the training data itself. The same data and settings give the
same model file, byte for byte.

The combiner (:class:`.model.Combiner`: which inputs it reads and their
weights) was fitted on the language's development split (public tweets that
may not be copied into the repository: SemEval-2017 validation for English,
InterTASS training + validation for Spanish) and is recorded in
``training/calibration.json``; training reads it from there.
``--tune`` fits it again on the development splits, which must then be in
``--data-dir`` (``python -m services.sentiment.datasets`` says how), and
rewrites that file. The evaluation sets are never read here. The weights go
to ``services/sentiment/data/model_<lang>.npz``, which the service loads
with NumPy alone.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from services.sentiment.datasets import DEFAULT_DATA_DIR, TRAINING_DIR, public_sets
from services.sentiment.evaluation import Example, metrics
from services.sentiment.features import DEFAULT_BITS, featurize, surface_cues
from services.sentiment.language import Lang
from services.sentiment.model import (
    CLASSES,
    LEXICON_INPUTS,
    MODEL_INPUTS,
    TEXT_INPUTS,
    Combiner,
    LinearModel,
    input_values,
)
from services.sentiment.scoring import EnglishScorer, Label, SpanishScorer, lexical_evidence

SEED = 17
C_GRID = (0.1, 0.3, 1.0)  # inverse regularisation strengths tried
COMBINER_C_GRID = (0.1, 1.0)  # the combiner's inverse regularisation strengths, tried
COMBINER_FOLDS = 5
COMBINER_REPEATS = 5  # shuffles of the folds, averaged
TUNING_SHARE = 0.1
MAX_ITER = 300
OUTPUT_DIR = Path(__file__).parent / "data"
CALIBRATION_FILE = TRAINING_DIR / "calibration.json"
ALL_INPUTS = LEXICON_INPUTS + MODEL_INPUTS + TEXT_INPUTS  # what the combiner may read


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


def train(
    language: Lang,
    bits: int = DEFAULT_BITS,
    *,
    extra_dir: Path | None = None,
    limit: int | None = None,
) -> LinearModel:
    """Fit the model of ``language`` on its committed training sets.

    ``extra_dir``: also train on the optional sets (role ``extra``) read from there.
    ``limit``: at most that many examples of each set (a quick, smaller model).
    """
    sets = public_sets(language, "train")
    if extra_dir is not None:
        sets += public_sets(language, "extra")
    examples: list[Example] = []
    described = []
    for public in sets:
        loaded = public.load(extra_dir or DEFAULT_DATA_DIR)[:limit]
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
    return LinearModel(np.ascontiguousarray(weights), bias, bits, meta)


def read_calibration() -> dict[str, dict[str, Any]]:
    """The settings chosen on the development splits, per language (committed)."""
    settings: dict[str, dict[str, Any]] = json.loads(CALIBRATION_FILE.read_text(encoding="utf-8"))
    return settings


def write_calibration(settings: dict[str, dict[str, Any]]) -> None:
    """Record the settings chosen on the development splits."""
    text = json.dumps(settings, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    CALIBRATION_FILE.write_text(text, encoding="utf-8")


def _fit_combiner(model: LinearModel, language: Lang, data_dir: Path) -> dict[str, Any]:
    """Fit the combiner on the development split; which inputs it reads is chosen there too.

    Every candidate (lexicon evidence alone, with the model's log-odds of positive
    against negative, with those and its log-probability of neutral, or with all
    of these and the message's surface cues; a few regularisation strengths) is
    scored by 5-fold cross-validation on the development split, repeated over
    several shuffles; the best is refitted on the whole split.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    dev: list[Example] = []
    names = []
    for public in public_sets(language, "dev"):
        dev.extend(public.load(data_dir))
        names.append(public.key)
    scorer = lexicon_scorer(language)
    rows = []
    for example in dev:
        score = scorer.score(example.text)
        logprobs = model.log_probabilities(example.text, score.compound)
        cues = surface_cues(example.text)
        rows.append(input_values(ALL_INPUTS, lexical_evidence(score), logprobs, cues))
    table = np.array(rows)
    y = np.array([CLASSES.index(e.label) for e in dev])
    gold: list[Label] = [e.label for e in dev]
    results: dict[str, float] = {}
    best: tuple[float, tuple[str, ...], float] = (-1.0, (), 0.0)
    candidates: tuple[tuple[str, ...], ...] = (
        LEXICON_INPUTS,
        LEXICON_INPUTS + MODEL_INPUTS[:1],
        LEXICON_INPUTS + MODEL_INPUTS,
        ALL_INPUTS,
    )
    for inputs in candidates:
        x = table[:, : len(inputs)]  # each candidate is a prefix of ALL_INPUTS
        for c in COMBINER_C_GRID:
            fitted = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER)
            # A development split of a few hundred tweets: several shuffles of the
            # folds, averaged, so that one lucky split does not decide.
            f1s = []
            for repeat in range(COMBINER_REPEATS):
                folds = StratifiedKFold(COMBINER_FOLDS, shuffle=True, random_state=SEED + repeat)
                predicted = [CLASSES[i] for i in cross_val_predict(fitted, x, y, cv=folds)]
                f1s.append(metrics(gold, predicted).macro_f1)
            f1 = sum(f1s) / len(f1s)
            key = f"{'+'.join(inputs)} C={c}"
            results[key] = round(f1, 4)
            print(f"{language}: combiner {key}: cross-validated macro-F1 {f1:.3f} on {names}")
            if f1 > best[0]:
                best = (f1, inputs, c)
    f1, inputs, c = best
    final = LogisticRegression(C=c, class_weight="balanced", max_iter=MAX_ITER)
    final.fit(table[:, : len(inputs)], y)
    order_of = [list(final.classes_).index(i) for i in range(len(CLASSES))]
    weights = final.coef_[order_of].T
    combiner = Combiner(
        inputs,
        tuple((round(float(a), 6), round(float(b), 6), round(float(d), 6)) for a, b, d in weights),
        tuple(round(float(v), 6) for v in final.intercept_[order_of]),  # type: ignore[arg-type]
    )
    return {
        "combiner": combiner.to_json(),
        "combiner_C": c,
        "dev_sets": names,
        "dev_examples": len(dev),
        "dev_cv_macro_f1": round(f1, 4),
        "candidates": results,
    }


def main(argv: list[str] | None = None) -> int:
    """Train and write the models; exit status 1 with a clear message if data is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the development splits (--tune) and the optional sets (--extra) are",
    )
    parser.add_argument("--language", choices=["en", "es"], action="append")
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR)
    parser.add_argument(
        "--tune",
        action="store_true",
        help="fit the combiner again on the development splits in --data-dir and "
        "record it in training/calibration.json",
    )
    parser.add_argument(
        "--tune-only",
        action="store_true",
        help="keep the shipped weights, only fit the combiner again (implies --tune)",
    )
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also train on the optional sets in --data-dir (Mozetič tweets: their texts "
        "have no licence, so the shipped models are trained without them)",
    )
    args = parser.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("training needs scikit-learn: pip install -e '.[train]'", file=sys.stderr)
        return 1
    from services.sentiment.datasets import BundleError, DataFileError

    calibration = read_calibration()
    for language in args.language or ["en", "es"]:
        try:
            if args.tune_only:
                model = LinearModel.load(language)
            else:
                model = train(language, extra_dir=args.data_dir if args.extra else None)
            if args.tune or args.tune_only:
                chosen = _fit_combiner(model, language, args.data_dir)
                calibration[language] = chosen
                write_calibration(calibration)
            model.meta.update(calibration[language])
        except (DataFileError, BundleError) as exc:
            print(str(exc), file=sys.stderr)
            return 1
        path = args.out / f"model_{language}.npz"
        model.save(str(path))
        print(f"{language}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
