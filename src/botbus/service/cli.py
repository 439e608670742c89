"""``botbus service NAME``: run an installed service (entry-point group ``botbus.services``)."""

from __future__ import annotations

import sys

import click

from botbus.errors import BotbusError
from botbus.exits import EXIT_CONFIG
from botbus.service._declare import Service
from botbus.service._discovery import load_service as _load


def load_service(name: str) -> Service:
    """The installed service ``name``; else one line saying why, and exit code 2.

    Not installed, not importable (a missing data file, a syntax error) or
    badly declared: all are the installation's setting, not a bug of botbus.
    """
    try:
        return _load(name)
    except (BotbusError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


@click.command("service")
@click.argument("name")
def service(name: str) -> None:
    """Run the installed service NAME until SIGTERM or Ctrl-C."""
    load_service(name).run()
