"""ServiceSettings: a service's own settings, named BOTBUS_<NAME>_*, never in the core."""

from __future__ import annotations

import pytest
from pydantic import Field

from botbus.errors import ConfigError
from botbus.service import ServiceSettings
from botbus.settings import Settings, load_settings


class WeatherSettings(ServiceSettings, env_prefix="BOTBUS_WEATHER_"):
    units: str = "metric"
    cities: int = Field(default=3, ge=1)


def test_the_core_settings_know_no_service() -> None:
    assert not [f for f in Settings.model_fields if f.startswith(("search", "alerts"))]


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTBUS_WEATHER_CITIES", "5")
    assert WeatherSettings.load(load_settings(_env_file=None)).cities == 5
    assert WeatherSettings.load().units == "metric"


def test_values_given_to_load_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTBUS_WEATHER_UNITS", "metric")
    core = load_settings(_env_file=None, BOTBUS_WEATHER_UNITS="imperial")
    assert WeatherSettings.load(core).units == "imperial"


def test_a_bad_value_names_the_variable() -> None:
    core = load_settings(_env_file=None, BOTBUS_WEATHER_CITIES="0")
    with pytest.raises(ConfigError, match="setting BOTBUS_WEATHER_CITIES is invalid"):
        WeatherSettings.load(core)
