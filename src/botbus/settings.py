"""All configuration, read once at start-up and passed down as an object.

Values come from the environment and an optional ``.env`` file in the working
directory (``BOTBUS_ENV_FILE`` names another one; empty: none). Nothing in
botbus reads ``os.environ`` elsewhere. :func:`load_settings`
turns a validation failure into :class:`~botbus.errors.ConfigError` whose
message is one line naming the setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from botbus.errors import ConfigError

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org/bot"
# Which .env file settings read: default ".env"; an empty value reads none. `botbus up`
# gives its children an empty one and passes on its own .env minus the secrets.
ENV_FILE_VAR = "BOTBUS_ENV_FILE"


def env_file() -> Path | None:
    """The ``.env`` file settings are read from, or None for none."""
    chosen = os.environ.get(ENV_FILE_VAR, ".env")
    return Path(chosen) if chosen else None


class Settings(BaseSettings):
    """botbus settings. Environment names are given on each field."""

    # An empty variable means "unset": compose files pass ``${VAR:-}`` for settings
    # the user may leave out, and "" must then get the default, not fail validation.
    # extra="allow": a name this class does not know, given to load_settings() or found
    # in .env, is kept (model_extra) for the services' own settings (ServiceSettings.load).
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="allow",
        frozen=True,
        env_ignore_empty=True,
    )

    nats_url: str | None = Field(default=None, validation_alias="NATS_URL")
    # This process's identity on the bus: a .creds file issued by `botbus creds issue`.
    # Unset: credentials are issued on the fly from the authority in the data directory
    # (the embedded broker's, zero-config on one machine), or none are used.
    nats_creds: Path | None = Field(default=None, validation_alias="BOTBUS_NATS_CREDS")

    telegram_bot_token: SecretStr | None = Field(
        default=None, validation_alias="TELEGRAM_BOT_TOKEN"
    )
    telegram_api_url: str | None = Field(default=None, validation_alias="TELEGRAM_API_URL")

    webhook_url: str | None = Field(default=None, validation_alias="BOTBUS_WEBHOOK_URL")
    webhook_listen: str = Field(default="0.0.0.0:8443", validation_alias="BOTBUS_WEBHOOK_LISTEN")
    webhook_secret: SecretStr | None = Field(default=None, validation_alias="BOTBUS_WEBHOOK_SECRET")

    # seconds a starting service waits for the broker before it exits (code 3)
    nats_connect_timeout: float = Field(
        default=60.0, gt=0, validation_alias="BOTBUS_NATS_CONNECT_TIMEOUT"
    )

    data_dir: Path = Field(default=Path(".botbus"), validation_alias="BOTBUS_DATA_DIR")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=AliasChoices("BOTBUS_LOG_LEVEL", "LOG_LEVEL")
    )
    admin_ids: list[int] = Field(default_factory=list, validation_alias="BOTBUS_ADMIN_IDS")

    # every service: HOST:PORT of a small GET /healthz (200 while connected and
    # consuming, else 503) for container healthchecks; "off" (default) disables it
    health_http_listen: str = Field(default="off", validation_alias="BOTBUS_HEALTH_HTTP")

    # gateway: per-user flood control (token bucket) and its health/metrics endpoint
    flood_rate: float = Field(default=2.0, gt=0, validation_alias="BOTBUS_FLOOD_RATE")
    flood_burst: int = Field(default=20, ge=1, validation_alias="BOTBUS_FLOOD_BURST")
    # HOST:PORT of /healthz and /metrics; port 0 picks a free one, "off" disables it
    gateway_http_listen: str = Field(
        default="127.0.0.1:9464", validation_alias="BOTBUS_GATEWAY_HTTP"
    )

    # gateway: the outbound scheduler's budget (Telegram's published limits by default).
    # BOTBUS_PAID_BROADCAST is for bots with allow_paid_broadcast: up to 1000 msg/s overall.
    rate_global: float = Field(default=30.0, gt=0, validation_alias="BOTBUS_RATE_GLOBAL")
    rate_per_chat: float = Field(default=1.0, gt=0, validation_alias="BOTBUS_RATE_PER_CHAT")
    rate_group_per_min: int = Field(default=20, ge=1, validation_alias="BOTBUS_RATE_GROUP_PER_MIN")
    paid_broadcast: bool = Field(default=False, validation_alias="BOTBUS_PAID_BROADCAST")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("webhook_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:8443")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @property
    def webhook_host_port(self) -> tuple[str, int]:
        """``BOTBUS_WEBHOOK_LISTEN`` split into host and port."""
        host, _, port = self.webhook_listen.rpartition(":")
        return host, int(port)


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read settings once; raise :class:`ConfigError` naming the bad setting."""
    try:
        overrides.setdefault("_env_file", env_file())
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        name = _env_name(field)
        raise ConfigError(f"setting {name} is invalid: {first['msg']}") from exc
