"""Keep secrets out of every log line, whoever writes it.

Libraries log what they are given: python-telegram-bot writes its API URL
(which contains the bot token) and every call's parameters (a webhook's
secret token, a reply that carries a channel token) at DEBUG. Rather than
silencing them, every record is passed through one filter on the root
handlers that replaces each known secret, and anything shaped like a
botbus bearer token, with ``***``, in the message and in the traceback.

Logging is process-wide, so the filter is too: :func:`install` attaches it
once the handlers exist; :func:`register` adds a secret learnt later (a
generated webhook secret, say).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from botbus.settings import Settings

MASK = "***"
MIN_SECRET_LENGTH = 8  # shorter values are not secrets worth the false positives
# Bearer tokens botbus issues (alerts channel tokens) carry this prefix, so
# they are recognised in text that passed through processes that never saw them.
TOKEN_PREFIX = "bbt_"
_ISSUED_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{16,}")


class SecretFilter(logging.Filter):
    """A logging filter that masks secrets in the message and traceback text."""

    def __init__(self) -> None:
        super().__init__("botbus.redact")
        self._secrets: list[str] = []
        self._formatter = logging.Formatter()

    def add(self, secret: str) -> None:
        """Mask ``secret`` from now on (too short values are ignored)."""
        if len(secret) >= MIN_SECRET_LENGTH and secret not in self._secrets:
            self._secrets.append(secret)
            # Longest first: a token's secret half must not leave its bot id behind.
            self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every known secret and issued token masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _ISSUED_TOKEN.sub(MASK, text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A malformed record: logging reports it at emit time; leave it alone.
            return True
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            # Formatters render exc_info afresh if it is still there; the text is enough.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_FILTER = SecretFilter()


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret a process may hold through its settings."""
    # The NATS identity is a .creds file (BOTBUS_NATS_CREDS): its seed never enters settings.
    found = [settings.telegram_bot_token, settings.webhook_secret]
    values = [s.get_secret_value() for s in found if s is not None]
    if settings.telegram_bot_token is not None:
        # The part after "<bot id>:" is the secret one; it may be logged alone.
        values.append(settings.telegram_bot_token.get_secret_value().partition(":")[2])
    return values


def register(*secrets: str) -> None:
    """Mask these values in every log line of this process from now on."""
    for secret in secrets:
        _FILTER.add(secret)


def redact(text: str) -> str:
    """``text`` with every registered secret masked (for output that bypasses logging)."""
    return _FILTER.redact(text)


def install(settings: Settings | None = None, extra: Iterable[str] = ()) -> SecretFilter:
    """Attach the filter to the root logger's handlers; register the settings' secrets."""
    if settings is not None:
        register(*settings_secrets(settings))
    register(*extra)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    return _FILTER
