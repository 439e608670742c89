"""``python -m services.echo``: run the echo service."""

from __future__ import annotations

from services.echo.service import service

if __name__ == "__main__":
    service.run()
