"""botbus: a Telegram bot whose brains live on a NATS bus."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
