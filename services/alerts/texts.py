"""Texts for errors raised far from a handler: ids of the alerts catalogue, filled in when shown.

The texts themselves live in ``services/alerts/locales/<language>.toml``:
adding a language is adding a file (see :mod:`botbus.i18n`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache

from botbus.i18n import REFERENCE, Catalog


@cache
def catalog() -> Catalog:
    """The alerts service's message catalogue (read once)."""
    return Catalog.load(__package__ or "services.alerts")


@dataclass(frozen=True)
class Localized:
    """One user-facing text: a message id and its placeholders' values (texts of their own too)."""

    msg_id: str
    values: Mapping[str, object] = field(default_factory=dict)

    def pick(self, language: str) -> str:
        """The text in ``language`` (English where that language has no file or no such id)."""
        values = {
            name: value.pick(language) if isinstance(value, Localized) else value
            for name, value in self.values.items()
        }
        return catalog().text(language, self.msg_id, **values)


class UserInputError(ValueError):
    """Input a user typed was refused; ``text`` tells them what to type instead."""

    def __init__(self, text: Localized) -> None:
        super().__init__(text.pick(REFERENCE))
        self.text = text
