"""The alerts service's own settings (``BOTBUS_ALERTS_*``)."""

from __future__ import annotations

from botbus.service import ServiceSettings


class AlertsSettings(ServiceSettings, env_prefix="BOTBUS_ALERTS_"):
    """Read once at start-up: ``AlertsSettings.load(settings)``."""

    # HOST:PORT of its HTTP endpoint (POST /alerts/<channel>); port 0 picks a free one,
    # "off" disables it (BOTBUS_ALERTS_HTTP)
    http: str = "127.0.0.1:8470"
