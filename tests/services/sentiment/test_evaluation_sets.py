"""The evaluation sets: the public VADER tweets set, our own sets, their loaders and metrics."""

from __future__ import annotations

import hashlib
from collections import Counter
from importlib import resources

import pytest

from services.sentiment.evaluation import (
    VADER_TWEETS_FILE,
    EvalSet,
    EvalSetError,
    Example,
    by_compound,
    eval_sets,
    evaluate_set,
    label_of_rating,
    load_vader_tweets,
    parse_jsonl,
    parse_vader_ground_truth,
)
from services.sentiment.scoring import SentimentAnalyzer

# sha256 of tweets_GroundTruth.txt in vaderSentiment-3.3.2.tar.gz: the file must ship unchanged.
VADER_TWEETS_SHA256 = "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"


def data_file(name: str) -> bytes:
    return resources.files("services.sentiment").joinpath("data", name).read_bytes()


def test_public_set_ships_unchanged_with_its_license() -> None:
    assert hashlib.sha256(data_file(VADER_TWEETS_FILE)).hexdigest() == VADER_TWEETS_SHA256
    license_text = data_file("LICENSE-vaderSentiment.txt").decode()
    assert "MIT License" in license_text and "Copyright (c) 2016 C.J. Hutto" in license_text
    readme = data_file("README.md").decode()
    assert VADER_TWEETS_FILE in readme and "Hutto" in readme and "ICWSM" in readme


def test_public_set_loads_every_tweet_with_labels_from_the_mean_rating() -> None:
    tweets = load_vader_tweets()
    assert tweets.language == "en" and len(tweets.examples) == 4200
    assert Counter(e.label for e in tweets.examples) == {
        "positive": 2700,
        "negative": 1203,
        "neutral": 297,
    }
    first = tweets.examples[0]
    assert first.text.startswith("Somehow I was blessed") and first.label == "positive"
    assert not any(e.text.endswith("\r") for e in tweets.examples)  # CRLF file, clean text
    assert "MIT" in tweets.provenance and "NOT independent" in tweets.provenance
    assert "0.96" in tweets.published


@pytest.mark.parametrize(
    ("rating", "label"),
    [
        (0.2, "positive"),  # 0.2 / 4 = 0.05, the paper's cut-off
        (0.19, "neutral"),
        (0.0, "neutral"),
        (-0.19, "neutral"),
        (-0.2, "negative"),
        (4.0, "positive"),
        (-4.0, "negative"),
    ],
)
def test_rating_cut_offs_follow_the_paper(rating: float, label: str) -> None:
    assert label_of_rating(rating) == label


def test_a_rating_off_the_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="-4"):
        label_of_rating(4.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1\t2.5\tyay\n2\t1.0\n", r"f\.txt:2: expected 3 tab-separated fields"),
        ("1\tgood\tnice\n", r"f\.txt:1: bad mean rating"),
        ("1\tnan\tnice\n", r"f\.txt:1: bad mean rating"),
        ("1\t-5\tawful\n", r"f\.txt:1: bad mean rating"),
        ("1\t1.5\t \n", r"f\.txt:1: the text is empty"),
        ("\n\n", r"f\.txt: no examples"),
    ],
)
def test_malformed_ground_truth_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(EvalSetError, match=message):
        parse_vader_ground_truth(text, "f.txt")


def test_ground_truth_parser_reads_tabs_and_crlf() -> None:
    examples = parse_vader_ground_truth("7\t-1.25\tmeh, bad day\r\n8\t0.1\tok\r\n", "f.txt")
    assert examples == [Example("meh, bad day", "negative"), Example("ok", "neutral")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"text": "hola", "label": "happy"}', r"e\.jsonl:1: label must be one of"),
        ('{"text": "hola"', r"e\.jsonl:1: not valid JSON"),
        ('["hola", "positive"]', r"e\.jsonl:1: expected"),
    ],
)
def test_malformed_own_set_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(EvalSetError, match=message):
        parse_jsonl(text, "e.jsonl")


def test_english_is_measured_on_the_public_set_first_and_spanish_on_ours_only() -> None:
    english = eval_sets("en")
    assert [s.name.split(" (")[0] for s in english] == [
        "VADER tweets ground truth",
        "VADER Amazon review snippets",
        "botbus hand-labelled English chat set v1",
    ]
    assert "public" in english[0].provenance
    spanish = eval_sets("es")
    assert len(spanish) == 1 and len(spanish[0].examples) == 75
    assert "NOT a public benchmark" in spanish[0].provenance


def test_polar_figures_leave_gold_neutrals_out_and_count_a_zero_as_wrong() -> None:
    toy = EvalSet(
        "en",
        "toy",
        "test",
        "test",
        (
            Example("good", "positive"),
            Example("bad", "negative"),
            Example("flat", "positive"),  # the method gives 0.0: no polarity
            Example("meh", "neutral"),
        ),
    )
    compounds = {"good": 0.6, "bad": -0.02, "flat": 0.0, "meh": 0.3}
    report = evaluate_set(toy, by_compound(compounds.__getitem__))
    # 3 classes at +/-0.05: good right, bad (-0.02 -> neutral) wrong, flat wrong, meh wrong.
    assert report.three_class.n == 4 and report.three_class.accuracy == 0.25
    # Polar: meh left out; bad is negative by sign; flat has no polarity.
    assert report.polar.n == 3 and report.polar.accuracy == pytest.approx(2 / 3)
    assert set(report.polar.f1_by_label) == {"negative", "positive"}
    assert report.polar.f1_by_label["negative"] == 1.0
    assert report.polar.f1_by_label["positive"] == pytest.approx(2 / 3)


def test_vader_on_the_public_set_is_far_above_chance() -> None:
    analyzer = SentimentAnalyzer()
    report = evaluate_set(
        load_vader_tweets(), by_compound(lambda t: analyzer.lexical_score_as(t, "en").compound)
    )
    # The majority class (positive) alone scores 0.64 over 3 classes and 0.69 over 2.
    # The bench prints the exact figures.
    assert report.three_class.accuracy > 0.85
    assert report.polar.accuracy > 0.9 and report.polar.macro_f1 > 0.9
