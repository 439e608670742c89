"""Message catalogues: what botbus and its services say to users, one file per language.

A package keeps its texts in ``<package>/locales/<language>.toml``, one file
per language, each mapping a message id to a text with ``{name}``
placeholders::

    # services/echo/locales/es.toml
    usage = "Uso: /echo TEXTO"
    pong = "pong desde la instancia {instance} de echo ({ms} ms)"

English (``en.toml``) is the reference: every id exists there, and a
language file may leave ids out (the English text is used for them).
Adding a language is adding a file: :attr:`Catalog.languages` lists every
file found, and :func:`pick_language` offers only those. :meth:`Catalog.check`
reports ids a translation does not know and placeholders it spells
differently; the test suite runs it over every bundled catalogue.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import ClassVar, Self

from botbus.errors import ConfigError

REFERENCE = "en"  # every message id exists in this language
LOCALES_DIR = "locales"
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}\Z")


def language_of(code: str | None) -> str:
    """The base language of a Telegram ``language_code`` ("pt-br" -> "pt"); "" if none."""
    return (code or "").split("-")[0].strip().lower()


class Catalog:
    """The texts of one package in every language it has a file for."""

    def __init__(self, name: str, messages: Mapping[str, Mapping[str, str]]) -> None:
        if REFERENCE not in messages:
            raise ConfigError(f"message catalogue {name}: no {REFERENCE}.toml (the reference)")
        self.name = name
        self._messages = {lang: dict(texts) for lang, texts in messages.items()}

    @classmethod
    def load(cls, package: str) -> Catalog:
        """The catalogue in ``<package>/locales/`` (an importable package, e.g. "services.echo")."""
        root = resources.files(package).joinpath(LOCALES_DIR)
        files = {
            entry.name.removesuffix(".toml"): entry.read_text(encoding="utf-8")
            for entry in root.iterdir()
            if entry.name.endswith(".toml")
        }
        return cls.parse(package, files)

    @classmethod
    def from_directory(cls, directory: Path, name: str = "") -> Catalog:
        """The catalogue of the ``*.toml`` files in ``directory``."""
        files = {p.stem: p.read_text(encoding="utf-8") for p in directory.glob("*.toml")}
        return cls.parse(name or str(directory), files)

    @classmethod
    def parse(cls, name: str, files: Mapping[str, str]) -> Catalog:
        """A catalogue from ``{language: TOML text}``; a malformed file is a ConfigError."""
        messages: dict[str, dict[str, str]] = {}
        for language, text in files.items():
            if not _LANGUAGE_RE.match(language):
                raise ConfigError(
                    f"message catalogue {name}: {language}.toml is not named by a language "
                    "code (two or three lowercase letters, e.g. es.toml)"
                )
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"message catalogue {name}: {language}.toml: {exc}") from exc
            bad = [key for key, value in data.items() if not isinstance(value, str)]
            if bad:
                raise ConfigError(
                    f"message catalogue {name}: {language}.toml: {', '.join(bad)} must be "
                    'strings (id = "text")'
                )
            messages[language] = data
        return cls(name, messages)

    @property
    def languages(self) -> tuple[str, ...]:
        """Every language this catalogue has a file for, English first."""
        return (REFERENCE, *sorted(lang for lang in self._messages if lang != REFERENCE))

    @property
    def ids(self) -> frozenset[str]:
        """Every message id (those of the reference language)."""
        return frozenset(self._messages[REFERENCE])

    def text(self, language: str, msg_id: str, /, **values: object) -> str:
        """Message ``msg_id`` in ``language`` (English if it has none), filled with ``values``.

        An id the reference language does not know is a ``KeyError``: a
        typo in the code, which :meth:`check` and the tests catch.
        """
        texts = self._messages.get(language, {})
        template = texts.get(msg_id)
        if template is None:
            template = self._messages[REFERENCE][msg_id]
        return template.format(**values) if values else template

    def check(self) -> list[str]:
        """Problems of the translations: unknown ids, placeholders that differ."""
        reference = self._messages[REFERENCE]
        problems: list[str] = []
        for language, texts in sorted(self._messages.items()):
            for msg_id, template in sorted(texts.items()):
                if msg_id not in reference:
                    problems.append(f"{self.name} {language}: {msg_id} is not in {REFERENCE}")
                elif _fields(template) != _fields(reference[msg_id]):
                    problems.append(
                        f"{self.name} {language}: {msg_id} has placeholders "
                        f"{sorted(_fields(template))}, {REFERENCE} has "
                        f"{sorted(_fields(reference[msg_id]))}"
                    )
        return problems


def _fields(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def pick_language(candidates: Iterable[str | None], installed: Iterable[str]) -> str:
    """The first of ``candidates`` (codes like "es" or "pt-BR") that is installed, else English."""
    available = set(installed)
    for candidate in candidates:
        base = language_of(candidate)
        if base in available:
            return base
    return REFERENCE


@cache
def catalog_of(package: str) -> Catalog:
    """The catalogue of ``package``, read once per process."""
    return Catalog.load(package)


@dataclass(frozen=True)
class Text:
    """A user-facing text not yet in a language: a message id and its placeholders' values.

    For texts made far from a handler (a refusal raised in domain code, a game's
    board) and shown later in the reader's language. A service subclasses it
    once, naming its catalogue's package in :attr:`package`; a value that is a
    ``Text`` itself is shown in the same language.
    """

    package: ClassVar[str]
    msg_id: str
    values: Mapping[str, object] = field(default_factory=dict)

    def pick(self, language: str) -> str:
        """The text in ``language`` (English where that language has no file or no such id)."""
        values = {
            name: value.pick(language) if isinstance(value, Text) else value
            for name, value in self.values.items()
        }
        return catalog_of(self.package).text(language, self.msg_id, **values)

    def format(self, **values: object) -> Self:
        """The same text with (more of) its ``{name}`` placeholders' values."""
        return replace(self, values={**self.values, **values})
