"""Run a service as a process: settings, logging, signals, exit code.

A service that cannot start logs one ERROR line saying what failed and what
to do (the traceback only at DEBUG) and exits with:

==  ===================================================================
0   stopped cleanly after SIGTERM / Ctrl-C
1   an unexpected error (a bug; BOTBUS_LOG_LEVEL=DEBUG shows the traceback)
2   a setting is missing or malformed
3   NATS unreachable within BOTBUS_NATS_CONNECT_TIMEOUT
4   NATS refused the service's user (password, or a subject in nats.conf)
5   an ``on_startup`` hook of the service raised
6   the nats-server is too old for botbus
==  ===================================================================

(the table lives in :mod:`botbus.exits`, shared with the gateway)
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from botbus import redact
from botbus.errors import BotbusError, ConfigError
from botbus.exits import (
    EXIT_BROKER,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_HOOK,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    exit_code_for,
)
from botbus.health import HealthServer
from botbus.service._app import ServiceApp
from botbus.service._logging import configure_logging
from botbus.settings import Settings, load_settings

if TYPE_CHECKING:
    from botbus.service._declare import Service

log = logging.getLogger(__name__)

# The exit codes are shared with the gateway (botbus.exits); re-exported here.
__all__ = [
    "EXIT_BROKER",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_HOOK",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "main",
    "serve",
]


async def serve(service: Service, settings: Settings, *, url: str | None = None) -> None:
    """Run ``service`` until SIGTERM or SIGINT, then drain in-flight work."""
    app = ServiceApp(service, settings, url=url)
    health = HealthServer(app.health)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        start = asyncio.create_task(app.start())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            # Stopped while still waiting for NATS or the streams.
            start.cancel()
            log.info("stopped before the service was ready")
            return
        stopper.cancel()
        start.result()
        try:
            await health.start(settings.health_http_listen)
        except ConfigError:
            await app.stop()
            raise
        await stop.wait()
        log.info("signal received: draining")
        await health.stop()
        await app.stop()
    finally:
        await health.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(service: Service, settings: Settings | None = None) -> None:
    """Process entry point; the exit codes are listed in this module's docstring."""
    try:
        settings = settings or load_settings()
    except ConfigError as exc:
        configure_logging("INFO", service=service.name)
        sys.exit(_failed(service, exc, EXIT_CONFIG))
    configure_logging(settings.log_level, service=service.name)
    redact.install(settings)
    try:
        asyncio.run(serve(service, settings))
    except BotbusError as exc:
        sys.exit(_failed(service, exc, exit_code_for(exc)))
    except Exception as exc:
        # The process boundary: one line for the operator, the traceback for a developer.
        log.error(
            "service %s stopped on an unexpected %s: %s (a bug; run with "
            "BOTBUS_LOG_LEVEL=DEBUG for the traceback)",
            service.name,
            type(exc).__name__,
            exc,
        )
        log.debug("traceback of the failure", exc_info=exc)
        sys.exit(EXIT_FAILURE)
    sys.exit(EXIT_OK)


def _failed(service: Service, exc: BotbusError, code: int) -> int:
    """Log why ``service`` could not run in one line; return the exit code."""
    log.error("service %s cannot start: %s", service.name, exc)
    log.debug("traceback of the failure", exc_info=exc)
    return code
