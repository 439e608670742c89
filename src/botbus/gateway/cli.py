"""``botbus gateway``: run the gateway alone (NATS and services run elsewhere)."""

from __future__ import annotations

import asyncio
import logging

import click
import uvloop

from botbus.errors import BotbusError
from botbus.settings import load_settings


@click.command()
def gateway() -> None:
    """Run the gateway: Telegram <-> NATS (needs TELEGRAM_BOT_TOKEN and NATS_URL)."""
    from botbus.gateway.app import Gateway

    try:
        settings = load_settings()
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request URL at INFO, and the URL contains the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        # uvloop roughly halves the event loop's own cost: most of the gateway's CPU
        # goes to sockets (HTTP to Telegram, NATS), which is what libuv does best.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Gateway(settings).run_until_stopped())
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
