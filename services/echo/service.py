"""echo — the template service: ``/echo TEXT`` and ``/ping``.

Copy this package to start a new service: declare it, add commands, run it.
The SDK does the rest (consumers, retries, replies, discovery, shutdown).
"""

from __future__ import annotations

from datetime import UTC, datetime

from botbus.models import InboundCommand
from botbus.service import Context, Refuse, Service

# Texts live in locales/<language>.toml: adding a language is adding a file.
service = Service(name="echo", version="1.0.0", locales=__package__)


def latency_ms(sent: datetime, now: datetime) -> int:
    """Milliseconds between the user's message and now (never negative)."""
    return max(0, round((now - sent).total_seconds() * 1000))


@service.command("echo")
async def echo(ctx: Context, cmd: InboundCommand) -> None:
    """Reply with the command's text."""
    if not cmd.args.strip():
        raise Refuse(ctx.t("usage"))
    await ctx.reply(cmd.args)


@service.command("ping")
async def ping(ctx: Context, cmd: InboundCommand) -> None:
    """Reply with this instance's id and the time since the user sent /ping."""
    ms = latency_ms(cmd.date, datetime.now(UTC))
    await ctx.reply(ctx.t("pong", instance=ctx.app.instance_id, ms=ms))
