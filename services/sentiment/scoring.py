"""Sentiment of one message, in English or Spanish, with the words behind it.

English: VADER (Hutto & Gilbert, 2014, "VADER: A Parsimonious Rule-based
Model for Sentiment Analysis of Social Media Text", ICWSM), from the
``vaderSentiment`` package and the lexicon its wheel ships.

Spanish: the SentiLeak polarity lexicon (2,852 Snowball stems, LGPL-3.0, see
``data/README.md``) applied with VADER's rules transposed to Spanish:
negators within three words of the same clause flip and dampen a word
(VADER's ``N_SCALAR``; a full stop, comma or "pero" ends their reach),
intensifiers and dampeners shift it (``B_INCR``/``B_DECR``, decaying with
distance), a few two-word expressions ("menos mal") count as one, an
all-caps word among lower-case ones is emphasised, text after
"pero"/"sin embargo" weighs more than before it, and the final score —
including "!" and "?" emphasis and the normalisation to [-1, 1] — is VADER's
own ``score_valence``. Emoji are scored with VADER's emoji and word lexicons.

Both produce a :class:`Score`: label, compound value and the drivers (the
words that carried the most valence, with their signed contribution).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import snowballstemmer
from vaderSentiment.vaderSentiment import (
    B_DECR,
    B_INCR,
    BOOSTER_DICT,
    C_INCR,
    N_SCALAR,
    SentimentIntensityAnalyzer,
    SentiText,
)

from services.sentiment.features import SPANISH_NEGATORS
from services.sentiment.language import Lang, LanguageGuesser
from services.sentiment.model import Lexical, LinearModel, Prediction

Label = Literal["negative", "neutral", "positive"]

# VADER's recommended cut-offs on the compound value.
POSITIVE_THRESHOLD = 0.05
NEGATIVE_THRESHOLD = -0.05
MAX_DRIVERS = 5

SPANISH_LEXICON_FILE = "es_sentiment_words.txt"
SPANISH_OVERRIDES_FILE = "es_lexicon_overrides.txt"
ENGLISH_OVERRIDES_FILE = "en_lexicon_overrides.txt"
# English idioms whose words mean the opposite of the whole; each becomes one token
# that the overrides file scores ("thanks for nothing" is not gratitude).
_EN_IDIOMS = re.compile(r"\bthanks? (?:you )?for nothing\b", re.IGNORECASE)
_EN_IDIOM_TOKEN = "thanks-for-nothing"

# Spanish function words playing the roles VADER's NEGATE and BOOSTER_DICT
# play in English. Written unaccented: tokens are compared after accent folding.
# "poco util" means "not useful"; "un poco" is handled as a dampener.
_ES_NEGATORS = SPANISH_NEGATORS | {"ningunos", "ningunas", "poco", "poca", "pocos", "pocas"}
_ES_INTENSIFIERS = frozenset(
    {
        "muy",
        "mucho",
        "mucha",
        "muchos",
        "muchas",
        "muchisimo",
        "muchisima",
        "bastante",
        "demasiado",
        "demasiada",
        "tan",
        "tanto",
        "tanta",
        "super",
        "re",
        "requete",
        "mas",
        "sumamente",
        "extremadamente",
        "increiblemente",
        "totalmente",
        "completamente",
        "absolutamente",
        "realmente",
        "verdaderamente",
        "enormemente",
        "tremendamente",
        "especialmente",
    }
)
# Articles, prepositions, pronouns, determiners and auxiliaries never carry
# sentiment, but many collide with lexicon stems once stemmed ("del" with
# "delito", "mis" with "miserable", "van" with "vanidad").
_ES_FUNCTION_WORDS = frozenset(
    {"a", "al", "de", "del", "el", "la", "lo", "los", "las", "le", "les", "en", "con", "por"}
    | {"para", "que", "se", "me", "te", "un", "una", "y", "o", "su", "mi", "tu", "sus", "mis"}
    | {"tus", "nos", "os", "unos", "unas", "este", "esta", "estos", "estas", "esto", "ese"}
    | {"esa", "esos", "esas", "eso", "aquel", "aquella", "como", "cuando", "donde", "porque"}
    | {"si", "ya", "hay", "ha", "han", "he", "has", "hemos", "es", "son", "era", "fue", "ser"}
    | {"estar", "estoy", "estas", "estan", "va", "van", "voy", "vamos", "ir", "dos", "tres"}
    | {"uno", "cada", "todo", "toda", "todos", "todas", "otro", "otra", "desde", "hasta"}
    | {"entre", "sobre", "tras", "hoy", "ayer", "manana", "aqui", "alli", "ahi"}
)
_ES_DAMPENERS = frozenset({"algo", "apenas", "casi", "ligeramente", "medio", "menos"})
_ES_CONTRAST = frozenset({"pero", "sino", "aunque"})
# Two-word expressions whose meaning is not that of their words: "menos mal"
# is relief ("thank goodness"), "por favor" is politeness.
_ES_PHRASES: dict[tuple[str, str], float] = {("menos", "mal"): 1.5, ("por", "favor"): 0.0}
# A negator or an intensifier reaches only the words of its own clause: the
# sentence ends ("no me gusta nada. Es horrible") and so does a comma
# ("no me gusta nada, es horrible").
_CLAUSE_END = re.compile(r"[.,!?;:…]+[\"'»”)]*$")
_SUPERLATIVE = re.compile(r"^(\w+?)(?:isim|errim)(?:o|a|os|as)$")
_LAUGHTER = re.compile(r"^(?:j[aeiou]){2,}j?$|^(?:h[ae]){2,}h?$")
_ELONGATION = re.compile(r"(\w)\1{2,}")
_STRIP = string.punctuation + "¡¿…«»“”‘’"
# VADER's own valence for "haha", used for Spanish laughter ("jajaja").
_LAUGHTER_VALENCE_WORD = "haha"


@dataclass(frozen=True, slots=True)
class Driver:
    """A word that moved the score, with its signed contribution."""

    word: str
    valence: float


@dataclass(frozen=True, slots=True)
class Score:
    """The sentiment of one text."""

    label: Label
    compound: float  # VADER's normalised score in [-1, 1]
    language: Lang
    drivers: tuple[Driver, ...]

    @property
    def positive_drivers(self) -> list[str]:
        """Words that pushed the score up."""
        return [d.word for d in self.drivers if d.valence > 0]

    @property
    def negative_drivers(self) -> list[str]:
        """Words that pushed the score down."""
        return [d.word for d in self.drivers if d.valence < 0]


def label_of(compound: float) -> Label:
    """The label VADER's authors recommend for a compound value."""
    if compound >= POSITIVE_THRESHOLD:
        return "positive"
    if compound <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"


def _top_drivers(pairs: Iterable[tuple[str, float]]) -> tuple[Driver, ...]:
    # One entry per word (a repeated word adds up), strongest first.
    totals: dict[str, float] = {}
    for word, valence in pairs:
        if valence:
            totals[word] = totals.get(word, 0.0) + valence
    ranked = sorted(totals.items(), key=lambda kv: abs(kv[1]), reverse=True)
    return tuple(Driver(w, round(v, 3)) for w, v in ranked[:MAX_DRIVERS] if v)


def fold_accents(text: str) -> str:
    """Lower-case ``text`` and drop acute accents and diaereses, keeping ñ."""
    out = []
    for ch in text.lower():
        if ch == "ñ":
            out.append(ch)
            continue
        decomposed = unicodedata.normalize("NFD", ch)
        out.append("".join(c for c in decomposed if unicodedata.category(c) != "Mn"))
    return "".join(out)


class _Vader(SentimentIntensityAnalyzer):  # type: ignore[misc]
    """VADER, exposing the per-token valences its polarity_scores computes."""

    def emoji_to_text(self, text: str) -> str:
        """Replace each emoji by its description, as polarity_scores does."""
        parts: list[str] = []
        prev_space = True
        for ch in text:
            description = self.emojis.get(ch)
            if description is not None:
                if not prev_space:
                    parts.append(" ")
                parts.append(description)
                prev_space = False
            else:
                parts.append(ch)
                prev_space = ch == " "
        return "".join(parts).strip()

    def __init__(self) -> None:
        super().__init__()
        # Our additions to VADER's lexicon (words it lacks, e.g. "junk", "canceled").
        self.lexicon.update(_read_stem_table(ENGLISH_OVERRIDES_FILE))

    def token_valences(self, text: str) -> tuple[list[str], list[float], float]:
        """Tokens, their valences after VADER's rules, and the compound score."""
        text = _EN_IDIOMS.sub(_EN_IDIOM_TOKEN, self.emoji_to_text(text))
        sentitext = SentiText(text)
        tokens: list[str] = sentitext.words_and_emoticons
        sentiments: list[float] = []
        for i, item in enumerate(tokens):
            lowered = item.lower()
            if lowered in BOOSTER_DICT or (
                lowered == "kind" and i < len(tokens) - 1 and tokens[i + 1].lower() == "of"
            ):
                sentiments.append(0.0)
                continue
            sentiments = self.sentiment_valence(0.0, sentitext, item, i, sentiments)
        sentiments = self._but_check(tokens, sentiments)
        compound = float(self.score_valence(sentiments, text)["compound"])
        return tokens, [float(s) for s in sentiments], compound

    def emoji_valence(self, ch: str) -> float:
        """The lexicon valence of an emoji's description (0.0 for non-emoji)."""
        description = self.emojis.get(ch)
        if description is None:
            return 0.0
        return float(sum(self.lexicon.get(w, 0.0) for w in description.lower().split()))


class EnglishScorer:
    """VADER over English text."""

    def __init__(self, vader: _Vader | None = None) -> None:
        self._vader = vader or _Vader()

    def score(self, text: str) -> Score:
        """Score ``text`` as English."""
        tokens, valences, compound = self._vader.token_valences(text)
        return Score(
            label=label_of(compound),
            compound=round(compound, 4),
            language="en",
            drivers=_top_drivers((t.lower(), v) for t, v in zip(tokens, valences, strict=True)),
        )


def _read_stem_table(name: str) -> dict[str, float]:
    """``stem,valence`` lines of a data file (``#`` comments), stems (or words) accent-folded."""
    data = resources.files("services.sentiment").joinpath("data", name)
    table: dict[str, float] = {}
    for line_no, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        stem, sep, value = line.partition(",")
        if not sep:
            raise ValueError(f"{name}:{line_no}: expected 'stem,valence'")
        # The scorer stems accent-folded words, so an accented stem would never match.
        table[fold_accents(stem.strip())] = float(value)
    return table


def load_spanish_lexicon() -> dict[str, float]:
    """The SentiLeak stem -> polarity table with our corrections applied (zeros dropped).

    ``es_sentiment_words.txt`` is SentiLeak's table as shipped; ``es_lexicon_overrides.txt``
    removes stem collisions and everyday words, and adds complaint vocabulary.
    """
    lexicon = _read_stem_table(SPANISH_LEXICON_FILE)
    lexicon.update(_read_stem_table(SPANISH_OVERRIDES_FILE))
    return {stem: value for stem, value in lexicon.items() if value}


@dataclass(slots=True)
class _EsToken:
    surface: str  # as written, punctuation stripped
    folded: str  # lower-case, accents folded, elongation collapsed
    valence: float
    emphasised: bool  # elongated ("geniaaal") or all caps among lower case
    sentence: int  # index of the clause the token belongs to (see _CLAUSE_END)


class SpanishScorer:
    """The SentiLeak lexicon applied with VADER-like rules to Spanish text."""

    def __init__(
        self, vader: _Vader | None = None, lexicon: dict[str, float] | None = None
    ) -> None:
        self._vader = vader or _Vader()
        self._lexicon = lexicon if lexicon is not None else load_spanish_lexicon()
        self._stemmer = snowballstemmer.stemmer("spanish")
        self._laughter = float(self._vader.lexicon.get(_LAUGHTER_VALENCE_WORD, 1.5))
        self._word_valence = lru_cache(maxsize=65536)(self._word_valence_uncached)

    def _word_valence_uncached(self, folded: str) -> tuple[float, bool]:
        """(lexicon valence, is a superlative) of one folded word."""
        if _LAUGHTER.match(folded):
            return self._laughter, False
        stem: str = self._stemmer.stemWord(folded)
        valence = self._lexicon.get(stem)
        if valence is not None:
            return valence, False
        superlative = _SUPERLATIVE.match(folded)
        if superlative:
            base = superlative.group(1)
            for candidate in (base, base + "o"):
                valence = self._lexicon.get(self._stemmer.stemWord(candidate))
                if valence is not None:
                    return valence, True
        return 0.0, False

    def _tokens(self, text: str) -> list[_EsToken]:
        raw = text.split()
        has_lower = any(t.islower() for t in raw)
        tokens: list[_EsToken] = []
        sentence = 0
        for word in raw:
            # Emoticons such as ":)" are in VADER's lexicon; emoji are scored
            # through their descriptions.
            emoticon = self._vader.lexicon.get(word.lower())
            if emoticon is not None and not any(c.isalpha() for c in word):
                tokens.append(_EsToken(word, word, float(emoticon), False, sentence))
                continue
            emoji = [c for c in word if c in self._vader.emojis]
            stripped = "".join(c for c in word if c not in self._vader.emojis).strip(_STRIP)
            if stripped:
                folded = fold_accents(stripped)
                collapsed = _ELONGATION.sub(r"\1", folded)
                valence, superlative = (0.0, False)
                if not (
                    collapsed in _ES_INTENSIFIERS
                    or collapsed in _ES_NEGATORS
                    or collapsed in _ES_FUNCTION_WORDS
                ):
                    valence, superlative = self._word_valence(collapsed)
                shouted = has_lower and stripped.isupper() and len(stripped) > 1
                emphasised = superlative or collapsed != folded or shouted
                surface = stripped
                previous = tokens[-1] if tokens else None
                phrase = _ES_PHRASES.get((previous.folded, collapsed)) if previous else None
                if previous is not None and phrase is not None and previous.sentence == sentence:
                    # The expression replaces its words: its first word no longer
                    # modifies ("menos" is not a dampener in "menos mal").
                    surface = f"{previous.surface} {stripped}"
                    previous.valence, previous.folded = 0.0, ""
                    valence = phrase
                tokens.append(_EsToken(surface, collapsed, valence, emphasised, sentence))
            for ch in emoji:
                tokens.append(_EsToken(ch, ch, self._vader.emoji_valence(ch), False, sentence))
            if _CLAUSE_END.search(word):
                sentence += 1
        return tokens

    def _valences(self, tokens: list[_EsToken]) -> list[float]:
        valences: list[float] = []
        for i, token in enumerate(tokens):
            valence = token.valence
            if not valence:
                valences.append(0.0)
                continue
            if token.emphasised:
                valence += C_INCR if valence > 0 else -C_INCR
            if not any(c.isalpha() for c in token.folded):
                # An emoticon or emoji means what it shows: "no :(" is not happy.
                valences.append(valence)
                continue
            negated = False
            for distance in (1, 2, 3):
                j = i - distance
                if j < 0 or tokens[j].sentence != token.sentence:
                    break
                previous = tokens[j].folded
                if previous in _ES_CONTRAST:
                    break
                if previous in _ES_NEGATORS:
                    if previous.startswith("poc") and j > 0 and tokens[j - 1].folded == "un":
                        valence += _scaled(B_DECR, valence, distance)
                    else:
                        negated = True
                elif previous in _ES_INTENSIFIERS:
                    valence += _scaled(B_INCR, valence, distance)
                elif previous in _ES_DAMPENERS:
                    valence += _scaled(B_DECR, valence, distance)
            if negated:
                valence *= N_SCALAR
            valences.append(valence)
        return _contrast(tokens, valences)

    def score(self, text: str) -> Score:
        """Score ``text`` as Spanish."""
        tokens = self._tokens(text)
        valences = self._valences(tokens)
        compound = float(self._vader.score_valence(valences, text)["compound"])
        return Score(
            label=label_of(compound),
            compound=round(compound, 4),
            language="es",
            drivers=_top_drivers(
                (t.surface.lower(), v) for t, v in zip(tokens, valences, strict=True)
            ),
        )


def _scaled(increment: float, valence: float, distance: int) -> float:
    # VADER's booster: signed like the word it modifies, weaker further away.
    decay = {1: 1.0, 2: 0.95, 3: 0.9}[distance]
    return (increment if valence > 0 else -increment) * decay


def _contrast(tokens: list[_EsToken], valences: list[float]) -> list[float]:
    # VADER's "but" rule: what follows "pero" counts more than what precedes it.
    folded = [t.folded for t in tokens]
    pivot = next((i for i, w in enumerate(folded) if w in _ES_CONTRAST), None)
    if pivot is None:
        pivot = next(
            (i + 1 for i, w in enumerate(folded[:-1]) if w == "sin" and folded[i + 1] == "embargo"),
            None,
        )
    if pivot is None:
        return valences
    return [v * 0.5 if i < pivot else v * 1.5 if i > pivot else v for i, v in enumerate(valences)]


Method = Literal["combined", "lexicon"]


def lexical_evidence(score: Score) -> Lexical:
    """What the combiner reads from a lexicon score."""
    return Lexical(
        score.compound,
        sum(d.valence for d in score.drivers if d.valence > 0),
        -sum(d.valence for d in score.drivers if d.valence < 0),
    )


class SentimentAnalyzer:
    """Detects each message's language and scores it with that language's method.

    The default method, ``"combined"``, reads the lexicon rules' verdict (VADER;
    SentiLeak with our corrections) and the trained model of :mod:`.model`
    (``data/model_<lang>.npz``) and lets that model's combiner, fitted on a
    development split of real tweets, decide; the lexicon still names the words
    that drove the score (those that agree with the final label).
    ``method="lexicon"`` scores with the lexicon rules alone.
    ``bench/sentiment.py`` prints both, and the model alone, on held-out sets.
    """

    def __init__(
        self, guesser: LanguageGuesser | None = None, *, method: Method = "combined"
    ) -> None:
        vader = _Vader()
        self._guesser = guesser or LanguageGuesser()
        self._scorers: dict[Lang, EnglishScorer | SpanishScorer] = {
            "en": EnglishScorer(vader),
            "es": SpanishScorer(vader),
        }
        self._method = method
        self._models: dict[Lang, LinearModel] = {}
        if method == "combined":
            for language in self._scorers:
                self._model(language)

    def _model(self, language: Lang) -> LinearModel:
        model = self._models.get(language)
        if model is None:
            model = self._models[language] = LinearModel.load(language)
        return model

    def score(self, text: str, language_hint: str | None = None) -> Score:
        """Score ``text``; ``language_hint`` (e.g. Telegram's language_code) breaks ties."""
        return self.score_as(text, self._guesser.guess(text, language_hint))

    def score_as(self, text: str, language: Lang) -> Score:
        """Score ``text`` in a known language."""
        lexical = self._scorers[language].score(text)
        if self._method == "lexicon":
            return lexical
        prediction = self._model(language).predict(text, lexical_evidence(lexical))
        return _with_prediction(lexical, prediction)

    def lexical_score_as(self, text: str, language: Lang) -> Score:
        """Score ``text`` with the lexicon rules alone (the model's input, and a baseline)."""
        return self._scorers[language].score(text)

    def model_score_as(self, text: str, language: Lang) -> Score:
        """Score ``text`` with the trained model alone, without the combiner (a baseline)."""
        lexical = self._scorers[language].score(text)
        prediction = self._model(language).predict_alone(text, lexical.compound)
        return _with_prediction(lexical, prediction)


def _with_prediction(lexical: Score, prediction: Prediction) -> Score:
    # The label and compound value are the prediction's; the drivers the lexicon's
    # words that agree with that label.
    label = prediction.label
    drivers = lexical.drivers
    if label != "neutral":
        sign = 1 if label == "positive" else -1
        drivers = tuple(d for d in drivers if d.valence * sign > 0)
    return Score(label, round(prediction.polarity, 4), lexical.language, drivers)
