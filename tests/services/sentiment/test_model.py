"""The trained model: its features, its file, how it combines with the lexicon, its data."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sentiment.datasets import (
    PUBLIC_SETS,
    DataFormatError,
    DataMissingError,
    how_to_fetch,
    public_sets,
)
from services.sentiment.features import feature_names, featurize, surface_cues, tokens
from services.sentiment.model import (
    CLASSES,
    LEXICON_INPUTS,
    MODEL_INPUTS,
    TEXT_INPUTS,
    Combiner,
    Lexical,
    LinearModel,
    ModelFileError,
)
from services.sentiment.scoring import SentimentAnalyzer


@pytest.fixture(scope="module")
def analyzer() -> SentimentAnalyzer:
    return SentimentAnalyzer()


# -- features ---------------------------------------------------------------


def test_tokens_normalise_users_links_digits_runs_and_accents() -> None:
    assert tokens("@bob mira http://x.co/a 2024 ¡Qué BONITOOOO!") == [
        "atuser",
        "mira",
        "httpurl",
        "0",
        "que",
        "bonitoo",
        "!",
    ]


def test_negation_marks_the_words_of_its_clause_only() -> None:
    assert tokens("I don't like it. It's great") == [
        "i",
        "dont",
        "NOT_like",
        "NOT_it",
        "its",
        "great",
    ]
    assert tokens("no me gusta nada, es horrible") == [
        "no",
        "NOT_me",
        "NOT_gusta",
        "nada",
        "es",
        "horrible",
    ]


def test_emoticons_and_emoji_are_tokens() -> None:
    assert tokens("great :) 😂") == ["great", ":)", "😂"]


def test_features_carry_the_lexicon_verdict_and_hash_stably() -> None:
    names = feature_names("so good", 0.7)
    assert "lex:++" in names and "w:good" in names and "b:so good" in names
    assert featurize("so good", 0.7, bits=10) == featurize("so good", 0.7, bits=10)
    assert all(0 <= i < 1024 for i in featurize("so good", 0.7, bits=10))
    assert feature_names("", 0.0) == ["lex:0", "empty"]
    text = "I don't like it, soooo bad :( @bob"
    mask = (1 << 18) - 1
    expected = sorted(zlib.crc32(n.encode()) & mask for n in feature_names(text, -0.4))
    assert sorted(featurize(text, -0.4)) == expected


# -- model ------------------------------------------------------------------


def _toy_model(bits: int = 4) -> LinearModel:
    weights = np.zeros((1 << bits, 3), dtype=np.float32)
    return LinearModel(weights, np.array([0.0, 1.0, 0.0], dtype=np.float32), bits, {})


def _combiner(inputs: tuple[str, ...], **rows: tuple[float, float, float]) -> Combiner:
    weights = tuple(rows.get(name, (0.0, 0.0, 0.0)) for name in inputs)
    return Combiner(inputs, weights, (0.0, 1.0, 0.0))


def test_a_model_round_trips_through_its_file(tmp_path: Path) -> None:
    model = _toy_model()
    model.meta["combiner"] = _combiner(LEXICON_INPUTS, compound=(-4.0, 0.0, 4.0)).to_json()
    model.save(str(tmp_path / "m.npz"))
    with np.load(tmp_path / "m.npz") as npz:
        assert npz["weights"].dtype == np.float16
    loaded = LinearModel.from_file(tmp_path / "m.npz")
    lexical = Lexical(0.8, 2.0, 0.0)
    assert loaded.predict("hello", lexical) == model.predict("hello", lexical)
    assert loaded.predict("hello", lexical).label == "positive"
    assert loaded.combiner == model.combiner


def test_a_model_whose_shape_does_not_fit_is_refused() -> None:
    with pytest.raises(ModelFileError, match="do not fit"):
        LinearModel(np.zeros((8, 3), dtype=np.float32), np.zeros(3, dtype=np.float32), 4, {})
    with pytest.raises(ModelFileError, match="combiner"):
        Combiner(("compound", "mood"), ((0, 0, 0), (0, 0, 0)), (0, 0, 0))
    model = _toy_model()
    model.meta["combiner"] = {"inputs": ["compound"], "weights": [[1, 2]], "bias": [0, 0, 0]}
    with pytest.raises(ModelFileError, match="combiner"):
        model.predict("hello", Lexical(0.5, 1.0, 0.0))


def test_the_combiner_weighs_the_lexicon_and_the_model_as_fitted() -> None:
    lexicon_only = _combiner(LEXICON_INPUTS, compound=(-4.0, 0.0, 4.0))
    assert not lexicon_only.reads_model
    assert lexicon_only.predict(Lexical(0.9, 3.0, 0.0), None).label == "positive"
    assert lexicon_only.predict(Lexical(-0.9, 0.0, 3.0), None).label == "negative"
    assert lexicon_only.predict(Lexical(0.0, 0.0, 0.0), None).label == "neutral"
    both = _combiner(
        LEXICON_INPUTS + MODEL_INPUTS,
        compound=(-1.0, 0.0, 1.0),
        model_polarity=(-1.0, 0.0, 1.0),
        model_neutral=(0.0, 2.0, 0.0),
    )
    assert both.reads_model
    # A mildly positive lexicon verdict, a model sure the message is negative.
    probs = both.predict(Lexical(0.3, 1.0, 0.0), (-0.05, -3.0, -3.0))
    assert probs.label == "negative"
    assert sum((probs.negative, probs.neutral, probs.positive)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="model_"):
        both.predict(Lexical(0.3, 1.0, 0.0), None)


def test_surface_cues_see_questions_exclamations_hashtags_and_laughter() -> None:
    assert surface_cues("¿Quién viene mañana?") == (1.0, 0.0, 0.0, 0.0)
    assert surface_cues("¡Qué golazo! #VamosRayo") == (0.0, 1.0, 1.0, 0.0)
    assert surface_cues("jajaja no puedo más") == (0.0, 0.0, 0.0, 1.0)
    assert surface_cues("JEJEJE xD haha")[3] == 1.0
    # Words that merely contain the letters are not laughter.
    assert surface_cues("Jaén, jamás, hazlo, Hehuetlán, xDrive") == (0.0, 0.0, 0.0, 0.0)


def test_the_combiner_reads_surface_cues_when_fitted_to() -> None:
    cued = _combiner(LEXICON_INPUTS + TEXT_INPUTS, question=(0.0, 3.0, 0.0))
    assert cued.reads_text and not cued.reads_model
    lexical = Lexical(0.0, 0.0, 0.0)
    asking = surface_cues("¿A qué hora abre?")
    assert (
        cued.predict(lexical, None, asking).neutral
        > cued.predict(lexical, None, (0, 0, 0, 0)).neutral
    )
    with pytest.raises(ValueError, match="question"):
        cued.predict(lexical, None)
    model = _toy_model()
    model.meta["combiner"] = _combiner(
        LEXICON_INPUTS + TEXT_INPUTS, laughter=(0.0, 0.0, 5.0)
    ).to_json()
    assert model.predict("jajaja", lexical).label == "positive"  # cues computed from the text
    assert model.predict("vale", lexical).label == "neutral"


def test_the_shipped_models_are_small_and_say_what_they_were_trained_on() -> None:
    for language in ("en", "es"):
        model = LinearModel.load(language)
        assert model.meta["language"] == language
        keys = {s["key"] for s in model.meta["training_sets"]}
        assert keys == {s.key for s in public_sets(language, "train")}
        assert model.combiner is not None and model.meta["dev_sets"]
    data = Path(__file__).parents[3] / "services" / "sentiment" / "data"
    assert sum(f.stat().st_size for f in data.glob("model_*.npz")) < 20_000_000


def test_the_model_scores_messages_and_keeps_the_words_that_drove_it(
    analyzer: SentimentAnalyzer,
) -> None:
    good = analyzer.score_as("I love this, it is wonderful!", "en")
    assert good.label == "positive" and good.compound > 0.3
    assert "love" in good.positive_drivers and not good.negative_drivers
    bad = analyzer.score_as("Me han cancelado el vuelo, qué vergüenza", "es")
    assert bad.label == "negative" and bad.compound < 0
    assert {"vergüenza", "cancelado"} <= set(bad.negative_drivers)
    assert CLASSES == ("negative", "neutral", "positive")


# -- data sets --------------------------------------------------------------


def test_training_and_evaluation_sets_never_share_a_source() -> None:
    def sources(role: str) -> set[str]:
        return {s.repository for s in PUBLIC_SETS if s.role == role}

    assert not sources("train") & sources("eval")
    assert not sources("train") & sources("dev")
    for language in ("en", "es"):
        assert len(public_sets(language, "eval")) >= 2
        assert public_sets(language, "train")
    for public in PUBLIC_SETS:
        assert public.licence and public.commit and public.gold


def test_a_missing_data_file_says_where_it_comes_from(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"github\.com/Helsinki-NLP/XED"):
        next(s for s in PUBLIC_SETS if s.key == "xed_es").load_source(tmp_path)
    assert "git -C Helsinki-NLP+XED show" in how_to_fetch(tmp_path)


def test_each_public_format_is_parsed(tmp_path: Path) -> None:
    files = {
        "xed_es-projections.tsv": "Qué alegría\t5\nQué asco\t3, 1\nMixto\t5, 1\nVaya\t7\n",
        "mozetic_spa.txt": "1\tPositive\t\\RT genial\n2\tNegative\tfatal\ncontinuation\n",
        "sentimp21_es.csv": 'tweet_id,full_text,final_label\n1,"hola, todos",0\n2,x,x\n',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    by_key = {s.key: s for s in PUBLIC_SETS}
    xed = by_key["xed_es"].load_source(tmp_path)
    assert [(e.text, e.label) for e in xed] == [
        ("Qué alegría", "positive"),
        ("Qué asco", "negative"),
    ]
    mozetic = by_key["mozetic_es"].load(tmp_path)
    assert [(e.text, e.label) for e in mozetic] == [
        ("RT genial", "positive"),
        ("fatal", "negative"),
    ]
    sentimp = by_key["sentimp21_es"].load(tmp_path)
    assert [(e.text, e.label) for e in sentimp] == [("hola, todos", "neutral")]


def test_each_english_review_and_tweet_format_is_parsed(tmp_path: Path) -> None:
    opener = [
        {"text": "Great staff", "opinions": [{"Polarity": "Positive"}]},
        {"text": "Room 12", "opinions": []},
        {"text": "Nice but loud", "opinions": [{"Polarity": "Positive"}, {"Polarity": "Negative"}]},
        {"text": "Dirty", "opinions": [{"Polarity": "Negative"}, {"Polarity": "Negative"}]},
    ]
    files = {
        # Kotzias et al.: spaces before the tab, CRLF line ends, a line without a score.
        "kotzias_amazon_cells_labelled.txt": "Works great.  \t1\r\nBroke in a week.\t0\r\n"
        "stray\r\n",
        "kotzias_imdb_labelled.txt": "A waste of time.  \t0\n",
        "kotzias_yelp_labelled.txt": "Loved it, really\t1\n\t1\n",
        "sentiment140_test.csv": '"4","3","Mon May 11","kindle2","u","I love it, really"\n'
        '"2","4","Mon May 11","q","u","Just landed"\n"0","5","d","q","u","ugh"\n"9","6",x\n',
        "opener_en_train.json": json.dumps(opener),
        "opener_en_dev.json": "[]",
        "opener_en_test.json": "[]",
        "tackstrom_finegrained.txt": "books_neg_2\nbooks\t2\nneg\tToo many errors.\n"
        "nr\tIt is a novel.\nmix\tGood start, bad end.\nneu\tRead Gurney.\n\n"
        "dvds_pos_1\ndvds\t5\npos\tSuperb.\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8", newline="")
    by_key = {s.key: s for s in PUBLIC_SETS}

    def pairs(key: str) -> list[tuple[str, str]]:
        return [(e.text, e.label) for e in by_key[key].load_source(tmp_path)]

    assert pairs("review_sentences_en") == [
        ("Works great.", "positive"),
        ("Broke in a week.", "negative"),
        ("A waste of time.", "negative"),
        ("Loved it, really", "positive"),
    ]
    assert pairs("sentiment140_test") == [
        ("I love it, really", "positive"),
        ("Just landed", "neutral"),
        ("ugh", "negative"),
    ]
    assert pairs("opener_en") == [
        ("Great staff", "positive"),
        ("Room 12", "neutral"),
        ("Dirty", "negative"),
    ]
    assert pairs("finegrained_reviews_en") == [
        ("Too many errors.", "negative"),
        ("It is a novel.", "neutral"),
        ("Read Gurney.", "neutral"),
        ("Superb.", "positive"),
    ]


def test_a_malformed_public_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    by_key = {s.key: s for s in PUBLIC_SETS}
    (tmp_path / "opener_en_train.json").write_text('[{"text": "cut sh', encoding="utf-8")
    (tmp_path / "opener_en_dev.json").write_text("[]", encoding="utf-8")
    (tmp_path / "opener_en_test.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"opener_en_train\.json.*semeval22_structured"):
        by_key["opener_en"].load_source(tmp_path)
    (tmp_path / "sentiment140_test.csv").write_bytes(b'"4","1","d","q","u","caf\xe9"\n')
    with pytest.raises(DataFormatError, match=r"sentiment140_test\.csv"):
        by_key["sentiment140_test"].load_source(tmp_path)
    # Nothing the parser recognises (a web page saved under the file's name, an
    # empty file) is an error too, not an empty set the bench would fail on.
    (tmp_path / "tackstrom_finegrained.txt").write_text(
        "<html>Not Found</html>\n", encoding="utf-8"
    )
    with pytest.raises(DataFormatError, match=r"no example in tackstrom_finegrained\.txt"):
        by_key["finegrained_reviews_en"].load_source(tmp_path)
    (tmp_path / "sentiment140_test.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"no example in sentiment140_test\.csv"):
        by_key["sentiment140_test"].load_source(tmp_path)


def test_training_says_which_development_file_is_malformed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.sentiment.train import main

    (tmp_path / "semeval17_en_val_text.txt").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "semeval17_en_val_labels.txt").write_text("1\n", encoding="utf-8")
    args = ["--language", "en", "--tune-only", "--data-dir", str(tmp_path), "--out", str(tmp_path)]
    assert main(args) == 1
    assert "2 texts but 1 labels" in capsys.readouterr().err
    assert not (tmp_path / "model_en.npz").exists()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_any_text_gets_a_score_from_both_methods(analyzer: SentimentAnalyzer, text: str) -> None:
    for language in ("en", "es"):
        for score in (analyzer.score_as(text, language), analyzer.lexical_score_as(text, language)):
            assert score.label in CLASSES
            assert -1.0 <= score.compound <= 1.0
