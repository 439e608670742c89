"""``/healthz`` and ``/metrics`` for the gateway, beside its bus work."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from botbus.gateway.metrics import GatewayMetrics


def health_app(metrics: GatewayMetrics, check: Callable[[], dict[str, bool]]) -> web.Application:
    """``check`` returns named booleans; all true means healthy (200), else 503."""

    async def healthz(request: web.Request) -> web.Response:
        status = check()
        ok = all(status.values())
        return web.json_response({"ok": ok, **status}, status=200 if ok else 503)

    async def scrape(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", scrape)
    return app
