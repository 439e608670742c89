"""The weather service's own tests, with botbus.testing (a real broker, no gateway)."""

from __future__ import annotations

from weather.service import forecast, service

from botbus.testing import ServiceHarness


def test_a_city_always_gets_the_same_forecast() -> None:
    assert forecast("Madrid") == forecast("madrid".title())


async def test_weather_answers_and_refuses_without_a_city() -> None:
    async with ServiceHarness(service) as bus:
        assert (await bus.command("/weather Madrid")).text == forecast("Madrid")
        assert "Usage: /weather CITY" in (await bus.command("/weather")).text
