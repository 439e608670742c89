"""Texts for errors raised far from a handler: ids of the alerts catalogue, filled in when shown.

The texts themselves live in ``services/alerts/locales/<language>.toml``:
adding a language is adding a file (see :mod:`botbus.i18n`).
"""

from __future__ import annotations

from botbus.i18n import REFERENCE, Catalog, Text, catalog_of


def catalog() -> Catalog:
    """The alerts service's message catalogue (read once)."""
    return catalog_of(__package__ or "services.alerts")


class Localized(Text):
    """One user-facing text of the alerts catalogue, filled in when shown."""

    package = __package__ or "services.alerts"


class UserInputError(ValueError):
    """Input a user typed was refused; ``text`` tells them what to type instead."""

    def __init__(self, text: Localized) -> None:
        super().__init__(text.pick(REFERENCE))
        self.text = text
