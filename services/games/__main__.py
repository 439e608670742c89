"""``python -m services.games``: run the games service."""

from __future__ import annotations

from services.games.service import service

if __name__ == "__main__":
    service.run()
