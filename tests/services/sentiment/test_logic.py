"""The sentiment service's pure logic: language, scoring, aggregates, chart, metrics."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from matplotlib.image import imread

from botbus.i18n import Catalog
from services.sentiment.aggregate import AlertPolicy, MoodDoc, MoodDocError
from services.sentiment.chart import render_chart, summary_line
from services.sentiment.evaluation import EVAL_SET_NAMES, evaluate, load_eval_set, metrics
from services.sentiment.language import LanguageGuesser, hint_language
from services.sentiment.scoring import (
    SentimentAnalyzer,
    SpanishScorer,
    label_of,
    load_spanish_lexicon,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOW = datetime(2025, 3, 14, 15, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def analyzer() -> SentimentAnalyzer:
    # The lexicon rules alone; the default (combined with the model) is tested in test_model.py.
    return SentimentAnalyzer(method="lexicon")


CATALOG = Catalog.load("services.sentiment")


def english(msg_id: str, /, **values: object) -> str:
    return CATALOG.text("en", msg_id, **values)


def spanish(msg_id: str, /, **values: object) -> str:
    return CATALOG.text("es", msg_id, **values)


# -- language ----------------------------------------------------------------


@pytest.fixture(scope="module")
def guesser() -> LanguageGuesser:
    return LanguageGuesser()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I really love how this turned out", "en"),
        ("Me encanta cómo ha quedado todo", "es"),
        ("¿Alguien sabe a qué hora empieza?", "es"),
        ("Does anyone know when it starts?", "en"),
    ],
)
def test_clear_text_is_detected_whatever_the_hint(
    guesser: LanguageGuesser, text: str, expected: str
) -> None:
    other = "es" if expected == "en" else "en"
    assert guesser.guess(text, other) == expected


def test_the_users_language_decides_ambiguous_messages(guesser: LanguageGuesser) -> None:
    assert guesser.guess("no", "en") == "en"
    assert guesser.guess("no", "es-MX") == "es"
    assert guesser.guess("👍👍", "es") == "es"
    assert guesser.guess("👍👍", None) == "en"


def test_hint_language_keeps_only_supported_languages() -> None:
    assert hint_language("es-AR") == "es"
    assert hint_language("en_GB") == "en"
    assert hint_language("pt-BR") is None
    assert hint_language(None) is None


# -- scoring -----------------------------------------------------------------


def test_english_scores_carry_label_compound_and_drivers(analyzer: SentimentAnalyzer) -> None:
    good = analyzer.score("I love this, it is wonderful!", "en")
    assert good.language == "en"
    assert good.label == "positive" and good.compound > 0.5
    assert {"love", "wonderful"} <= set(good.positive_drivers)

    bad = analyzer.score("This is awful and I hate it", "en")
    assert bad.label == "negative" and bad.compound < -0.5
    assert {"awful", "hate"} <= set(bad.negative_drivers)

    plain = analyzer.score("The meeting is at 3pm in room 204", "en")
    assert plain.label == "neutral" and plain.drivers == ()


def test_english_negation_flips_the_driver(analyzer: SentimentAnalyzer) -> None:
    score = analyzer.score("This is not good", "en")
    assert score.label == "negative"
    assert score.negative_drivers == ["good"]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Pretty piece of junk.", "negative"),
        ("Thanks for nothing", "negative"),
        ("thank you for nothing!!", "negative"),
        ("Thanks for everything", "positive"),
        ("My order was canceled", "negative"),
    ],
)
def test_english_words_and_idioms_vader_lacks(
    analyzer: SentimentAnalyzer, text: str, label: str
) -> None:
    score = analyzer.score_as(text, "en")
    assert score.label == label
    if "nothing" in text:
        assert score.negative_drivers == ["thanks-for-nothing"]


def test_spanish_lexicon_is_sentileak_with_our_corrections() -> None:
    lexicon = load_spanish_lexicon()
    assert len(lexicon) > 2600
    assert lexicon["encant"] > 0 > lexicon["horribl"]
    # Everyday words that collided with polar stems are gone; complaints are in.
    for stem in ("mis", "dos", "van", "moment", "reserv", "vol", "vuel", "accident", "men"):
        assert stem not in lexicon
    for stem in ("retras", "cancel", "verguenz"):
        assert lexicon[stem] < 0


@pytest.fixture(scope="module")
def es_rules() -> SpanishScorer:
    return SpanishScorer()


@pytest.mark.parametrize(
    "text",
    [
        "¿Podré verte en la reunión?",
        "Mi gato se comió el pollo",
        "El profe de arte nos dio una frase para el examen",
        "Vos sos de Chile, ¿cierto?",
        "Quiero verse en el espejo del Amazon",
    ],
)
def test_spanish_everyday_words_no_longer_collide_with_polar_stems(
    es_rules: SpanishScorer, text: str
) -> None:
    # The lexicon rules alone: stems shared with "podrido", "verso", "profano"...
    score = es_rules.score(text)
    assert score.compound == 0 and not score.drivers


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("estoy muy sad hoy", "negative"),
        ("jope, qué malita estoy", "negative"),
        ("qué cute tu perrito", "positive"),
        ("no te preocupes, tranqui", "positive"),
        ("qué chapuza, todo mentira y manipulación", "negative"),
        ("ese médico es un héroe", "positive"),  # "héroes" stems to "her" (herida): no sign
    ],
)
def test_spanish_colloquial_words_and_loans_score(
    es_rules: SpanishScorer, text: str, label: str
) -> None:
    assert es_rules.score(text).label == label


@pytest.mark.parametrize(
    "text",
    [
        "Son las dos de la tarde",
        "Mis amigos van a la reserva en un momento",
        "Mañana vuelo a Madrid",
    ],
)
def test_everyday_spanish_is_neutral(analyzer: SentimentAnalyzer, text: str) -> None:
    assert analyzer.score_as(text, "es").label == "neutral"


@pytest.mark.parametrize(
    "text",
    [
        "ME HAN RETRASADO EL VUELO",
        "Me han cancelado el vuelo, qué vergüenza",
        "Otra vez retraso de dos horas",
    ],
)
def test_spanish_complaints_are_negative(analyzer: SentimentAnalyzer, text: str) -> None:
    assert analyzer.score_as(text, "es").label == "negative"


@pytest.mark.parametrize(
    "text",
    [
        "no me gusta nada. Es horrible",
        "no me gusta nada, es horrible",
        "No me gusta nada; es horrible!",
    ],
)
def test_spanish_negation_stops_at_the_end_of_its_clause(
    analyzer: SentimentAnalyzer, text: str
) -> None:
    score = analyzer.score_as(text, "es")
    assert score.label == "negative"
    assert "horrible" in score.negative_drivers


def test_spanish_emoticons_and_expressions_are_not_taken_word_by_word(
    analyzer: SentimentAnalyzer,
) -> None:
    assert analyzer.score_as("no :(", "es").label == "negative"
    relief = analyzer.score_as("Menos mal que llegó", "es")
    assert relief.label == "positive" and relief.positive_drivers == ["menos mal"]


def test_spanish_scores_with_drivers(analyzer: SentimentAnalyzer) -> None:
    good = analyzer.score("Me encanta, es una película maravillosa", "es")
    assert good.language == "es"
    assert good.label == "positive"
    assert {"encanta", "maravillosa"} <= set(good.positive_drivers)

    bad = analyzer.score("El servicio fue horrible y la comida pésima", "es")
    assert bad.label == "negative"
    assert {"horrible", "pésima"} <= set(bad.negative_drivers)

    assert analyzer.score("El paquete llega el martes", "es").label == "neutral"


def test_spanish_rules_negation_intensifiers_superlatives_contrast(
    analyzer: SentimentAnalyzer,
) -> None:
    assert analyzer.score_as("no me gusta nada", "es").label == "negative"
    assert analyzer.score_as("esto no es bueno", "es").compound < 0
    plain = analyzer.score_as("es bueno", "es").compound
    assert analyzer.score_as("es muy bueno", "es").compound > plain
    assert analyzer.score_as("es buenísimo", "es").compound > plain
    assert analyzer.score_as("es BUENO", "es").compound > plain
    # "pero": what follows weighs more than what precedes.
    assert analyzer.score_as("la comida era buena pero el servicio horrible", "es").label == (
        "negative"
    )
    assert analyzer.score_as("jajaja 😂", "es").label == "positive"
    assert analyzer.score_as("qué pena :(", "es").label == "negative"


def test_empty_or_symbol_only_text_is_neutral(analyzer: SentimentAnalyzer) -> None:
    for text in ("", "   ", "...", "12345"):
        assert analyzer.score(text, None).label == "neutral"


def test_label_cut_offs_are_vaders() -> None:
    assert label_of(0.05) == "positive"
    assert label_of(0.049) == "neutral"
    assert label_of(-0.05) == "negative"


# -- aggregates --------------------------------------------------------------


def test_mood_doc_round_trips_without_any_text() -> None:
    doc = MoodDoc()
    doc.add(0.8, "positive", NOW)
    doc.add(-0.4, "negative", NOW - timedelta(minutes=10))
    doc.add(0.0, "neutral", NOW - timedelta(days=1))
    raw = doc.to_json()
    assert b"positive" not in raw  # counts only
    again = MoodDoc.from_json(raw)
    assert again.window(NOW, 1).n == 2
    assert again.window(NOW, 1).mean == pytest.approx(0.2)
    assert again.window(NOW, 48).n == 3
    assert again.days["2025-03-14"].pos == 1 and again.days["2025-03-13"].neu == 1


def test_mood_doc_forgets_old_buckets() -> None:
    doc = MoodDoc()
    doc.add(0.5, "positive", NOW - timedelta(days=60))
    doc.add(0.5, "positive", NOW)
    assert list(doc.days) == ["2025-03-14"]
    assert len(doc.hours) == 1


@pytest.mark.parametrize(("period", "points"), [("day", 24), ("week", 28), ("month", 30)])
def test_series_covers_the_period_and_ends_now(period: str, points: int) -> None:
    doc = MoodDoc()
    doc.add(0.6, "positive", NOW)
    doc.add(-0.6, "negative", NOW - timedelta(hours=20))
    series = doc.series(period, NOW)  # type: ignore[arg-type]
    assert len(series) == points
    assert series[-1].bucket.n >= 1
    assert sum(p.bucket.n for p in series) == 2
    assert series == sorted(series, key=lambda p: p.start)


def test_bad_stored_document_is_a_clear_error() -> None:
    with pytest.raises(MoodDocError, match="not JSON"):
        MoodDoc.from_json(b"{oops")
    with pytest.raises(MoodDocError, match="v=1"):
        MoodDoc.from_json(b'{"v": 99}')
    assert MoodDoc.from_json(None).is_empty()


def test_alert_fires_on_a_sustained_low_mood_then_cools_down() -> None:
    policy = AlertPolicy(threshold=-0.3, window_hours=3, min_messages=4)
    doc = MoodDoc()
    for minutes in range(3):
        doc.add(-0.8, "negative", NOW - timedelta(minutes=minutes))
    assert policy.check(doc, NOW, None) is None  # too few messages to call it a mood
    doc.add(-0.7, "negative", NOW)
    window = policy.check(doc, NOW, None)
    assert window is not None and window.n == 4
    assert policy.check(doc, NOW, NOW - timedelta(hours=1)) is None  # cooling down
    assert policy.check(doc, NOW, NOW - timedelta(hours=7)) is not None
    happy = MoodDoc()
    for _ in range(10):
        happy.add(0.5, "positive", NOW)
    assert policy.check(happy, NOW, None) is None


# -- chart -------------------------------------------------------------------


def test_chart_is_a_valid_png_of_the_expected_size() -> None:
    doc = MoodDoc()
    for hours in range(0, 100, 3):
        doc.add(0.5 if hours % 2 else -0.5, "neutral", NOW - timedelta(hours=hours))
    for period in ("day", "week", "month"):
        png = render_chart(doc.series(period, NOW), period, "Team", english)
        assert png.startswith(PNG_MAGIC)
        image = imread(io.BytesIO(png), format="png")
        assert image.shape[0] == 360 and image.shape[1] == 800


def test_empty_chart_still_renders() -> None:
    png = render_chart(MoodDoc().series("day", NOW), "day", "Team", spanish)
    assert png.startswith(PNG_MAGIC)


def test_summary_line_in_both_languages() -> None:
    doc = MoodDoc()
    doc.add(0.6, "positive", NOW)
    doc.add(0.4, "positive", NOW)
    doc.add(-0.2, "negative", NOW)
    series = doc.series("day", NOW)
    line = summary_line(series, "day", "Team", english)
    assert line == (
        "Mood of Team in the last 24 hours: positive (average +0.27) over 3 messages"
        " — 67% positive, 0% neutral, 33% negative."
    )
    assert summary_line(series, "day", "Team", spanish) == (
        "Ánimo de Team en las últimas 24 horas: positivo (media +0.27) en 3 mensajes"
        " — 67% positivos, 0% neutros, 33% negativos."
    )
    empty = summary_line(MoodDoc().series("week", NOW), "week", "Team", english)
    assert empty == "No scored messages for Team in the last 7 days."
    empty_es = summary_line(MoodDoc().series("month", NOW), "month", "Team", spanish)
    assert empty_es == "No hay mensajes puntuados de Team en los últimos 30 días."


# -- evaluation --------------------------------------------------------------


def test_metrics_accuracy_and_macro_f1() -> None:
    gold = ["positive", "positive", "neutral", "negative"]
    perfect = metrics(gold, gold)  # type: ignore[arg-type]
    assert perfect.accuracy == 1.0 and perfect.macro_f1 == 1.0
    half = metrics(gold, ["positive", "neutral", "neutral", "neutral"])  # type: ignore[arg-type]
    assert half.accuracy == 0.5
    # F1: positive 2/3, neutral 1/2, negative 0
    assert half.macro_f1 == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    with pytest.raises(ValueError):
        metrics([], [])


@pytest.mark.parametrize("language", ["en", "es"])
def test_each_method_beats_chance_clearly_on_its_labelled_set(
    analyzer: SentimentAnalyzer, language: str
) -> None:
    examples = load_eval_set(language)  # type: ignore[arg-type]
    assert len(examples) == 75 and language in EVAL_SET_NAMES
    result = evaluate(language, lambda text: analyzer.score_as(text, language).label)
    # Three balanced classes: chance is 0.33. The bench prints the exact figures.
    assert result.accuracy > 0.7 and result.macro_f1 > 0.7
