"""Structured logs: one JSON object per line, with the correlation id.

Fields: ``ts``, ``level``, ``logger``, ``msg``, plus ``service``,
``instance`` and ``correlation_id`` when the record carries them (the SDK's
logger adapters add them), and ``exc`` with the traceback of an exception.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_CONTEXT_FIELDS = ("service", "instance", "correlation_id")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line."""

    def __init__(self, defaults: dict[str, str] | None = None) -> None:
        super().__init__()
        self._defaults = defaults or {}

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line of ``record``."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None) or self._defaults.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already rendered (and redacted) by botbus.redact
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, **defaults: str) -> None:
    """Send every log record to stderr as JSON; ``defaults`` fill missing fields."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(defaults))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # nats-py logs every reconnect attempt at ERROR; ours are clearer.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
