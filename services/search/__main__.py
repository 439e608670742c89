"""``python -m services.search``: run the search service."""

from __future__ import annotations

from services.search.service import service

if __name__ == "__main__":
    service.run()
