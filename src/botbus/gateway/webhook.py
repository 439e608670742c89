"""Webhook ingest: Telegram POSTs updates; 200 only once JetStream has them.

A request without the configured ``X-Telegram-Bot-Api-Secret-Token`` gets
403 and publishes nothing. If JetStream does not acknowledge, the answer is
503 and Telegram delivers the update again later.
"""

from __future__ import annotations

import hmac
import json
import logging

from aiohttp import web

from botbus.gateway.ingest import BUS_ERRORS, Ingest
from botbus.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_UPDATE_BYTES = 1024 * 1024  # an update is a few KB; refuse anything absurd


def webhook_app(ingest: Ingest, path: str, secret: str, metrics: GatewayMetrics) -> web.Application:
    """An aiohttp application accepting updates on ``path``."""

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            metrics.webhook_refused.inc()
            log.warning("refused webhook request from %s: wrong secret token", request.remote)
            return web.Response(status=403, text="wrong or missing secret token\n")
        body = await request.read()
        try:
            update = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return web.Response(status=400, text="body is not a JSON update\n")
        try:
            await ingest.handle([update])
        except BUS_ERRORS as exc:
            log.error("webhook update not stored: %s", exc)
            return web.Response(status=503, text="bus unavailable, retry later\n")
        return web.Response(status=200)

    app = web.Application(client_max_size=MAX_UPDATE_BYTES)
    app.router.add_post(path, receive)
    return app
