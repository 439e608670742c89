"""echo — the template service: ``/echo TEXT`` and ``/ping``.

Copy this package to start a new service: declare it, add commands, run it.
The SDK does the rest (consumers, retries, replies, discovery, shutdown).
"""

from __future__ import annotations

from datetime import UTC, datetime

from botbus.models import InboundCommand
from botbus.service import Context, Refuse, Service

service = Service(
    name="echo",
    version="1.0.0",
    description={"en": "Repeats what you say", "es": "Repite lo que dices"},
)


def latency_ms(sent: datetime, now: datetime) -> int:
    """Milliseconds between the user's message and now (never negative)."""
    return max(0, round((now - sent).total_seconds() * 1000))


@service.command("echo", en="Repeat TEXT", es="Repite TEXTO")
async def echo(ctx: Context, cmd: InboundCommand) -> None:
    """Reply with the command's text."""
    if not cmd.args.strip():
        raise Refuse(ctx.t(en="Usage: /echo TEXT", es="Uso: /echo TEXTO"))
    await ctx.reply(cmd.args)


@service.command("ping", en="Check the bot is alive", es="Comprueba que el bot responde")
async def ping(ctx: Context, cmd: InboundCommand) -> None:
    """Reply with this instance's id and the time since the user sent /ping."""
    ms = latency_ms(cmd.date, datetime.now(UTC))
    await ctx.reply(
        ctx.t(
            en=f"pong from echo instance {ctx.app.instance_id} ({ms} ms)",
            es=f"pong desde la instancia {ctx.app.instance_id} de echo ({ms} ms)",
        )
    )
