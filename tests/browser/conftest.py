"""The web chat in a real browser: Debian's chromium driven by Playwright, the whole stack live.

One stack (nats-server, sandbox, gateway, games and sentiment services) and
one browser serve a whole test module. Chromium is never downloaded: the
tests use ``/usr/bin/chromium`` (``apt-get install chromium``) and FAIL,
saying how to install it, when it is missing; a silent skip would let
``make test`` pass without ever opening the page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxClient, SandboxServer
from botbus.settings import load_settings
from services.games.service import service as games_service
from services.sentiment.service import service as sentiment_service
from tests.e2e.conftest import Stack, launch_stack

# Debian's chromium; BOTBUS_CHROMIUM names another build of it (e.g. on a non-Debian machine).
CHROMIUM = os.environ.get("BOTBUS_CHROMIUM", "/usr/bin/chromium")
# Headless, offline, quiet: no sandbox (CI runs as root), no GPU, no network of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_WAIT = 15_000  # ms a page element may take to appear (the bot answers through the bus)


def _require_browser() -> Any:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"chromium is not installed at {CHROMIUM}: the web chat tests need it. "
            "Install it with `apt-get install -y chromium` (.ci/run does this), point "
            "BOTBUS_CHROMIUM at one, or deselect these tests with -m 'not slow'.",
            pytrace=False,
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright is missing: `make venv` installs the dev extra", pytrace=False)
    return async_playwright


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The bot with its gateway, games and sentiment services, shared by a module's tests."""
    root = tmp_path_factory.mktemp("stack")
    settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(root / "data"))
    nats_server = NatsServer(root / "nats", settings)
    await nats_server.start()
    sandbox = SandboxServer(Limits(enabled=False))
    await sandbox.start()
    client = SandboxClient(sandbox.base_url)
    try:
        running = await launch_stack(
            root / "data", nats_server, sandbox, client, games_service, sentiment_service
        )
        try:
            yield running
        finally:
            await running.close()
    finally:
        await client.close()
        await sandbox.stop()
        await nats_server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """One chromium for the module: a persistent context on a fresh profile directory."""
    async_playwright = _require_browser()
    profile = tmp_path_factory.mktemp("chromium-profile")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1100, "height": 760},
        )
        context.set_default_timeout(UI_WAIT)
        try:
            yield context
        finally:
            await context.close()


async def open_chat(browser: Any, stack: Stack, query: str) -> Any:
    """A new tab on the web chat as the user ``query`` names (``user=..&name=..&lang=..``)."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    await page.goto(f"{stack.sandbox.base_url}/?{query}")
    await page.wait_for_selector("body[data-ready]")
    return page


DOCS = Path(__file__).resolve().parents[2] / "docs"
