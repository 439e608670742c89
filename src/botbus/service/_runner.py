"""Run a service as a process: settings, logging, signals, exit code."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from botbus.errors import BotbusError
from botbus.service._app import ServiceApp
from botbus.service._logging import configure_logging
from botbus.settings import Settings, load_settings

if TYPE_CHECKING:
    from botbus.service._service import Service

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2  # a setting is missing or malformed


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
    """Process entry point: exit 0 after a clean drain, 2 on a bad setting."""
    try:
        settings = settings or load_settings()
    except BotbusError as exc:
        configure_logging("INFO", service=service.name)
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    configure_logging(settings.log_level, service=service.name)
    try:
        asyncio.run(serve(service, settings))
    except BotbusError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    sys.exit(EXIT_OK)
