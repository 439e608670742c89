"""Connect to NATS as one botbus component, with reconnect.

Every process connects with its own identity (:func:`botbus.auth.credentials_for`)
and uses a private inbox prefix ``_INBOX.<name>``: its identity lets a service
subscribe only to its own inboxes, so it can never read replies (or JetStream
deliveries) meant for another component.

``NATS_URL`` may list several servers, comma-separated (every node of a
cluster): the client starts from any that answers and, when its node dies,
reconnects to another one, forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine
from typing import Any

import nats
from nats.aio.client import Client, ServerVersion
from nats.errors import Error as NatsError

from botbus.auth import Grants, credentials_for, identity_name
from botbus.errors import ConfigError, StartupError
from botbus.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_TIME_WAIT = 0.5  # seconds between reconnect attempts
CONNECT_TIMEOUT = 2.0  # seconds per connection attempt
INITIAL_CONNECT_RETRY = 1.0  # seconds between attempts before the first connection
INITIAL_CONNECT_LOG_EVERY = 5  # attempts between two "still waiting" log lines
# The oldest nats-server botbus runs on, and the feature that sets the floor:
# reminders are JetStream message schedules (ADR-51), new in nats-server 2.12.
MIN_NATS_SERVER = (2, 12)
MIN_NATS_SERVER_NEEDS = "JetStream message schedules, which /remind uses"
# Where a running `botbus up` records the broker it started, in its data directory.
UP_STATE_FILE = "up.json"


def inbox_prefix(user: str) -> str:
    """The inbox prefix of identity ``user`` (it may read only ``_INBOX.<user>.>``)."""
    return f"_INBOX.{user}"


def server_list(url: str) -> list[str]:
    """The servers of a ``NATS_URL``: one URL, or several separated by commas."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ConfigError(f"setting NATS_URL has no server in it: {url!r}")
    return servers


def connect_options(
    settings: Settings, component: str, grants: Grants | None = None
) -> dict[str, Any]:
    """The ``nats.connect`` keyword arguments that log in as ``component``."""
    creds = credentials_for(settings, component, grants)
    if creds is None:
        return {"inbox_prefix": inbox_prefix(component)}
    return {"user_credentials": str(creds), "inbox_prefix": inbox_prefix(identity_name(creds))}


def recorded_url(settings: Settings) -> str | None:
    """The broker a ``botbus up`` running on this data directory started, if any."""
    path = settings.data_dir / UP_STATE_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("nats_url")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) and recorded else None


def resolve_url(settings: Settings, url: str | None = None) -> str:
    """The broker URL: ``url`` (e.g. the embedded server's), ``NATS_URL``, or else
    the broker of the ``botbus up`` running on the same data directory.

    The last one lets ``botbus service NAME`` join a running ``make run``
    without looking up the embedded server's port.
    """
    resolved = url or settings.nats_url
    if resolved:
        return resolved
    recorded = recorded_url(settings)
    if recorded:
        log.info("NATS_URL unset: using %s, the broker `botbus up` runs here", recorded)
        return recorded
    raise ConfigError(
        "setting NATS_URL is missing: set it to your broker (e.g. nats://127.0.0.1:4222), "
        "start everything with `botbus up` (which runs an embedded nats-server), or run "
        "this in the directory (or with the BOTBUS_DATA_DIR) of a running `botbus up`"
    )


async def connect(
    settings: Settings,
    component: str,
    *,
    url: str | None = None,
    name: str | None = None,
    wait_for_server: bool = True,
    grants: Grants | None = None,
    login: dict[str, Any] | None = None,
) -> Client:
    """Connect as ``component`` and keep reconnecting forever after that.

    ``login``: the :func:`connect_options` already worked out (their
    credentials are issued once, so the caller can read the same identity).

    With ``wait_for_server`` the first connection is retried too (logging a
    line every few attempts), so a service started before the broker waits
    for it instead of crashing.
    """
    server = resolve_url(settings, url)
    servers = server_list(server)
    login = login or connect_options(settings, component, grants)
    user = login["inbox_prefix"].removeprefix("_INBOX.")

    client: list[Client] = []  # filled once connected; callbacks read it

    async def disconnected() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close, not an outage
        log.warning("disconnected from NATS at %s; reconnecting", server)

    # The last error this module was told of or recovered from: a close with a newer
    # one is the server's doing, not ours.
    seen: list[BaseException | None] = [None]

    async def reconnected() -> None:
        now = client[0].connected_url if client else None
        seen[0] = client[0].last_error if client else None
        log.info("reconnected to NATS at %s", now.netloc if now else server)

    async def closed() -> None:
        # nats-py closes the connection for good on most errors the server sends
        # (e.g. "maximum subscriptions exceeded", auth.SERVICE_MAX_SUBS) and tells
        # no other callback: without this line the process would go deaf silently.
        last = client[0].last_error if client else None
        if last is not None and last is not seen[0]:
            log.error(
                "NATS closed the connection of %s for good (%s): this process no longer "
                "sends or receives anything; restart it",
                user,
                last,
            )

    refusals: asyncio.Queue[Exception] = asyncio.Queue()

    failures = 0

    async def error(exc: Exception) -> None:
        nonlocal failures
        if not client and "authorization" in str(exc).lower():
            # nats-py retries a refused login forever; connect() stops it instead.
            refusals.put_nowait(exc)
            return
        if not client:
            # nats-py retries the first connection itself over the server list,
            # every RECONNECT_TIME_WAIT: one line now and then, not one per attempt.
            if not wait_for_server:
                refusals.put_nowait(exc)
                return
            failures += 1
            if failures % INITIAL_CONNECT_LOG_EVERY == 1:
                log.warning("waiting for NATS at %s as user %s: %s", server, user, exc)
            return
        seen[0] = exc
        log.warning("NATS error: %s", exc)

    attempt = 0
    while True:
        attempt += 1
        try:
            nc = await _first_of(
                nats.connect(
                    servers,
                    name=name or component,
                    **login,
                    connect_timeout=CONNECT_TIMEOUT,
                    reconnect_time_wait=RECONNECT_TIME_WAIT,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    closed_cb=closed,
                    error_cb=error,
                ),
                refusals,
            )
            break
        except (OSError, TimeoutError, NatsError) as exc:
            if not wait_for_server or "authorization" in str(exc).lower():
                raise
            if attempt % INITIAL_CONNECT_LOG_EVERY == 1:
                log.warning("waiting for NATS at %s as user %s: %s", server, user, exc)
            await asyncio.sleep(INITIAL_CONNECT_RETRY)
    client.append(nc)
    try:
        check_server_version(nc.connected_server_version, server)
    except StartupError:
        await close_within(nc, CONNECT_TIMEOUT)
        raise
    return nc


def check_server_version(version: ServerVersion, server: str) -> None:
    """Raise :class:`StartupError` (one line) if the server is older than botbus needs."""
    try:
        found = (version.major, version.minor)
        text = f"{version.major}.{version.minor}.{version.patch}"
    except ValueError:
        found, text = (0, 0), "of an unknown version"
    if found < MIN_NATS_SERVER:
        need = ".".join(map(str, MIN_NATS_SERVER))
        raise StartupError(
            f"nats-server {text} at {server} is too old: botbus needs {need} or later "
            f"({MIN_NATS_SERVER_NEEDS}); upgrade the server (e.g. the nats:{need}-alpine "
            "image or newer)",
            reason="broker",
        )


async def _first_of(
    connecting: Coroutine[Any, Any, Client], refusals: asyncio.Queue[Exception]
) -> Client:
    """The connected client, or the first refusal the server sent while connecting."""
    attempt = asyncio.ensure_future(connecting)
    refused = asyncio.ensure_future(refusals.get())
    try:
        await asyncio.wait({attempt, refused}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (attempt, refused):
            task.cancel()
    if attempt.done() and not attempt.cancelled():
        return attempt.result()
    raise refused.result()


async def close_within(nc: Client, timeout: float) -> bool:
    """Close ``nc``, giving up after ``timeout`` seconds; True if it closed.

    nats-py's ``close()`` waits on the socket's write buffer with no limit
    and can swallow the cancellation of ``asyncio.timeout``, so a broker that
    stopped reading would hang shutdown. The close runs as its own task and
    is abandoned (not awaited) when late; its eventual error is logged.
    """
    closing = asyncio.ensure_future(nc.close())
    closing.add_done_callback(_log_late_close)
    done, _ = await asyncio.wait({closing}, timeout=timeout)
    if not done:
        log.warning("NATS connection did not close in %ss; leaving it behind", timeout)
        return False
    return True


def _log_late_close(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("NATS close ended with %r", exc)
