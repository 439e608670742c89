"""Text handling shared by indexing, querying and highlighting.

One rule keeps the three in step: a *word* is a run of letters and digits
(what SQLite's ``unicode61`` tokenizer calls a token), *normalised* by
lower-casing and removing diacritics (what ``remove_diacritics 2`` does).
Stemming always runs on the normalised word, so ``canción``, ``Cancion`` and
``canciones`` all reduce to the same Spanish stem whichever way they were typed.

Every word is stemmed twice, once in English and once in Spanish, and both
stems are indexed in their own shadow column. Detecting the language of a
three-word chat message is unreliable and costs more than stemming twice;
a query word matches a document when its English stem or its Spanish stem
occurs there. A mixed-language stem clash (an English word whose Spanish
stem equals another word's) costs a little precision, never a miss.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

import snowballstemmer

# A token as unicode61 sees it: letters and digits; "_" and punctuation separate.
WORD_RE = re.compile(r"[^\W_]+")
_SPACE_RE = re.compile(r"\s+")

# Stemming in pure Python costs ~30 µs a word; a cache makes indexing
# Zipf-distributed text cheap. Cleared when full rather than LRU-managed,
# because a dict lookup is what keeps the hot path fast.
_STEM_CACHE_LIMIT = 200_000

SNIPPET_WORDS = 28  # words of context shown around the hits
ELLIPSIS = "…"


def normalize(word: str) -> str:
    """Lower-case ``word`` and strip its diacritics (``Canción`` -> ``cancion``)."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class Stemmer:
    """English and Spanish Snowball stemmers with a word cache."""

    def __init__(self) -> None:
        self._en = snowballstemmer.stemmer("english")
        self._es = snowballstemmer.stemmer("spanish")
        # Keyed by the lower-cased word as it appears, so a hit also skips
        # normalisation: most of indexing time is spent on the few words
        # every message repeats.
        self._cache: dict[str, tuple[str, str]] = {}

    def stems(self, word: str) -> tuple[str, str]:
        """(English stem, Spanish stem) of a word (normalised first if need be)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(self._cache) >= _STEM_CACHE_LIMIT:
            self._cache.clear()
        plain = word if word.isascii() and word.islower() else normalize(word)
        # Stems are re-normalised: the Spanish stemmer may emit accented
        # letters, and every indexed token must be a plain unicode61 token.
        result = (
            normalize(self._en.stemWord(plain)) or plain,
            normalize(self._es.stemWord(plain)) or plain,
        )
        self._cache[word] = result
        return result

    def shadow(self, text: str) -> tuple[str, str]:
        """The English and Spanish shadow columns of ``text``: its stems, space-separated."""
        pairs = [self.stems(word) for word in WORD_RE.findall(text.lower())]
        return " ".join(p[0] for p in pairs), " ".join(p[1] for p in pairs)


@dataclass(frozen=True)
class Highlighter:
    """Decides which words of a result to highlight for one query.

    ``exact`` are the query's normalised words, ``en``/``es`` their stems and
    ``prefixes`` the normalised prefixes of ``word*`` terms.
    """

    exact: frozenset[str]
    en: frozenset[str]
    es: frozenset[str]
    prefixes: tuple[str, ...]
    stemmer: Stemmer

    def is_hit(self, word: str) -> bool:
        """True if ``word`` (as written in the text) matches the query."""
        en_stem, es_stem = self.stemmer.stems(word.lower())
        if en_stem in self.en or es_stem in self.es:
            return True
        if not self.prefixes:
            return False
        plain = normalize(word)
        return plain in self.exact or plain.startswith(self.prefixes)

    def snippet(self, text: str, *, max_words: int = SNIPPET_WORDS) -> str:
        """HTML for Telegram: a window of ``text`` around the hits, hits in ``<b>``.

        Everything that is not our own markup is escaped, so user text can
        never inject tags. Whitespace (including newlines) collapses to one space.
        """
        text = _SPACE_RE.sub(" ", text).strip()
        spans = [(m.start(), m.end(), self.is_hit(m.group())) for m in WORD_RE.finditer(text)]
        if not spans:
            return html.escape(clip(text, 200), quote=False)
        first, last = _best_window([hit for _, _, hit in spans], max_words)
        # Cut at the spaces between words, so punctuation stays with its word.
        start, end = 0, len(text)
        if first > 0:
            gap_start = spans[first - 1][1]
            start = gap_start + text[gap_start : spans[first][0]].rfind(" ") + 1
        if last < len(spans) - 1:
            gap_start, gap_end = spans[last][1], spans[last + 1][0]
            space = text[gap_start:gap_end].find(" ")
            end = gap_start + space if space >= 0 else gap_end
        out: list[str] = [ELLIPSIS] if start > 0 else []
        cursor = start
        for word_start, word_end, hit in spans[first : last + 1]:
            if hit:
                out.append(html.escape(text[cursor:word_start], quote=False))
                out.append(f"<b>{html.escape(text[word_start:word_end], quote=False)}</b>")
                cursor = word_end
        out.append(html.escape(text[cursor:end], quote=False))
        if end < len(text):
            out.append(ELLIPSIS)
        return "".join(out)


def _best_window(hits: list[bool], size: int) -> tuple[int, int]:
    """Indices (first, last) of the ``size``-word window holding the most hits.

    The window starts a few words before its first hit so the reader sees
    what leads up to it.
    """
    count = len(hits)
    if count <= size:
        return 0, count - 1
    best_start, best = 0, -1
    current = sum(hits[:size])
    for start in range(count - size + 1):
        if start:
            current += hits[start + size - 1] - hits[start - 1]
        if current > best:
            best, best_start = current, start
    if best > 0:
        first_hit = next(i for i in range(best_start, best_start + size) if hits[i])
        best_start = max(0, min(first_hit - 4, count - size))
    return best_start, best_start + size - 1


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS
