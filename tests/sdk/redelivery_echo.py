"""A test variant of echo run as a subprocess (``python -m redelivery_echo``).

Same commands as services/echo, plus ``/slow SECONDS`` (a slow handler) and a
short ack_wait, so redelivery after a SIGKILL happens within the test.
"""

from __future__ import annotations

import asyncio

from botbus.models import InboundCommand
from botbus.service import Context, Service
from services.echo.service import echo, ping

service = Service(
    name="echo",
    version="1.0.0",
    description={"en": "echo with fast redelivery", "es": "echo con reentrega rápida"},
    ack_wait=2.0,
)
service.command("echo", en="Repeat TEXT")(echo)
service.command("ping", en="Ping")(ping)


@service.command("slow", en="Answer after SECONDS")
async def slow(ctx: Context, cmd: InboundCommand) -> None:
    """Sleep, then reply "done": a handler still running when SIGTERM arrives."""
    ctx.log.info("slow handler started")
    await asyncio.sleep(float(cmd.args or "1"))
    await ctx.reply(f"done after {cmd.args}s")


if __name__ == "__main__":
    service.run()
