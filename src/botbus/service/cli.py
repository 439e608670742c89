"""``botbus service NAME``: run an installed service (entry-point group ``botbus.services``)."""

from __future__ import annotations

import click

from botbus.errors import BotbusError
from botbus.service._declare import Service
from botbus.service._discovery import load_service as _load


def load_service(name: str) -> Service:
    """The installed service ``name``, or a click error saying what is installed."""
    try:
        return _load(name)
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("service")
@click.argument("name")
def service(name: str) -> None:
    """Run the installed service NAME until SIGTERM or Ctrl-C."""
    load_service(name).run()
