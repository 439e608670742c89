"""What the gateway itself says to users: the catalogue in ``botbus/gateway/locales/``.

One TOML file per language (``en.toml`` is the reference); adding a
language is adding a file, and ``/language`` offers every language found.
"""

from __future__ import annotations

from functools import cache

from botbus import i18n

Language = str
"""A language code of an installed catalogue file ("en", "es", ...)."""


@cache
def catalog() -> i18n.Catalog:
    """The gateway's catalogue (read once, on first use)."""
    return i18n.Catalog.load("botbus.gateway")


def languages() -> tuple[Language, ...]:
    """Every language the gateway speaks, English first."""
    return catalog().languages


def choices() -> str:
    """The installed languages as the /language usage shows them ("en|es")."""
    return "|".join(languages())


def text(key: str, language: Language, **values: object) -> str:
    """The gateway text ``key`` in ``language``, with ``values`` filled in."""
    if key in ("help_builtin", "language_usage", "menu_language"):
        values.setdefault("choices", choices())
    return catalog().text(language, key, **values)


def pick_language(preferred: str | None, language_code: str | None) -> Language:
    """The user's language: their /language choice, else Telegram's code, else English."""
    return i18n.pick_language((preferred, language_code), languages())
