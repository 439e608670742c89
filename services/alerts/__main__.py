"""``python -m services.alerts``: run the alerts service."""

from __future__ import annotations

from services.alerts.service import service

if __name__ == "__main__":
    service.run()
