"""Training from the repository alone: the committed sets, their files, a small run."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest

from services.sentiment.datasets import (
    PUBLIC_SETS,
    TRAINING_DIR,
    BundleError,
    DataMissingError,
    public_sets,
    read_bundle,
    write_bundle,
)
from services.sentiment.evaluation import Example
from services.sentiment.model import CLASSES, Lexical, LinearModel, ModelFileError
from services.sentiment.train import read_calibration

MAX_BUNDLE_BYTES = 4_000_000  # the committed training data, all sets together


def test_every_default_training_set_is_committed_with_its_licence() -> None:
    for language in ("en", "es"):
        sets = public_sets(language, "train")
        assert sets and all(s.bundled for s in sets)
        labels = Counter(e.label for s in sets for e in s.load())
        assert set(labels) == set(CLASSES), language  # every class is taught
    licences = {p.name for p in TRAINING_DIR.glob("LICENSE-*.txt")}
    assert licences == {
        "LICENSE-GoEmotions.txt",
        "LICENSE-XED.txt",
        "LICENSE-UD-Spanish-GSD.txt",
        "LICENSE-SentimentLabelledSentences.txt",
    }
    assert sum(p.stat().st_size for p in TRAINING_DIR.glob("*.tsv.gz")) < MAX_BUNDLE_BYTES
    assert {p.name for p in TRAINING_DIR.glob("*.tsv.gz")} == {
        s.bundle.name for s in PUBLIC_SETS if s.bundled
    }


def test_tweets_without_a_licence_are_never_committed_nor_trained_on_by_default() -> None:
    for public in PUBLIC_SETS:
        if "mozetic" in public.key:
            assert public.role == "extra" and not public.bundled
            assert not public.bundle.exists()
    for language in ("en", "es"):
        trained_on = {s["key"] for s in LinearModel.load(language).meta["training_sets"]}
        assert trained_on == {s.key for s in public_sets(language, "train")}


def test_a_committed_set_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "set.tsv.gz"
    examples = [Example("muy\tbien\nhecho", "positive"), Example("  ", "neutral")]
    write_bundle(path, examples)
    assert read_bundle(path) == [Example("muy bien hecho", "positive")]
    first = path.read_bytes()
    write_bundle(path, examples)
    assert path.read_bytes() == first  # no time stamp: same examples, same bytes


def test_a_malformed_committed_set_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("positive\tbien\nhappy\tbien\n")
    with pytest.raises(BundleError, match=r"bad\.tsv\.gz:2"):
        read_bundle(path)


def test_a_committed_set_cut_short_or_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.sentiment import datasets
    from services.sentiment.train import main

    whole = (TRAINING_DIR / "xed_es.tsv.gz").read_bytes()
    (tmp_path / "xed_es.tsv.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BundleError, match=r"xed_es\.tsv\.gz: cannot be read"):
        read_bundle(tmp_path / "xed_es.tsv.gz")
    with pytest.raises(BundleError, match=r"nothing\.tsv\.gz: cannot be read"):
        read_bundle(tmp_path / "nothing.tsv.gz")
    # Training reports it and writes nothing (no traceback).
    monkeypatch.setattr(datasets, "TRAINING_DIR", tmp_path)
    assert main(["--language", "es", "--out", str(tmp_path)]) == 1
    assert "xed_es.tsv.gz: cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "model_es.npz").exists()


def test_spanish_subtitle_lines_are_neutral_when_their_english_line_has_no_sentiment_word(
    tmp_path: Path,
) -> None:
    pair = "en/1.xml.gz\tes/1.xml.gz\t{0}\t{0}\t{1}\t{2}"
    pairs = "\n".join(
        [
            pair.format(1, "When are you going?", "¿Cuándo te vas?"),
            pair.format(2, "I love you so much.", "Te quiero tanto."),  # "love": not neutral
            pair.format(3, "See you around.", "Nos vemos."),  # projected polar below
            pair.format(4, "When are you leaving?", "¿Cuándo te vas?"),  # already taken
            pair.format(5, "Stay here.", ""),
            "a truncated line",
        ]
    )
    projections = "Nos vemos.\t5, 8\n¿Cuándo te vas?\t2\n"
    (tmp_path / "xed_pairs-es.txt").write_text(pairs, encoding="utf-8")
    (tmp_path / "xed_es-projections.tsv").write_text(projections, encoding="utf-8")
    neutral = next(s for s in PUBLIC_SETS if s.key == "xed_neutral_es")
    assert neutral.load_source(tmp_path) == [Example("¿Cuándo te vas?", "neutral")]


def test_the_optional_sets_say_how_to_get_them(tmp_path: Path) -> None:
    mozetic = next(s for s in PUBLIC_SETS if s.key == "mozetic_es")
    with pytest.raises(DataMissingError, match=r"joemzhao/tweets-retriever"):
        mozetic.load(tmp_path)


def test_the_calibration_chosen_on_development_splits_is_committed() -> None:
    calibration = read_calibration()
    for language in ("en", "es"):
        assert calibration[language]["dev_sets"] == [s.key for s in public_sets(language, "dev")]
        model = LinearModel.load(language)
        assert model.meta["combiner"] == calibration[language]["combiner"]
        assert set(model.meta["combiner"]["inputs"]) >= {"compound", "positive", "negative"}


def test_a_small_training_run_from_the_repository_is_reproducible(tmp_path: Path) -> None:
    from services.sentiment.train import train

    paths = []
    for run in (1, 2):
        model = train("es", bits=12, limit=150)
        model.meta.update(read_calibration()["es"])
        paths.append(tmp_path / f"model{run}.npz")
        model.save(str(paths[-1]))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    loaded = LinearModel.from_file(paths[0])
    assert loaded.bits == 12 and loaded.meta["examples"] == 450
    assert {s["key"] for s in loaded.meta["training_sets"]} == {
        "xed_es",
        "xed_neutral_es",
        "ud_gsd_es",
    }
    assert loaded.predict("Qué asco, odio esto", Lexical(-0.8, 0.0, 3.0)).label == "negative"


def test_a_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "model_xx.npz"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match=r"model_xx\.npz"):
        LinearModel.from_file(broken)
