"""The trained sentiment model: a linear classifier over hashed features, in NumPy.

``python -m services.sentiment.train`` writes one ``model_<lang>.npz`` per
language into ``data/``: a weight matrix (buckets x 3 classes, float16), the
class biases and the training metadata (sets, sizes, settings). Scoring a
message is a sum of the rows of its features plus the biases, then a
softmax: no scikit-learn at run time.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.sentiment.features import featurize

ClassName = Literal["negative", "neutral", "positive"]
CLASSES: tuple[ClassName, ClassName, ClassName] = ("negative", "neutral", "positive")  # columns
MODEL_FILE = "model_{language}.npz"
# The lexicon's class scores run from 0 to this; with a weight of 1 a clear lexicon
# verdict moves the odds by about e**3.
LEXICON_SCALE = 3.0


class ModelFileError(ValueError):
    """A model file is missing or malformed; retrain with ``make train-sentiment``."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """Class probabilities of one message, in :data:`CLASSES` order."""

    negative: float
    neutral: float
    positive: float

    @property
    def label(self) -> ClassName:
        """The most probable class."""
        probs = (self.negative, self.neutral, self.positive)
        return CLASSES[probs.index(max(probs))]

    @property
    def polarity(self) -> float:
        """P(positive) - P(negative), in [-1, 1]."""
        return self.positive - self.negative


class LinearModel:
    """Weights ``(2**bits, 3)`` and biases ``(3,)`` of a multinomial logistic regression."""

    def __init__(
        self,
        weights: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        bits: int,
        meta: dict[str, Any],
    ) -> None:
        if weights.shape != (1 << bits, len(CLASSES)) or bias.shape != (len(CLASSES),):
            raise ModelFileError(
                f"weights {weights.shape} and bias {bias.shape} do not fit {bits} bits"
            )
        self._weights = weights
        self._bias = bias
        self.bits = bits
        self.meta = meta

    @classmethod
    def load(cls, language: str) -> LinearModel:
        """The model shipped in ``data/`` for ``language``."""
        path = resources.files("services.sentiment").joinpath(
            "data", MODEL_FILE.format(language=language)
        )
        return cls.from_file(path, "; rebuild it with `make train-sentiment`")

    @classmethod
    def from_file(cls, path: Path | Traversable, advice: str = "") -> LinearModel:
        """A model written by :meth:`save` to ``path``; ``advice`` ends the error message."""
        try:
            with path.open("rb") as fh, np.load(fh) as npz:
                meta = json.loads(str(npz["meta"]))
                return cls(
                    npz["weights"].astype(np.float32),
                    npz["bias"].astype(np.float32),
                    int(meta["bits"]),
                    meta,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ModelFileError(f"{path.name}: {exc}{advice}") from exc

    def save(self, path: str) -> None:
        """Write the model as ``load`` reads it (weights stored as float16).

        The same model gives the same bytes: unlike ``np.savez_compressed``, no
        time stamp goes into the archive.
        """
        arrays: dict[str, npt.NDArray[Any]] = {
            "weights": self._weights.astype(np.float16),
            "bias": self._bias.astype(np.float32),
            "meta": np.array(json.dumps({**self.meta, "bits": self.bits}, sort_keys=True)),
        }
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                archive.writestr(entry, buffer.getvalue(), zipfile.ZIP_DEFLATED, 9)

    @property
    def lexicon_weight(self) -> float:
        """How much the lexicon's verdict adds to the model's (chosen on a development split)."""
        return float(self.meta.get("lexicon_weight", 0.0))

    def logits(self, text: str, lexicon_compound: float) -> npt.NDArray[np.float32]:
        """The model's own class scores (before the lexicon is added)."""
        rows = self._weights[featurize(text, lexicon_compound, self.bits)]
        logits: npt.NDArray[np.float32] = rows.sum(axis=0) + self._bias
        return logits

    def predict(self, text: str, lexicon_compound: float) -> Prediction:
        """Class probabilities of ``text``, the model's and the lexicon's verdicts combined."""
        return combine(self.logits(text, lexicon_compound), lexicon_compound, self.lexicon_weight)


def lexicon_scores(compound: float) -> tuple[float, float, float]:
    """The lexicon's compound value as class scores: how negative, neutral, positive."""
    return (
        LEXICON_SCALE * max(-compound, 0.0),
        LEXICON_SCALE * (1.0 - abs(compound)),
        LEXICON_SCALE * max(compound, 0.0),
    )


def combine(logits: npt.NDArray[np.float32], lexicon_compound: float, weight: float) -> Prediction:
    """Softmax of the model's log-probabilities plus ``weight`` times the lexicon's scores."""
    # Three numbers: plain floats are several times faster than NumPy calls here.
    raw = [float(v) for v in logits]
    top = max(raw)
    log_total = math.log(sum(math.exp(v - top) for v in raw))
    lexical = lexicon_scores(lexicon_compound)
    scores = [v - top - log_total + weight * lex for v, lex in zip(raw, lexical, strict=True)]
    best = max(scores)
    exps = [math.exp(v - best) for v in scores]
    total = sum(exps)
    return Prediction(exps[0] / total, exps[1] / total, exps[2] / total)
