"""The search service's own settings (``BOTBUS_SEARCH_*``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from botbus.service import ServiceSettings


class SearchSettings(ServiceSettings, env_prefix="BOTBUS_SEARCH_"):
    """Read once at start-up: ``SearchSettings.load(app.settings)``."""

    # days chat messages stay searchable by /find
    retention_days: int = Field(default=30, ge=1)
    # optional web results for /search from a MediaWiki search API
    # (e.g. https://en.wikipedia.org/w/api.php); unset or empty = off. The timeout is in
    # seconds for the whole request; the results are how many web hits /search shows.
    web_url: str | None = None
    web_timeout: float = Field(default=3.0, gt=0, le=60)
    web_results: int = Field(default=3, ge=1, le=10)

    @field_validator("web_url", mode="before")
    @classmethod
    def _web_url(cls, value: object) -> object:
        # An empty value switches the web backend off, like leaving it unset.
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL, e.g. https://en.wikipedia.org/w/api.php")
        return value
