"""``/weather CITY``: a forecast, made up deterministically (no network needed)."""

from __future__ import annotations

import hashlib

from botbus.models import InboundCommand
from botbus.service import Context, Refuse, Service

service = Service("weather", "0.1.0", {"en": "Weather forecasts", "es": "El tiempo"})
SKIES = ("sunny", "cloudy", "rainy", "windy", "snowy")


def forecast(city: str) -> str:
    """The same city always gets the same forecast."""
    seed = hashlib.sha256(city.casefold().encode()).digest()
    return f"{city}: {SKIES[seed[0] % len(SKIES)]}, {seed[1] % 35 - 5} °C"


@service.command("weather", en="Forecast for CITY", es="El tiempo en CIUDAD")
async def weather(ctx: Context, cmd: InboundCommand) -> None:
    """Reply with the forecast of the city in the arguments."""
    if not cmd.args.strip():
        raise Refuse("Usage: /weather CITY")
    await ctx.reply(forecast(cmd.args.strip()))
