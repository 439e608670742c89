"""/search with the optional web backend, against a local fake MediaWiki API.

The fake speaks MediaWiki's search API (``action=query&list=search``) on a
free port, counts its requests, and can be told to fail in each way a real
backend fails. The service runs on a real nats-server, as in test_search_bus.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from aiohttp import web
from nats.aio.client import Client

from botbus.errors import ConfigError
from botbus.models import AnswerCallback, EditText
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import Settings, load_settings
from botbus.topology import ensure_topology
from services.search.index import SearchIndex
from services.search.kb import Document
from services.search.service import service as search_service
from services.search.settings import SearchSettings
from services.search.web import snippet_segments
from tests.services.search.test_search_bus import Bus, buttons

Mode = Literal["ok", "slow", "error500", "junk", "not-mediawiki", "api-error"]

HITS: list[dict[str, Any]] = [
    {
        "ns": 0,
        "title": "Gateway (telecommunications)",
        "pageid": 101,
        "size": 1234,
        "snippet": 'A <span class="searchmatch">gateway</span> joins networks &amp; '
        "&lt;script&gt;alert(1)&lt;/script&gt; <i>protocols</i>",
        "timestamp": "2024-01-01T00:00:00Z",
    },
    {"ns": 0, "title": "API gateway", "pageid": 102, "snippet": "Routes <b>requests</b>"},
    {"ns": 0, "title": "Residential gateway", "pageid": 103, "snippet": "Home routers"},
]


class FakeMediaWiki:
    """A MediaWiki search API on a free local port; ``mode`` says how it answers."""

    def __init__(self) -> None:
        self.mode: Mode = "ok"
        self.requests: list[dict[str, str]] = []
        self.release = asyncio.Event()  # lets "slow" handlers finish at teardown
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _api(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.query))
        if self.mode == "slow":
            await self.release.wait()
        if self.mode == "error500":
            return web.Response(status=500, text="Internal Server Error")
        if self.mode == "junk":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if self.mode == "not-mediawiki":
            return web.json_response({"results": [{"name": "x"}]})
        if self.mode == "api-error":
            return web.json_response({"error": {"code": "srsearch-error", "info": "bad"}})
        limit = int(request.query.get("srlimit", "10"))
        # A real wiki honours srlimit; send one more to check the client caps anyway.
        return web.json_response(
            {"batchcomplete": True, "query": {"searchinfo": {}, "search": HITS[: limit + 1]}}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/w/api.php", self._api)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/w/api.php"

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def wiki() -> AsyncIterator[FakeMediaWiki]:
    server = FakeMediaWiki()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def bus(admin_nc: Client) -> Bus:
    await ensure_topology(admin_nc.jetstream())
    return Bus(admin_nc)


@pytest.fixture
def seeded(settings: Settings) -> Settings:
    """Seven "gateway" documents (two pages) and one Spanish one."""
    docs = [
        Document("kb", f"Gateway note {i}", f"The gateway relays action {i}.", f"https://e.org/{i}")
        for i in range(7)
    ]
    docs.append(Document("kb", "Canción de cuna", "Una canción para dormir"))
    with SearchIndex.in_data_dir(settings.data_dir) as index:
        index.replace_file("kb", docs)
    return settings


def with_web(settings: Settings, url: str, *, timeout: float = 2.0, results: int = 2) -> Settings:
    return load_settings(
        _env_file=None,
        BOTBUS_DATA_DIR=str(settings.data_dir),
        BOTBUS_SEARCH_WEB_URL=url,
        BOTBUS_SEARCH_WEB_TIMEOUT=timeout,
        BOTBUS_SEARCH_WEB_RESULTS=results,
    )


@pytest.fixture
async def apps(nats_server: NatsServer, bus: Bus) -> AsyncIterator[list[ServiceApp]]:
    running: list[ServiceApp] = []
    yield running
    for app in running:
        await app.stop()


async def start(apps: list[ServiceApp], server: NatsServer, settings: Settings) -> ServiceApp:
    app = ServiceApp(search_service, settings, url=server.url)
    await app.start()
    apps.append(app)
    return app


async def test_web_results_follow_the_local_ones_on_the_first_page_only(
    apps: list[ServiceApp],
    nats_server: NatsServer,
    bus: Bus,
    seeded: Settings,
    wiki: FakeMediaWiki,
) -> None:
    await start(apps, nats_server, with_web(seeded, wiki.url, results=2))
    cmd = await bus.command("search", "gateway")
    reply = await bus.reply_to(cmd)
    local, _, web_part = reply.text.partition("\n\n🌐 <b>From the web</b>\n")
    assert local.startswith("🔎 <b>Results 1–5 of 7</b>: <i>gateway</i>")
    assert web_part, reply.text
    port_url = wiki.url.removesuffix("/w/api.php")
    assert f'• <b><a href="{port_url}/wiki/Gateway_(telecommunications)">' in web_part
    assert "Gateway (telecommunications)</a></b>" in web_part
    # The wiki's HTML became text: its highlight is ours, its escaped tags stay escaped.
    assert (
        "A <b>gateway</b> joins networks &amp; &lt;script&gt;alert(1)&lt;/script&gt; protocols"
        in web_part
    )
    assert f'<a href="{port_url}/wiki/API_gateway">API gateway</a>' in web_part
    assert "Routes requests" in web_part
    assert "Residential gateway" not in web_part  # BOTBUS_SEARCH_WEB_RESULTS=2
    [request] = wiki.requests
    assert request["action"] == "query" and request["list"] == "search"
    assert request["srsearch"] == "gateway" and request["srlimit"] == "2"
    assert request["format"] == "json"
    # Paging still works, and turns through the local results only.
    [(label, data)] = buttons(reply.keyboard)
    assert label == "Next ▶"
    await bus.press(data.removeprefix("search:"), message_id=77)
    edit, answer = await bus.actions(2)
    assert isinstance(edit, EditText) and isinstance(answer, AnswerCallback)
    assert edit.text.startswith("🔎 <b>Results 6–7 of 7</b>")
    assert "🌐" not in edit.text
    # /find is about this chat, never the web.
    await bus.reply_to(await bus.command("find", "gateway"))
    assert len(wiki.requests) == 1


async def test_web_section_speaks_spanish_and_shows_even_with_no_local_hit(
    apps: list[ServiceApp],
    nats_server: NatsServer,
    bus: Bus,
    seeded: Settings,
    wiki: FakeMediaWiki,
) -> None:
    await start(apps, nats_server, with_web(seeded, wiki.url))
    reply = await bus.reply_to(await bus.command("search", "router", language="es"))
    assert reply.text.startswith("No se encontró nada para <i>router</i>")
    assert "\n\n🌐 <b>De la web</b>\n" in reply.text
    assert "Gateway (telecommunications)" in reply.text


FAILURES: list[tuple[Mode | Literal["refused"], str]] = [
    ("slow", "timeout"),
    ("error500", "status"),
    ("junk", "invalid"),
    ("not-mediawiki", "invalid"),
    ("api-error", "api"),
    ("refused", "unreachable"),
]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there any more: connecting is refused.
    return f"http://127.0.0.1:{port}/w/api.php"


@pytest.mark.parametrize(("mode", "reason"), FAILURES)
async def test_failing_backend_leaves_local_results_and_a_notice(
    apps: list[ServiceApp],
    nats_server: NatsServer,
    bus: Bus,
    seeded: Settings,
    wiki: FakeMediaWiki,
    caplog: pytest.LogCaptureFixture,
    mode: Mode | Literal["refused"],
    reason: str,
) -> None:
    url = closed_port_url() if mode == "refused" else wiki.url
    if mode != "refused":
        wiki.mode = mode
    await start(apps, nats_server, with_web(seeded, url, timeout=0.3))
    caplog.set_level(logging.WARNING, logger="services.search")

    cmd = await bus.command("search", "gateway")
    reply = await bus.reply_to(cmd)
    assert reply.text.startswith("🔎 <b>Results 1–5 of 7</b>")
    assert reply.text.endswith(
        "\n\n🌐 <i>Web results are unavailable right now; try again later.</i>"
    )
    assert len(buttons(reply.keyboard)) == 1  # paging is unaffected
    [record] = [r for r in caplog.records if "web results unavailable" in r.getMessage()]
    assert getattr(record, "correlation_id", None) == cmd.correlation_id
    assert f"({reason})" in record.getMessage()

    # The service keeps answering, and shows web results again once the backend heals.
    if mode != "refused":
        wiki.mode = "ok"
    again = await bus.reply_to(await bus.command("search", "cancion", language="es"))
    assert again.text.startswith("🔎 <b>Resultados 1–1 de 1</b>")
    if mode == "refused":
        assert again.text.endswith(
            "Los resultados de la web no están disponibles ahora; inténtalo más tarde.</i>"
        )
    else:
        assert "\n\n🌐 <b>De la web</b>\n" in again.text


@pytest.mark.parametrize("url", [None, ""])
async def test_web_backend_is_off_unless_configured(
    apps: list[ServiceApp],
    nats_server: NatsServer,
    bus: Bus,
    seeded: Settings,
    wiki: FakeMediaWiki,
    url: str | None,
) -> None:
    settings = seeded if url is None else with_web(seeded, url)
    assert SearchSettings.load(settings).web_url is None
    await start(apps, nats_server, settings)
    reply = await bus.reply_to(await bus.command("search", "gateway"))
    assert reply.text.startswith("🔎 <b>Results 1–5 of 7</b>")
    assert "🌐" not in reply.text
    assert wiki.requests == []


def test_a_web_url_that_is_not_http_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"BOTBUS_SEARCH_WEB_URL is invalid: .*http"):
        SearchSettings.load(
            load_settings(_env_file=None, BOTBUS_SEARCH_WEB_URL="en.wikipedia.org/w/api.php")
        )


def test_snippets_lose_their_markup_and_are_clipped() -> None:
    segments = snippet_segments(
        '<div>One  <span class="searchmatch">match</span>\n&quot;two&quot;</div>' + "x" * 500
    )
    assert segments[0].text == "One " and not segments[0].match
    assert segments[1].text == "match" and segments[1].match
    assert segments[2].text.startswith(' "two"xxx') and segments[2].text.endswith("…")
    assert sum(len(s.text) for s in segments) == 220
