"""``botbus gateway``: run the gateway alone (NATS and services run elsewhere).

A gateway that cannot run logs one ERROR line saying what failed and what
to do (the traceback only at DEBUG) and exits with a code from
:mod:`botbus.exits`: 2 for a bad setting, a taken port, or a token or
webhook URL Telegram refuses; 4 when NATS refuses the gateway's user; 6
when the nats-server is too old; 1 for anything unexpected (a bug).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import click
import uvloop

from botbus import redact
from botbus.errors import BotbusError
from botbus.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, exit_code_for
from botbus.settings import load_settings

log = logging.getLogger("botbus.gateway")


@click.command()
def gateway() -> None:
    """Run the gateway: Telegram <-> NATS (needs TELEGRAM_BOT_TOKEN and NATS_URL)."""
    from botbus.gateway.app import Gateway

    try:
        settings = load_settings()
    except BotbusError as exc:
        click.echo(f"gateway cannot start: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact.install(settings)
    # httpx logs every request URL at INFO, and the URL contains the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        # uvloop roughly halves the event loop's own cost: most of the gateway's CPU
        # goes to sockets (HTTP to Telegram, NATS), which is what libuv does best.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Gateway(settings).run_until_stopped())
    except BotbusError as exc:
        log.error("gateway cannot run: %s", exc)
        log.debug("traceback of the failure", exc_info=exc)
        sys.exit(exit_code_for(exc))
    except Exception as exc:
        # The process boundary: one line for the operator, the traceback for a developer.
        log.error(
            "gateway stopped on an unexpected %s: %s (a bug; run with "
            "BOTBUS_LOG_LEVEL=DEBUG for the traceback)",
            type(exc).__name__,
            exc,
        )
        log.debug("traceback of the failure", exc_info=exc)
        sys.exit(EXIT_FAILURE)
    sys.exit(EXIT_OK)
