"""The trained sentiment model, in NumPy: hashed features, then a small combiner.

``python -m services.sentiment.train`` writes one ``model_<lang>.npz`` per
language into ``data/``: a weight matrix (buckets x 3 classes, float16), the
class biases and the training metadata (sets, sizes, settings). The model's
own verdict is a sum of the rows of a message's features plus the biases,
then a softmax.

The verdict the service gives comes from the :class:`Combiner`, a
multinomial logistic regression over a few numbers: the lexicon's compound
value, how much positive and negative valence its words carry, and (where
the development split showed it helps) the model's verdict: its log-odds of
positive against negative and its log-probability of neutral, and a
few surface cues of the message (question, exclamation, hashtag, laughter).
It is fitted on a development split of real tweets, so it also learns where the
neutral band lies for that language. No scikit-learn at run time.
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

from services.sentiment.features import SURFACE_CUES, featurize, surface_cues

ClassName = Literal["negative", "neutral", "positive"]
CLASSES: tuple[ClassName, ClassName, ClassName] = ("negative", "neutral", "positive")  # columns
MODEL_FILE = "model_{language}.npz"
# What the combiner may read: the lexicon's verdict, then the model's: how much more
# likely it finds positive than negative (log-odds), and how likely neutral (log).
LEXICON_INPUTS = ("compound", "positive", "negative", "strength")
MODEL_INPUTS = ("model_polarity", "model_neutral")
# And the message's surface: a question, an exclamation, a hashtag, laughter (0 or 1 each).
TEXT_INPUTS = SURFACE_CUES
Cues = tuple[float, float, float, float]  # surface_cues() of a message, TEXT_INPUTS order


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
        self._combiner: Combiner | None = None
        self._combiner_spec: object = None

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

    def log_probabilities(self, text: str, lexicon_compound: float) -> tuple[float, float, float]:
        """The model's own log-probabilities of the three classes."""
        rows = self._weights[featurize(text, lexicon_compound, self.bits)]
        # Three numbers: plain floats are several times faster than NumPy calls here.
        raw = [float(v) for v in rows.sum(axis=0) + self._bias]
        top = max(raw)
        log_total = top + math.log(sum(math.exp(v - top) for v in raw))
        return (raw[0] - log_total, raw[1] - log_total, raw[2] - log_total)

    def predict_alone(self, text: str, lexicon_compound: float) -> Prediction:
        """The model's own verdict, without the combiner."""
        return Prediction(*(math.exp(v) for v in self.log_probabilities(text, lexicon_compound)))

    @property
    def combiner(self) -> Combiner | None:
        """The combiner fitted on the development split, if the model file has one."""
        spec = self.meta.get("combiner")
        if spec is None:
            return None
        if self._combiner is None or self._combiner_spec is not spec:
            self._combiner, self._combiner_spec = Combiner.from_json(spec), spec
        return self._combiner

    def predict(self, text: str, lexical: Lexical) -> Prediction:
        """The verdict on ``text``: the combiner over the lexicon's and the model's evidence."""
        combiner = self.combiner
        if combiner is None:
            return self.predict_alone(text, lexical.compound)
        logprobs = self.log_probabilities(text, lexical.compound) if combiner.reads_model else None
        cues = surface_cues(text) if combiner.reads_text else None
        return combiner.predict(lexical, logprobs, cues)


@dataclass(frozen=True, slots=True)
class Lexical:
    """What the lexicon rules found in a message."""

    compound: float  # in [-1, 1]
    positive: float  # valence of the words that pushed it up, summed
    negative: float  # valence of the words that pushed it down, summed (>= 0)


@dataclass(frozen=True, slots=True)
class Combiner:
    """A multinomial logistic regression over a few numbers (see the module docstring)."""

    inputs: tuple[str, ...]  # names from LEXICON_INPUTS + MODEL_INPUTS + TEXT_INPUTS
    weights: tuple[tuple[float, float, float], ...]  # one row per input, CLASSES columns
    bias: tuple[float, float, float]

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(LEXICON_INPUTS + MODEL_INPUTS + TEXT_INPUTS)
        if unknown or len(self.weights) != len(self.inputs):
            raise ModelFileError(f"combiner: inputs {self.inputs} do not fit its weights")

    @property
    def reads_model(self) -> bool:
        """Whether the model's log-probabilities are among the inputs."""
        return any(name in MODEL_INPUTS for name in self.inputs)

    @property
    def reads_text(self) -> bool:
        """Whether the message's surface cues are among the inputs."""
        return any(name in TEXT_INPUTS for name in self.inputs)

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> Combiner:
        """The combiner as :meth:`to_json` wrote it."""
        try:
            return cls(
                tuple(spec["inputs"]),
                tuple((float(a), float(b), float(c)) for a, b, c in spec["weights"]),
                (float(spec["bias"][0]), float(spec["bias"][1]), float(spec["bias"][2])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"combiner: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form of the combiner."""
        return {"inputs": list(self.inputs), "weights": self.weights, "bias": self.bias}

    def values(
        self,
        lexical: Lexical,
        logprobs: tuple[float, float, float] | None,
        cues: Cues | None = None,
    ) -> list[float]:
        """The combiner's inputs for one message, in ``inputs`` order."""
        return input_values(self.inputs, lexical, logprobs, cues)

    def predict(
        self,
        lexical: Lexical,
        logprobs: tuple[float, float, float] | None,
        cues: Cues | None = None,
    ) -> Prediction:
        """Class probabilities from the lexicon's evidence, the model's log-probabilities
        and the message's surface cues (each needed only if an input reads it)."""
        scores = list(self.bias)
        for value, row in zip(self.values(lexical, logprobs, cues), self.weights, strict=True):
            scores[0] += value * row[0]
            scores[1] += value * row[1]
            scores[2] += value * row[2]
        best = max(scores)
        exps = [math.exp(v - best) for v in scores]
        total = sum(exps)
        return Prediction(exps[0] / total, exps[1] / total, exps[2] / total)


def input_values(
    names: tuple[str, ...],
    lexical: Lexical,
    logprobs: tuple[float, float, float] | None,
    cues: Cues | None = None,
) -> list[float]:
    """The values of the combiner inputs ``names`` for one message."""
    return [_input(name, lexical, logprobs, cues) for name in names]


def _input(
    name: str,
    lexical: Lexical,
    logprobs: tuple[float, float, float] | None,
    cues: Cues | None,
) -> float:
    if name in TEXT_INPUTS:
        if cues is None:
            raise ValueError(f"the combiner reads {name} but no surface cues were given")
        return cues[TEXT_INPUTS.index(name)]
    if name in MODEL_INPUTS:
        if logprobs is None:
            raise ValueError(f"the combiner reads {name} but no model output was given")
        return logprobs[2] - logprobs[0] if name == "model_polarity" else logprobs[1]
    if name == "strength":
        return abs(lexical.compound)
    value: float = getattr(lexical, name)
    return value
