"""``botbus sandbox``: run the Telegram Bot API sandbox on its own."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from botbus.sandbox._server import SandboxServer

DEFAULT_PORT = 8081


async def _serve(host: str, port: int, tokens: tuple[str, ...], username: str) -> None:
    server = SandboxServer()
    for token in tokens:
        server.add_bot(token, username=username)
    if not tokens:
        server.add_bot(username=username)
    base_url = await server.start(host, port)
    click.echo(f"sandbox running at {base_url}")
    click.echo(f"TELEGRAM_API_URL={server.api_url}")
    for bot in server.bots:
        click.echo(f"bot @{bot.username} id={bot.id} TELEGRAM_BOT_TOKEN={bot.token}")
    click.echo(f"chat with it: botbus chat --url {base_url}   (Ctrl-C stops the sandbox)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
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
def sandbox(host: str, port: int, tokens: tuple[str, ...], username: str) -> None:
    """Run a local Telegram Bot API (the sandbox) until Ctrl-C."""
    try:
        asyncio.run(_serve(host, port, tokens, username))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; try another --port"
        ) from exc
