""" "Did you mean …": the closest word of the knowledge base for a word it lacks.

The vocabulary is every word of the documents' titles and bodies, accent-
folded as the index folds them (so "cancion" is no typo of "canción"), with
how many documents hold it and the spelling most documents use, accents
included: the suggestion reads "canción", not "cancion".

Candidates are found the SymSpell way (Garbe, 2012): every word and every
form of it with one letter deleted are keys to the word, and a query word's
own deletions look those keys up. That finds every word within one edit
(insertion, deletion, substitution, transposition of neighbours) without
comparing against the whole vocabulary; for words of nine letters or more,
deletions of deletions reach two edits. Each candidate is then checked with
the optimal-string-alignment distance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from services.search.text import WORD_RE, Stemmer, normalize

MIN_WORD = 3  # shorter words are never corrected
TWO_EDITS_FROM = 9  # words this long may be two edits away ("unicorn" is not "único")


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: Levenshtein plus transposed neighbours."""
    if a == b:
        return 0
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = ca != cb
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


@dataclass(frozen=True)
class Correction:
    """A query word replaced by the vocabulary's closest word."""

    word: str  # as the user typed it (normalised)
    suggestion: str  # as the documents spell it


class Vocabulary:
    """The knowledge base's words, for finding the closest one to a word it lacks."""

    def __init__(self, texts: Iterable[str], stemmer: Stemmer) -> None:
        # Counted per spelling first (the distinct words of each text), folded after:
        # folding every occurrence would cost more than the rest put together.
        by_spelling: Counter[str] = Counter()
        for text in texts:
            by_spelling.update(set(WORD_RE.findall(text.lower())))
        document_frequency: Counter[str] = Counter()
        surface: dict[str, tuple[int, str]] = {}
        for spelling, count in by_spelling.items():
            folded = normalize(spelling)
            document_frequency[folded] += count
            if count > surface.get(folded, (0, ""))[0]:
                surface[folded] = (count, spelling)
        self._frequency = document_frequency
        self._surface = {w: spelling for w, (_, spelling) in surface.items()}
        self._stemmer = stemmer
        stems = [stemmer.stems(w) for w in document_frequency]
        self._en_stems = frozenset(s[0] for s in stems)
        self._es_stems = frozenset(s[1] for s in stems)
        self._keys: dict[str, list[str]] = {}
        for word in document_frequency:
            if len(word) >= MIN_WORD - 1 and not word.isdigit():
                for key in _deletes(word) | {word}:
                    self._keys.setdefault(key, []).append(word)

    def __len__(self) -> int:
        return len(self._frequency)

    def knows(self, word: str) -> bool:
        """True if ``word`` (normalised) or a word of the same stem is in the documents."""
        if word in self._frequency:
            return True
        en, es = self._stemmer.stems(word)
        return en in self._en_stems or es in self._es_stems

    def closest(self, word: str) -> str | None:
        """The documents' spelling of the word nearest ``word``, or None if none is near."""
        word = normalize(word)
        if len(word) < MIN_WORD or word.isdigit() or self.knows(word):
            return None
        reach = 2 if len(word) >= TWO_EDITS_FROM else 1
        keys = _deletes(word) | {word}
        if reach == 2:
            keys |= {d2 for d1 in _deletes(word) for d2 in _deletes(d1)}
        candidates = {c for key in keys for c in self._keys.get(key, ())}
        best: tuple[int, int, str] | None = None
        for candidate in candidates:
            distance = edit_distance(word, candidate)
            if distance > reach:
                continue
            rank = (distance, -self._frequency[candidate], candidate)
            if best is None or rank < best:
                best = rank
        return self._surface[best[2]] if best else None

    def correct(self, words: Iterable[str]) -> list[Correction]:
        """A correction for each of ``words`` the documents lack and have a near word for."""
        corrections = []
        for word in words:
            suggestion = self.closest(word)
            if suggestion is not None:
                corrections.append(Correction(normalize(word), suggestion))
        return corrections
