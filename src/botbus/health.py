"""A small ``GET /healthz`` beside a process's bus work, for container healthchecks.

``BOTBUS_HEALTH_HTTP=HOST:PORT`` turns it on for a service (the gateway has
its own on ``BOTBUS_GATEWAY_HTTP``, with metrics). The answer is the
process's named checks as JSON, 200 when all hold and 503 otherwise;
``botbus healthcheck URL`` turns that into an exit code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import aiohttp
import click
from aiohttp import web

from botbus.errors import ConfigError

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
CHECK_TIMEOUT = 3.0  # seconds `botbus healthcheck` waits for an answer

Check = Callable[[], dict[str, bool]]


def parse_listen(value: str, setting: str) -> tuple[str, int] | None:
    """``HOST:PORT`` of ``setting`` (None for "off"); :class:`ConfigError` if malformed."""
    if value.strip().lower() == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"setting {setting} is invalid: {value!r} is not HOST:PORT "
            "(e.g. 0.0.0.0:8080, port 0 for a free one, or off)"
        )
    return host, int(port)


def listen_error(setting: str, host: str, port: int, exc: OSError) -> ConfigError:
    """One line for an address a process cannot listen on (usually: taken)."""
    return ConfigError(
        f"cannot listen on {host}:{port} ({exc.strerror or exc}): another process uses it? "
        f"Stop it, or set {setting} to a free HOST:PORT"
    )


class HealthServer:
    """Serves ``check`` on ``/healthz`` until stopped."""

    def __init__(self, check: Check) -> None:
        self._check = check
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _healthz(self, request: web.Request) -> web.Response:
        status = self._check()
        ok = all(status.values())
        return web.json_response({"ok": ok, **status}, status=200 if ok else 503)

    async def start(self, listen: str, setting: str = "BOTBUS_HEALTH_HTTP") -> int | None:
        """Listen on ``listen`` (HOST:PORT or "off"); return the bound port."""
        address = parse_listen(listen, setting)
        if address is None:
            return None
        host, port = address
        app = web.Application()
        app.router.add_get(HEALTH_PATH, self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise listen_error(setting, host, port, exc) from exc
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        log.info("health check on http://%s:%s%s", host, self.port, HEALTH_PATH)
        return self.port

    async def stop(self) -> None:
        """Stop answering."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def probe(url: str, timeout: float = CHECK_TIMEOUT) -> tuple[bool, str]:
    """GET ``url``: (healthy, one line saying why not)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url) as resp,
        ):
            body = await resp.text()
            return resp.status == 200, f"HTTP {resp.status}: {body.strip()[:200]}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"no answer from {url}: {exc or type(exc).__name__}"


@click.command("healthcheck")
@click.argument("url")
def healthcheck(url: str) -> None:
    """Exit 0 if URL (a /healthz) answers 200, else 1: for container healthchecks."""
    import asyncio

    healthy, detail = asyncio.run(probe(url))
    if not healthy:
        click.echo(f"unhealthy: {detail}", err=True)
        sys.exit(1)
