"""``python -m services.sentiment``: run the sentiment service."""

from __future__ import annotations

from services.sentiment.service import service

if __name__ == "__main__":
    service.run()
