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
==  ===================================================================
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from botbus.errors import BotbusError, ConfigError, StartupError, StartupReason
from botbus.service._app import ServiceApp
from botbus.service._logging import configure_logging
from botbus.settings import Settings, load_settings

if TYPE_CHECKING:
    from botbus.service._declare import Service

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error: a bug
EXIT_CONFIG = 2  # a setting is missing or malformed
EXIT_UNREACHABLE = 3  # no broker within the connect timeout
EXIT_REFUSED = 4  # the broker refused the credentials or a subject
EXIT_HOOK = 5  # an on_startup hook raised

_STARTUP_EXITS: dict[StartupReason, int] = {
    "unreachable": EXIT_UNREACHABLE,
    "refused": EXIT_REFUSED,
    "hook": EXIT_HOOK,
}


async def serve(service: Service, settings: Settings, *, url: str | None = None) -> None:
    """Run ``service`` until SIGTERM or SIGINT, then drain in-flight work."""
    app = ServiceApp(service, settings, url=url)
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
        await stop.wait()
        log.info("signal received: draining")
        await app.stop()
    finally:
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
    try:
        asyncio.run(serve(service, settings))
    except StartupError as exc:
        sys.exit(_failed(service, exc, _STARTUP_EXITS[exc.reason]))
    except ConfigError as exc:
        sys.exit(_failed(service, exc, EXIT_CONFIG))
    except BotbusError as exc:
        sys.exit(_failed(service, exc, EXIT_FAILURE))
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
