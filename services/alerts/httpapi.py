"""``POST /alerts/<channel>``: publish an alert over HTTP with the channel's bearer token.

Answers (JSON bodies, each with an ``error`` text saying what to do):

- 202 ``{"alert_id": ..., "channel": ..., "duplicate": false}``: stored durably
  in ``svc_alerts``; the fan-out happens from there;
- 401 no ``Authorization: Bearer <token>`` header;
- 403 a token that is not this channel's, or no such channel: the same
  answer for both, so a caller without a token cannot list channel names;
- 413 a body over 64 KiB; 422 a body that is not a valid alert (``field`` names it).

With a ``dedupe_key`` the alert is published with ``Nats-Msg-Id`` so
JetStream itself drops a repeat within its dedupe window (the answer then
carries the first alert's id and ``"duplicate": true``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from botbus.errors import PayloadError
from botbus.models import Alert, decode_as
from botbus.subjects import is_valid_name
from services.alerts.bus import alert_channel
from services.alerts.channels import ChannelRecord
from services.alerts.store import AlertsStore

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes
# Stands in for a missing channel, compared like a real one: a digest of the
# right length that no token is known to hash to.
_NO_CHANNEL = ChannelRecord(name="none", description="-", token_sha256="0" * 64, created_by=0)
HEALTH_PATH = "/healthz"


@dataclass(frozen=True, slots=True)
class Published:
    """Where an accepted alert went."""

    alert_id: str
    duplicate: bool


Publisher = Callable[[str, Alert], Awaitable[Published]]


def _error(status: int, message: str, **extra: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="botbus-alerts"'} if status == 401 else None
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


class AlertsHttp:
    """The aiohttp application of the alerts service and its lifecycle."""

    def __init__(self, store: AlertsStore, publish: Publisher) -> None:
        self.store = store
        self.publish = publish
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_post("/alerts/{channel}", self.post_alert)
        self.app.router.add_get(HEALTH_PATH, self.health)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str, port: int) -> str:
        """Listen on host:port (0 = a free port); return the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        bound_port = int(addresses[0][1]) if addresses else port  # the real one when port=0
        self.url = f"http://{host}:{bound_port}"
        log.info("alerts HTTP endpoint listening on %s/alerts/<channel>", self.url)
        return self.url

    async def stop(self) -> None:
        """Stop listening (in-flight requests finish first)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self, request: web.Request) -> web.Response:
        """Liveness probe."""
        return web.json_response({"status": "ok"})

    async def post_alert(self, request: web.Request) -> web.Response:
        """Validate the token and body, then store the alert durably."""
        channel = request.match_info["channel"]
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _error(
                401,
                "missing or malformed Authorization header: send "
                "'Authorization: Bearer <channel token>' (the token /newchannel gave you)",
            )
        record = await self.store.get_channel(channel) if is_valid_name(channel) else None
        # The token is hashed and compared even without a channel, so neither the
        # answer nor its timing tells an unknown channel from a wrong token.
        matches = (record or _NO_CHANNEL).token_matches(token)
        if record is None or not matches:
            return _error(
                403,
                f"this token is not valid for channel {channel!r} (or there is no such "
                "channel): use the token /newchannel gave for it",
            )
        body = await request.read()
        try:
            alert = decode_as(Alert, body, alert_channel(channel))
        except PayloadError as exc:
            return _error(
                422,
                f"{exc}. Send JSON like "
                '{"title": "...", "text": "...", "severity": "info|warning|critical", '
                '"url": "...", "dedupe_key": "..."}',
                field=exc.field,
            )
        published = await self.publish(channel, alert)
        log.info(
            "alert %s accepted over HTTP for %s%s",
            published.alert_id,
            channel,
            " (duplicate)" if published.duplicate else "",
        )
        return web.json_response(
            {
                "alert_id": published.alert_id,
                "channel": channel,
                "duplicate": published.duplicate,
            },
            status=202,
        )


__all__ = ["MAX_BODY", "AlertsHttp", "Published", "Publisher"]
