"""``botbus sandbox``: run the Telegram Bot API sandbox on its own."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
from pathlib import Path

import click

from botbus.errors import ConfigError
from botbus.sandbox._errors import SandboxBusy, SandboxError
from botbus.sandbox._persist import state_dir
from botbus.sandbox._server import SandboxServer
from botbus.settings import load_settings

DEFAULT_PORT = 8081


async def start_on(server: SandboxServer, host: str, port: int, *, default_port: bool) -> str:
    """Start ``server``; a busy *default* port falls back to a free one, saying why.

    A port the user chose explicitly is not second-guessed: its OSError propagates.
    """
    try:
        return await server.start(host, port)
    except OSError as exc:
        if not default_port or exc.errno != errno.EADDRINUSE:
            raise
    base_url = await server.start(host, 0)
    click.echo(
        f"port {port} is busy (another program listens on it); "
        f"the sandbox listens on {base_url} instead: use that URL"
    )
    return base_url


def busy_message(exc: SandboxBusy) -> str:
    """What to tell someone who starts a second sandbox on the same data directory."""
    if exc.base_url:
        return (
            f"a sandbox is already running at {exc.base_url} with this data directory "
            f"({exc.directory}); use it: open {exc.base_url}/ or run `botbus chat`, "
            "or start another one with --ephemeral or another BOTBUS_DATA_DIR"
        )
    return f"{exc}; stop it first, or use --ephemeral or another BOTBUS_DATA_DIR"


async def _serve(
    host: str, port: int, tokens: tuple[str, ...], username: str, data: Path | None, lang: str
) -> None:
    server = SandboxServer(data_dir=data)
    base_url = await start_on(server, host, port, default_port=port == DEFAULT_PORT)
    try:
        for token in tokens:
            server.add_bot(token, username=username)
        if not tokens and server.find_bot(username) is None:
            server.add_bot(username=username)
        click.echo(f"sandbox running at {base_url}")
        if data is not None:
            click.echo(f"state kept in {data} (--ephemeral to keep nothing)")
        click.echo(f"TELEGRAM_API_URL={server.api_url}")
        for bot in server.bots:
            click.echo(f"bot @{bot.username} id={bot.id} TELEGRAM_BOT_TOKEN={bot.token}")
        web = f"{base_url}/" + (f"?lang={lang}" if lang != "en" else "")
        click.echo(f"web chat: {web}")
        click.echo(f"terminal chat: botbus chat --url {base_url}   (Ctrl-C stops the sandbox)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await server.stop()
        click.echo("sandbox stopped")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port (0 = any free one).")
@click.option(
    "--token",
    "tokens",
    multiple=True,
    help="Register a bot with this token (repeatable); one is made up when none is given.",
)
@click.option("--username", default="botbus_bot", show_default=True, help="Bot username.")
@click.option(
    "--ephemeral",
    is_flag=True,
    help="Keep nothing: no state is read from or written to BOTBUS_DATA_DIR.",
)
@click.option(
    "--lang",
    type=click.Choice(["en", "es"]),
    default="en",
    show_default=True,
    help="Language of the web chat's texts and of its first user.",
)
def sandbox(
    host: str, port: int, tokens: tuple[str, ...], username: str, ephemeral: bool, lang: str
) -> None:
    """Run a local Telegram Bot API (the sandbox) with its web chat, until Ctrl-C."""
    data: Path | None = None
    if not ephemeral:
        try:
            data = state_dir(load_settings().data_dir)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
    try:
        asyncio.run(_serve(host, port, tokens, username, data, lang))
    except SandboxBusy as exc:
        raise click.ClickException(busy_message(exc)) from exc
    except (ValueError, SandboxError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; try another --port"
        ) from exc
