"""The features the sentiment model reads from one message, hashed to fixed buckets.

One function, :func:`featurize`, shared by training (``train.py``) and by
inference (``model.py``), so the two cannot drift apart. A message becomes:

- word unigrams and bigrams, lower-cased and accent-folded, with user names,
  links and digits replaced by placeholders and letter runs shortened
  ("goooood" -> "good");
- negation marking (Das & Chen, 2001): words after a negator, up to the end
  of their clause, carry a ``NOT_`` prefix, so "not good" and "good" are
  different features;
- character 4-grams of each word (spelling variants, Spanish inflections);
- emoji and emoticons as tokens, "!" and "?" runs;
- the lexicon's verdict (the compound value of VADER or of the Spanish
  lexicon rules) as bins, so the model learns how far to trust it.

Each feature name is hashed with CRC-32 (stable across processes, unlike
``hash``) into ``2**bits`` buckets.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import zlib

DEFAULT_BITS = 18  # 262,144 buckets per language

_URL = re.compile(r"https?://\S+|www\.\S+")
_USER = re.compile(r"@\w+")
_DIGITS = re.compile(r"\d+")
_RUNS = re.compile(r"(\w)\1{2,}")
# Words (letters, digits, apostrophes inside), emoticons, emoji and symbols, ! and ? runs.
_TOKEN = re.compile(
    r"[:;=8][\-o']?[()\[\]dpDP/\\|*]+|<3|[^\W\d_]+(?:'[^\W\d_]+)?|\d+|[!?]+|[.,;:…]+"
    r"|[\U0001F000-\U0001FAFF\u2600-\u27BF]"
)
_CLAUSE_END = frozenset(".,;:…!?")
ENGLISH_NEGATORS = frozenset(
    {"not", "no", "never", "nothing", "nobody", "none", "neither", "nor", "without", "cannot"}
    | {"cant", "dont", "doesnt", "didnt", "isnt", "wasnt", "arent", "werent", "wont"}
    | {"wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "aint"}
)
# Accent-folded, as tokens are compared.
SPANISH_NEGATORS = frozenset(
    {"no", "nunca", "jamas", "tampoco", "ni", "sin", "nada", "nadie"}
    | {"ningun", "ninguna", "ninguno"}
)
_NEGATORS = ENGLISH_NEGATORS | SPANISH_NEGATORS
_NEGATION_REACH = 4  # words after a negator that it marks, at most
# Lexicon compound bins: strongly/mildly negative, none, mildly/strongly positive.
_LEXICON_BINS = ((-0.5, "--"), (-0.05, "-"), (0.05, "0"), (0.5, "+"))


_FOLDED: dict[int, str] = {}  # code point -> its accent-free form, filled as met


def fold(text: str) -> str:
    """Lower-case ``text`` and drop accents and diaereses, keeping ñ."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered
    for ch in set(lowered):
        if ord(ch) not in _FOLDED and not ch.isascii():
            decomposed = unicodedata.normalize("NFD", ch)
            plain = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
            _FOLDED[ord(ch)] = ch if ch == "ñ" or not plain else plain
    return lowered.translate(_FOLDED)


def tokens(text: str) -> list[str]:
    """The normalised tokens of ``text``, negated words prefixed with ``NOT_``."""
    text = _URL.sub(" httpurl ", text)
    text = _USER.sub(" atuser ", text)
    text = _RUNS.sub(r"\1\1", fold(text))
    out: list[str] = []
    reach = 0
    for raw in _TOKEN.findall(text):
        token = _DIGITS.sub("0", raw.replace("'", ""))
        if all(c in _CLAUSE_END for c in token):
            reach = 0
            if token[0] in "!?":
                out.append(token[:3])
            continue
        if token in _NEGATORS:
            out.append(token)
            reach = _NEGATION_REACH
            continue
        if reach and token[0].isalpha():
            out.append("NOT_" + token)
            reach -= 1
        else:
            out.append(token)
    return out


# Surface cues the combiner may read (see model.TEXT_INPUTS), in this order.
SURFACE_CUES = ("question", "exclamation", "hashtag", "laughter")
_LAUGH = re.compile(r"\b(?:(?:j[aeiou]){2,}j?|(?:h[ae]){2,}h?|xd+)\b", re.IGNORECASE)


def surface_cues(text: str) -> tuple[float, float, float, float]:
    """Whether ``text`` asks, exclaims, carries a hashtag, laughs: 1.0 or 0.0 each.

    On tweets a question or a hashtag leans neutral (asking, announcing), an
    exclamation or laughter polar; the combiner learns how far on its
    development split. Laughter: "jajaja", "jeje", "haha", "xD".
    """
    return (
        float("?" in text),
        float("!" in text),
        float("#" in text),
        float(_LAUGH.search(text) is not None),
    )


def lexicon_bin(compound: float) -> str:
    """The bin name of a lexicon compound value in [-1, 1]."""
    for upper, name in _LEXICON_BINS:
        if compound <= upper:
            return name
    return "++"


def feature_names(text: str, lexicon_compound: float) -> list[str]:
    """Every feature of ``text`` by name (readable; :func:`featurize` hashes them)."""
    words = tokens(text)
    names = [f"w:{w}" for w in words]
    names.extend(f"b:{a} {b}" for a, b in itertools.pairwise(words))
    for word in words:
        if len(word) > 3 and word.isalpha():
            padded = f"<{word}>"
            names.extend(f"c:{padded[i : i + 4]}" for i in range(len(padded) - 3))
    names.append(f"lex:{lexicon_bin(lexicon_compound)}")
    if not words:
        names.append("empty")
    return names


# Feature names repeat the way words do (Zipf): hashing each once is most of the saving.
_HASH_CACHE_LIMIT = 500_000
_hash_cache: dict[str, int] = {}


def _crc(name: str) -> int:
    value = _hash_cache.get(name)
    if value is None:
        if len(_hash_cache) >= _HASH_CACHE_LIMIT:
            _hash_cache.clear()
        value = _hash_cache[name] = zlib.crc32(name.encode())
    return value


_word_cache: dict[str, tuple[int, ...]] = {}


def _word_hashes(word: str) -> tuple[int, ...]:
    """The CRCs of a word's own features: the word and its character 4-grams."""
    cached = _word_cache.get(word)
    if cached is None:
        if len(_word_cache) >= _HASH_CACHE_LIMIT:
            _word_cache.clear()
        names = [f"w:{word}"]
        if len(word) > 3 and word.isalpha():
            padded = f"<{word}>"
            names.extend(f"c:{padded[i : i + 4]}" for i in range(len(padded) - 3))
        cached = _word_cache[word] = tuple(_crc(name) for name in names)
    return cached


def featurize(text: str, lexicon_compound: float, bits: int = DEFAULT_BITS) -> list[int]:
    """The hashed feature indices of ``text`` (repeats kept: a count is a repeat).

    The same features as :func:`feature_names`, in another order, with each
    word's own features hashed once per process.
    """
    mask = (1 << bits) - 1
    words = tokens(text)
    out = [h & mask for word in words for h in _word_hashes(word)]
    out.extend(_crc(f"b:{a} {b}") & mask for a, b in itertools.pairwise(words))
    out.append(_crc(f"lex:{lexicon_bin(lexicon_compound)}") & mask)
    if not words:
        out.append(_crc("empty") & mask)
    return out
