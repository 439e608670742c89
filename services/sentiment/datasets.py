"""The public labelled sets the sentiment model is trained on and measured on.

The training sets whose licences allow it (GoEmotions, Apache-2.0; XED and
Kotzias et al.'s review sentences, CC BY 4.0; UD Spanish-GSD, CC BY-SA 4.0)
are in the repository, as
``training/<key>.tsv.gz`` (one ``label<TAB>text`` line per example, nothing
else), so ``python -m services.sentiment.train`` needs nothing else. The
other sets -- development and evaluation tweets, whose licences do not allow
copying them, and the optional Mozetič tweets, whose texts carry no licence
-- are read from a data directory (``--data-dir``, default
``.sentiment-data/``, git-ignored) that ``python -m services.sentiment.datasets``
explains how to fill, each file taken from a pinned commit of a public GitHub
repository. Training sets and evaluation sets come from different sources,
so no figure is measured on data the model or its settings were fitted to.

``python -m services.sentiment.datasets`` lists every set with its source,
licence and role, and prints the commands that fill the data directory;
``--bundle`` rewrites the committed training files from those sources (the
same bytes, as long as the pinned commits are used).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.sentiment.evaluation import Example, parse_vader_ground_truth
from services.sentiment.language import Lang
from services.sentiment.scoring import Label

DEFAULT_DATA_DIR = Path(".sentiment-data")
TRAINING_DIR = Path(__file__).parent / "training"  # the committed training sets
# train: in the repository, used by default. extra: optional training data read from
# the data directory (texts without a licence, never committed). dev: tuning only.
# eval: measurement only.
Role = Literal["train", "extra", "dev", "eval"]
_LABEL_OF: dict[str, Label] = {"negative": "negative", "neutral": "neutral", "positive": "positive"}

_NUMBERED: dict[str, Label] = {"0": "negative", "1": "neutral", "2": "positive"}
_SIGNED: dict[str, Label] = {"-1": "negative", "0": "neutral", "1": "positive"}
# GoEmotions' sentiment grouping (group/labels.txt): 0 ambiguous, 1 negative, 2 neutral,
# 3 positive. Ambiguous (surprise, confusion, ...) has no polarity and is left out.
_GOEMOTIONS_GROUPS: dict[str, Label] = {"1": "negative", "2": "neutral", "3": "positive"}


class DataFileError(Exception):
    """A set's files in the data directory cannot be used; the message says which and why."""


class DataMissingError(DataFileError, FileNotFoundError):
    """A set's files are not in the data directory; the message says how to get them."""


class DataFormatError(DataFileError, ValueError):
    """A set's file is there but not in its format (cut short, another version of it)."""


class BundleError(ValueError):
    """A committed training file is malformed; the message names the file and line."""


def write_bundle(path: Path, examples: list[Example]) -> None:
    """Write ``examples`` as gzipped ``label<TAB>text`` lines, byte for byte reproducibly."""
    lines = []
    for example in examples:
        text = " ".join(example.text.split())  # no tab or line break inside a field
        if text:
            lines.append(f"{example.label}\t{text}\n")
    # mtime=0 and no file name in the header: the same examples give the same bytes.
    with path.open("wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as out:
        out.write("".join(lines).encode("utf-8"))


def read_bundle(path: Path) -> list[Example]:
    """The examples of a committed training file (see :func:`write_bundle`)."""
    examples = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line_no, line in enumerate(lines, 1):
                label, sep, text = line.rstrip("\n").partition("\t")
                if not sep or label not in _LABEL_OF or not text:
                    raise BundleError(f"{path.name}:{line_no}: expected 'label<TAB>text'")
                examples.append(Example(text, _LABEL_OF[label]))
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # missing, cut short, not gzip
        raise BundleError(
            f"{path}: cannot be read ({exc}); restore it from git, or rewrite it with "
            "`python -m services.sentiment.datasets --bundle`"
        ) from exc
    return examples


@dataclass(frozen=True, slots=True)
class PublicSet:
    """One public labelled set: where it comes from and how to read it."""

    key: str
    language: Lang
    role: Role
    name: str
    repository: str  # owner/name on GitHub
    commit: str
    files: tuple[tuple[str, str], ...]  # (path in the repository, file name in the data dir)
    licence: str
    gold: str
    parse: Callable[[list[str]], list[Example]]
    # In the repository as TRAINING_DIR/<key>.tsv.gz (the licence allows it).
    bundled: bool = False

    @property
    def bundle(self) -> Path:
        """Where the set's committed copy is (for a set that has one)."""
        return TRAINING_DIR / f"{self.key}.tsv.gz"

    def load(self, data_dir: Path = DEFAULT_DATA_DIR) -> list[Example]:
        """The set's examples: its committed copy if it has one, else read from ``data_dir``."""
        if self.bundled:
            return read_bundle(self.bundle)
        return self.load_source(data_dir)

    def load_source(self, data_dir: Path) -> list[Example]:
        """The set's examples, parsed from its original files in ``data_dir``."""
        for path, local in self.files:
            file = data_dir / local
            if not file.is_file():
                raise DataMissingError(
                    f"{self.name}: {file} is missing; it is {path} at commit {self.commit} "
                    f"of github.com/{self.repository} "
                    "(`python -m services.sentiment.datasets` prints the commands)"
                )
        names = ", ".join(local for _, local in self.files)
        again = f"take it again from commit {self.commit} of github.com/{self.repository}"
        try:
            texts = [(data_dir / local).read_text(encoding="utf-8") for _, local in self.files]
            examples = self.parse(texts)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise DataFormatError(
                f"{self.name}: {names} in {data_dir} is not as expected ({exc!r}); {again}"
            ) from exc
        if not examples:  # an empty file, or another one saved under its name (a web page)
            raise DataFormatError(f"{self.name}: no example in {names} in {data_dir}; {again}")
        return examples


def _goemotions(texts: list[str]) -> list[Example]:
    examples = []
    for text in texts:
        for line in text.splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[1] in _GOEMOTIONS_GROUPS:
                examples.append(Example(fields[0], _GOEMOTIONS_GROUPS[fields[1]]))
    return examples


def _mozetic(texts: list[str]) -> list[Example]:
    # TweetID<TAB>Positive|Negative<TAB>text; a text with a line break continues on
    # lines of its own, which are left out (only the labelled first line is kept).
    labels: dict[str, Label] = {"Positive": "positive", "Negative": "negative"}
    examples = []
    for line in texts[0].splitlines():
        fields = line.split("\t", 2)
        if len(fields) == 3 and fields[1] in labels:
            examples.append(Example(fields[2].removeprefix("\\"), labels[fields[1]]))
    return examples


# XED's Plutchik emotions (1 anger, 2 anticipation, 3 disgust, 4 fear, 5 joy, 6 sadness,
# 7 surprise, 8 trust) grouped by polarity; anticipation and surprise have none.
_XED_POSITIVE = frozenset({"5", "8"})
_XED_NEGATIVE = frozenset({"1", "3", "4", "6"})


def _xed(texts: list[str]) -> list[Example]:
    # sentence<TAB>comma-separated emotion numbers; a line whose emotions are all
    # positive (or all negative, ignoring the polarity-free ones) gets that label.
    examples = []
    for line in texts[0].splitlines():
        text, sep, codes = line.rpartition("\t")
        if not sep or not text.strip():
            continue
        emotions = {c.strip() for c in codes.split(",")}
        positive, negative = emotions & _XED_POSITIVE, emotions & _XED_NEGATIVE
        if positive and not negative:
            examples.append(Example(text, "positive"))
        elif negative and not positive:
            examples.append(Example(text, "negative"))
    return examples


def _xed_neutral(texts: list[str]) -> list[Example]:
    # Lines the XED annotators marked as neutral: "<label><TAB>sentence".
    return [
        Example(line.partition("\t")[2], "neutral")
        for line in texts[0].splitlines()
        if line.partition("\t")[2].strip()
    ]


def _xed_neutral_es(texts: list[str]) -> list[Example]:
    # XED's English-Spanish subtitle pairs (tab-separated: English file, Spanish file,
    # line numbers, English line, Spanish line) and its Spanish projections. A
    # Spanish line is neutral when its English line has no word of VADER's
    # lexicon (compound exactly 0) and the projections did not label it polar:
    # everyday conversation ("¿Cuándo te vas?", "Ya empaqué."), unlike the
    # encyclopaedia prose of UD Spanish-GSD.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    polar = {example.text for example in _xed([texts[1]])}
    vader = SentimentIntensityAnalyzer()
    seen: set[str] = set()
    examples = []
    for line in texts[0].splitlines():
        fields = line.split("\t")
        if len(fields) < 6:
            continue
        english, spanish = fields[4].strip(), fields[5].strip()
        if not spanish or spanish in polar or spanish in seen:
            continue
        seen.add(spanish)
        if vader.polarity_scores(english)["compound"] == 0:
            examples.append(Example(spanish, "neutral"))
    return examples


def _conllu_sentences_as_neutral(texts: list[str]) -> list[Example]:
    # Encyclopaedia and news sentences: a stand-in for neutral Spanish text, which
    # no openly licensed labelled Spanish tweet set provides.
    return [
        Example(line.removeprefix("# text = "), "neutral")
        for text in texts
        for line in text.splitlines()
        if line.startswith("# text = ")
    ]


def _lines_and_labels(texts: list[str]) -> list[Example]:
    lines, labels = texts[0].splitlines(), texts[1].split()
    if len(lines) != len(labels):
        raise ValueError(f"{len(lines)} texts but {len(labels)} labels")
    return [Example(t, _NUMBERED[g]) for t, g in zip(lines, labels, strict=True)]


def _sentimp(texts: list[str]) -> list[Example]:
    # tweet_id,full_text,final_label with -1/0/1 ("x" = discarded by the annotators).
    rows = csv.DictReader(io.StringIO(texts[0]))
    return [
        Example(row["full_text"], _SIGNED[row["final_label"]])
        for row in rows
        if row["final_label"] in _SIGNED
    ]


def _vader_snippets(texts: list[str]) -> list[Example]:
    return parse_vader_ground_truth(texts[0], "review snippets")


def _labelled_sentences(texts: list[str]) -> list[Example]:
    # Kotzias et al.'s files: "sentence<TAB>0|1" (1 positive), one per line; some
    # sentences end in spaces before the tab, some copies end lines in CRLF.
    examples = []
    for text in texts:
        for line in text.splitlines():
            sentence, sep, score = line.rpartition("\t")
            if sep and score.strip() in ("0", "1") and sentence.strip():
                label: Label = "positive" if score.strip() == "1" else "negative"
                examples.append(Example(sentence.strip(), label))
    return examples


def _sentiment140(texts: list[str]) -> list[Example]:
    # polarity,id,date,query,user,text with polarity 0 negative / 2 neutral / 4 positive.
    labels: dict[str, Label] = {"0": "negative", "2": "neutral", "4": "positive"}
    rows = csv.reader(io.StringIO(texts[0]))
    return [Example(row[5], labels[row[0]]) for row in rows if len(row) == 6 and row[0] in labels]


def _opener(texts: list[str]) -> list[Example]:
    # JSON list of sentences, each with its opinions (a polar expression and its
    # polarity). No opinion: neutral; only positive (or only negative) opinions:
    # that polarity; both: left out, as mixed.
    examples = []
    for text in texts:
        for row in json.loads(text):
            polarities = {str(o["Polarity"]).lower() for o in row["opinions"]}
            if not polarities:
                examples.append(Example(row["text"], "neutral"))
            elif polarities <= {"positive", "negative"} and len(polarities) == 1:
                examples.append(Example(row["text"], _LABEL_OF[polarities.pop()]))
    return examples


def _finegrained(texts: list[str]) -> list[Example]:
    # Reviews separated by blank lines, each a two-line header then "label<TAB>sentence"
    # lines: pos, neg, neu, mix (left out) or nr (not relevant to the review: neutral).
    labels: dict[str, Label] = {
        "pos": "positive",
        "neg": "negative",
        "neu": "neutral",
        "nr": "neutral",
    }
    examples = []
    for line in texts[0].splitlines():
        label, sep, sentence = line.partition("\t")
        if sep and label in labels and sentence.strip():
            examples.append(Example(sentence, labels[label]))
    return examples


_UD_GSD = "UniversalDependencies/UD_Spanish-GSD"
_GOEMO_REPO = "matanbt/emotion-recognition-nlp-project"
_MOZETIC_REPO = "joemzhao/tweets-retriever"
_SENTIMP = "ari-dasci/OD-SentiMP-21"
_XED = "Helsinki-NLP/XED"
_XED_COMMIT = "76666d251f147cf518071bef4f8415dab6b96115"
_XED_LICENCE = "CC BY 4.0 (the repository's README)"
_KOTZIAS = "ergonzamarian/Analisador-de-Sentimentos"
_OPENER = "jerbarnes/semeval22_structured_sentiment"
_OPENER_COMMIT = "aa65f2c9fd65a1b7f31b96878da8912b8ff3f67c"
_OPENER_LICENCE = (
    "no licence stated in the repository nor in the OpeNER project's own copy "
    "(opener-project/opinion_annotations_en); used for measurement only, "
    "never copied into the repository"
)
_OPENER_GOLD = (
    "annotated opinion expressions: none -> neutral, only positive (only negative) -> "
    "that label, both -> left out"
)
_MOZETIC_LICENCE = (
    "labels CC BY-SA 4.0 (Mozetič, Grčar & Smailović 2016, CLARIN.SI handle 11356/1054); "
    "tweet texts as retrieved from Twitter by the repository's author (no licence file)"
)

PUBLIC_SETS: tuple[PublicSet, ...] = (
    # -- training ---------------------------------------------------------------
    PublicSet(
        "goemotions",
        "en",
        "train",
        "GoEmotions (Demszky et al., ACL 2020), train + dev splits, Reddit comments",
        _GOEMO_REPO,
        "25df7400107fbd5d59fcdff9d843db1df633dc62",
        (
            ("data/goemotions/group/train.tsv", "goemotions_group_train.tsv"),
            ("data/goemotions/group/dev.tsv", "goemotions_group_dev.tsv"),
        ),
        "Apache-2.0 (google-research/google-research, goemotions/data; copied unchanged "
        "with the paper's sentiment grouping in the repository above)",
        "single-label comments of the paper's groups negative/neutral/positive (ambiguous "
        "and mixed left out)",
        _goemotions,
        bundled=True,
    ),
    PublicSet(
        "mozetic_en",
        "en",
        "extra",
        "Twitter sentiment for 15 European languages, English part (positive/negative)",
        _MOZETIC_REPO,
        "03636bf528ffe70decb989ae9b0d03b708ab6e0c",
        (("retrieved_dataset/eng.txt", "mozetic_eng.txt"),),
        _MOZETIC_LICENCE,
        "one annotator's label per tweet; neutral tweets were not retrieved",
        _mozetic,
    ),
    PublicSet(
        "xed_en",
        "en",
        "train",
        "XED English (Öhman et al., COLING 2020): annotated movie subtitle lines",
        _XED,
        _XED_COMMIT,
        (("AnnotatedData/en-annotated.tsv", "xed_en-annotated.tsv"),),
        _XED_LICENCE,
        "Plutchik emotions grouped by polarity (joy, trust / anger, disgust, fear, sadness); "
        "lines with both polarities or only anticipation/surprise left out",
        _xed,
        bundled=True,
    ),
    PublicSet(
        "xed_neutral_en",
        "en",
        "train",
        "XED English neutral subtitle lines",
        _XED,
        _XED_COMMIT,
        (("AnnotatedData/neu_en.txt", "xed_neu_en.txt"),),
        _XED_LICENCE,
        "lines the annotators marked neutral",
        _xed_neutral,
        bundled=True,
    ),
    PublicSet(
        "review_sentences_en",
        "en",
        "train",
        "Sentiment Labelled Sentences (Kotzias et al., KDD 2015): Amazon, IMDb and Yelp "
        "review sentences",
        _KOTZIAS,
        "8243d8577dbb1de61775288a7027d0ded4b452a0",
        (
            ("amazon_cells_labelled.txt", "kotzias_amazon_cells_labelled.txt"),
            ("imdb_labelled.txt", "kotzias_imdb_labelled.txt"),
            ("yelp_labelled.txt", "kotzias_yelp_labelled.txt"),
        ),
        "CC BY 4.0 (UCI Machine Learning Repository, dataset 331, doi:10.24432/C57604; "
        "the three files as copied in the repository above)",
        "one label per sentence, chosen to be clearly positive or negative (500 of each "
        "per site); no neutral sentences",
        _labelled_sentences,
        bundled=True,
    ),
    PublicSet(
        "xed_es",
        "es",
        "train",
        "XED Spanish: English subtitle annotations projected onto aligned Spanish subtitles",
        _XED,
        _XED_COMMIT,
        (("Projections/es-projections.tsv", "xed_es-projections.tsv"),),
        _XED_LICENCE,
        "projected Plutchik emotions grouped by polarity, as for XED English",
        _xed,
        bundled=True,
    ),
    PublicSet(
        "xed_neutral_es",
        "es",
        "train",
        "XED Spanish subtitle lines whose aligned English line carries no sentiment word",
        _XED,
        _XED_COMMIT,
        (
            ("subtitle-retrieval/students/pairs-es.txt", "xed_pairs-es.txt"),
            ("Projections/es-projections.tsv", "xed_es-projections.tsv"),
        ),
        _XED_LICENCE,
        "not labelled neutral by people: the English line has no word of VADER's lexicon "
        "and the projections gave the Spanish line no polarity",
        _xed_neutral_es,
        bundled=True,
    ),
    PublicSet(
        "mozetic_es",
        "es",
        "extra",
        "Twitter sentiment for 15 European languages, Spanish part (positive/negative)",
        _MOZETIC_REPO,
        "03636bf528ffe70decb989ae9b0d03b708ab6e0c",
        (("retrieved_dataset/spa.txt", "mozetic_spa.txt"),),
        _MOZETIC_LICENCE,
        "one annotator's label per tweet; neutral tweets were not retrieved",
        _mozetic,
    ),
    PublicSet(
        "ud_gsd_es",
        "es",
        "train",
        "UD Spanish-GSD dev + test sentences (web, news, encyclopaedia), as neutral",
        _UD_GSD,
        "57c045644664e5c1e169263cc4e3b95e40c078ba",
        (
            ("es_gsd-ud-dev.conllu", "es_gsd-ud-dev.conllu"),
            ("es_gsd-ud-test.conllu", "es_gsd-ud-test.conllu"),
        ),
        "CC BY-SA 4.0 (the treebank's LICENSE.txt)",
        "not labelled for sentiment: every sentence is taken as neutral (mostly factual prose)",
        _conllu_sentences_as_neutral,
        bundled=True,
    ),
    # -- development: the combiner of the lexicon and the model is fitted on these ----
    PublicSet(
        "semeval17_en_val",
        "en",
        "dev",
        "SemEval-2017 Task 4A tweets, TweetEval's validation split",
        "cardiffnlp/tweeteval",
        "4fbd22cd78421f05b1ecdb4fc5725bc7a7bd8f66",
        (
            ("datasets/sentiment/val_text.txt", "semeval17_en_val_text.txt"),
            ("datasets/sentiment/val_labels.txt", "semeval17_en_val_labels.txt"),
        ),
        "as SemEval-2017 below; used for tuning only, never copied into the repository",
        "crowd-sourced majority label, 0 negative / 1 neutral / 2 positive",
        _lines_and_labels,
    ),
    PublicSet(
        "intertass_es_train",
        "es",
        "dev",
        "InterTASS 2017 Spanish tweets, UMSAB's training split",
        "cardiffnlp/xlm-t",
        "874214d64d96599eb869a033c22ec2cc57d19256",
        (
            ("data/sentiment/spanish/train_text.txt", "intertass_es_train_text.txt"),
            ("data/sentiment/spanish/train_labels.txt", "intertass_es_train_labels.txt"),
        ),
        "as InterTASS below; used for tuning only, never copied into the repository",
        "TASS annotators' label, 0 negative / 1 neutral / 2 positive (balanced, 613 each)",
        _lines_and_labels,
    ),
    PublicSet(
        "intertass_es_val",
        "es",
        "dev",
        "InterTASS 2017 Spanish tweets, UMSAB's validation split",
        "cardiffnlp/xlm-t",
        "874214d64d96599eb869a033c22ec2cc57d19256",
        (
            ("data/sentiment/spanish/val_text.txt", "intertass_es_val_text.txt"),
            ("data/sentiment/spanish/val_labels.txt", "intertass_es_val_labels.txt"),
        ),
        "as InterTASS below; used for tuning only, never copied into the repository",
        "TASS annotators' label, 0 negative / 1 neutral / 2 positive",
        _lines_and_labels,
    ),
    # -- held-out evaluation (other sources than training) --------------------------
    PublicSet(
        "semeval17_en",
        "en",
        "eval",
        "SemEval-2017 Task 4A test tweets (Rosenthal et al., 2017), as TweetEval ships them",
        "cardiffnlp/tweeteval",
        "4fbd22cd78421f05b1ecdb4fc5725bc7a7bd8f66",
        (
            ("datasets/sentiment/test_text.txt", "semeval17_en_test_text.txt"),
            ("datasets/sentiment/test_labels.txt", "semeval17_en_test_labels.txt"),
        ),
        "TweetEval: no restriction of its own, the SemEval data and Twitter's terms apply; "
        "used for measurement only, never copied into the repository",
        "crowd-sourced majority label, 0 negative / 1 neutral / 2 positive",
        _lines_and_labels,
    ),
    PublicSet(
        "sentimp21_uk",
        "en",
        "eval",
        "SentiMP-21 United Kingdom: tweets of members of parliament, 2021",
        _SENTIMP,
        "2360c6c50386e9ee4d77a624ddcf56a1cbc9a7e5",
        (("uk/uk_simple.csv", "sentimp21_uk.csv"),),
        "CC BY-SA 4.0 (the repository's README)",
        "majority of 3 annotators, ties broken by a fourth; discarded tweets left out",
        _sentimp,
    ),
    PublicSet(
        "sentiment140_test",
        "en",
        "eval",
        "Sentiment140 hand-labelled test tweets (Go, Bhayani & Huang, 2009)",
        "JonasLopezMesa/Twitter-Sentiments",
        "c265f6e7c8e2fe8371ed4fad90ba4c3eb449b472",
        (("testdata.manual.2009.06.14.csv", "sentiment140_test.csv"),),
        "no licence stated (the Sentiment140 authors' file, copied unchanged in the "
        "repository above); used for measurement only, never copied into the repository",
        "one label per tweet by the authors, 0 negative / 2 neutral / 4 positive",
        _sentiment140,
    ),
    PublicSet(
        "opener_en",
        "en",
        "eval",
        "OpeNER English hotel review sentences (Agerri et al., 2013), as SemEval-2022 Task 10 "
        "ships them (train + dev + test)",
        _OPENER,
        _OPENER_COMMIT,
        (
            ("data/opener_en/train.json", "opener_en_train.json"),
            ("data/opener_en/dev.json", "opener_en_dev.json"),
            ("data/opener_en/test.json", "opener_en_test.json"),
        ),
        _OPENER_LICENCE,
        _OPENER_GOLD,
        _opener,
    ),
    PublicSet(
        "finegrained_reviews_en",
        "en",
        "eval",
        "Fine-grained sentiment of product review sentences (Täckström & McDonald, ECIR 2011): "
        "books, DVDs, electronics, music, video games",
        "oscartackstrom/sentence-sentiment-data",
        "da58c4d997c31aec2e61dc0178eb0863330bb21e",
        (("data/finegrained.txt", "tackstrom_finegrained.txt"),),
        "'can be freely used for any friendly purpose' (the repository's README), not a "
        "standard licence; used for measurement only, never copied into the repository",
        "the authors' label per sentence: pos, neg, neu and nr (not relevant, as neutral); "
        "mix left out",
        _finegrained,
    ),
    PublicSet(
        "vader_movies",
        "en",
        "eval",
        "VADER movie review snippets (Hutto & Gilbert 2014, from Pang & Lee 2005)",
        "pypi:vaderSentiment-3.3.2.tar.gz",
        "3.3.2",
        (
            (
                "additional_resources/hutto_ICWSM_2014.tar.gz:movieReviewSnippets_GroundTruth.txt",
                "movieReviewSnippets_GroundTruth.txt",
            ),
        ),
        "MIT (the sdist's LICENSE.txt)",
        "mean of >= 20 human ratings (-4..+4) / 4, cut at +/-0.05",
        _vader_snippets,
    ),
    PublicSet(
        "intertass_es",
        "es",
        "eval",
        "InterTASS 2017 Spanish test tweets (Díaz Galiano et al., 2018), as UMSAB ships them",
        "cardiffnlp/xlm-t",
        "874214d64d96599eb869a033c22ec2cc57d19256",
        (
            ("data/sentiment/spanish/test_text.txt", "intertass_es_test_text.txt"),
            ("data/sentiment/spanish/test_labels.txt", "intertass_es_test_labels.txt"),
        ),
        "TASS corpus terms (research use) and Twitter's terms; used for measurement only, "
        "never copied into the repository",
        "TASS annotators' label, 0 negative / 1 neutral / 2 positive (balanced, 290 each)",
        _lines_and_labels,
    ),
    PublicSet(
        "sentimp21_es",
        "es",
        "eval",
        "SentiMP-21 Spain: tweets of members of parliament, 2021",
        _SENTIMP,
        "2360c6c50386e9ee4d77a624ddcf56a1cbc9a7e5",
        (("sp/sp_simple.csv", "sentimp21_es.csv"),),
        "CC BY-SA 4.0 (the repository's README)",
        "majority of 5 annotators, ties broken by another; discarded tweets left out",
        _sentimp,
    ),
)


def public_sets(language: Lang, role: Role) -> list[PublicSet]:
    """The sets of ``language`` with ``role``, in the order above."""
    return [s for s in PUBLIC_SETS if s.language == language and s.role == role]


def how_to_fetch(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """The shell commands that fill ``data_dir`` from clones of the repositories."""
    lines = [f"mkdir -p {data_dir}"]
    for s in PUBLIC_SETS:
        lines.append(f"# {s.key} ({s.role}, {s.language}): {s.name}; licence: {s.licence}")
        if s.bundled:
            lines.append(f"# (in the repository as {s.bundle.name}; needed only for --bundle)")
        for path, local in s.files:
            if s.repository.startswith("pypi:"):
                archive, _, member = path.partition(":")
                lines.append(
                    f"pip download --no-deps --no-binary :all: vaderSentiment=={s.commit} -d /tmp "
                    f"&& tar -xOzf <(tar -xOzf /tmp/vaderSentiment-{s.commit}.tar.gz "
                    f"vaderSentiment-{s.commit}/{archive}) hutto_ICWSM_2014/{member} "
                    f"> {data_dir}/{local}"
                )
            else:
                clone = s.repository.replace("/", "+")
                lines.append(
                    f"git clone -q https://github.com/{s.repository} {clone} 2>/dev/null; "
                    f"git -C {clone} show {s.commit}:{path} > {data_dir}/{local}"
                )
    return "\n".join(lines)


def bundle(data_dir: Path) -> list[tuple[PublicSet, int, int]]:
    """Rewrite the committed training files from the sources in ``data_dir``.

    Returns each bundled set with its number of examples and its file size in bytes.
    """
    written = []
    TRAINING_DIR.mkdir(exist_ok=True)
    for s in PUBLIC_SETS:
        if s.bundled:
            examples = s.load_source(data_dir)
            write_bundle(s.bundle, examples)
            written.append((s, len(examples), s.bundle.stat().st_size))
    return written


def main(argv: list[str] | None = None) -> int:
    """Print every set and how to fetch it, or (``--bundle``) rewrite the committed sets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--bundle",
        action="store_true",
        help="rewrite training/*.tsv.gz from the original files in --data-dir",
    )
    args = parser.parse_args(argv)
    out = sys.stdout
    if args.bundle:
        try:
            written = bundle(args.data_dir)
        except DataFileError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        for s, count, size in written:
            out.write(f"{s.bundle.name}: {count:,} examples, {size:,} bytes\n")
        return 0
    for s in PUBLIC_SETS:
        where = "in the repository" if s.bundled else f"in {args.data_dir}/"
        out.write(f"{s.key:16} {s.role:5} {s.language}  {s.name} ({where})\n")
        out.write(f"{'':25}github.com/{s.repository} @ {s.commit}\n")
        out.write(f"{'':25}licence: {s.licence}\n{'':25}gold: {s.gold}\n")
    out.write("\n" + how_to_fetch(args.data_dir) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
