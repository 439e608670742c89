"""``ServiceSettings``: a service's own settings, beside its code, never in the core.

A service declares a pydantic-settings class with its environment prefix::

    class SearchSettings(ServiceSettings, env_prefix="BOTBUS_SEARCH_"):
        retention_days: int = Field(default=30, ge=1)

and reads it once at start-up with ``SearchSettings.load(app.settings)``:
``BOTBUS_SEARCH_RETENTION_DAYS`` from the environment or ``.env``, or from the
overrides given to :func:`botbus.settings.load_settings` (which keeps names it
does not know for the services). A bad value is a
:class:`~botbus.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from botbus.errors import ConfigError
from botbus.settings import Settings, env_file


class ServiceSettings(BaseSettings):
    """Base of a service's settings class (give it ``env_prefix="BOTBUS_<NAME>_"``)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
    )

    @classmethod
    def load(cls, settings: Settings | None = None) -> Self:
        """Read the settings; values given to ``load_settings`` win over the environment."""
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        overrides: dict[str, Any] = {}
        for key, value in ((settings.model_extra or {}) if settings else {}).items():
            if prefix and key.upper().startswith(prefix):
                overrides[key[len(prefix) :].lower()] = value
        try:
            return cls(_env_file=env_file(), **overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "?"
            raise ConfigError(
                f"setting {prefix}{field.upper()} is invalid: {first['msg']}"
            ) from exc
