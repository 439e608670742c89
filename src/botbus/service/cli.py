"""``botbus service NAME``: run the service package ``services.NAME``."""

from __future__ import annotations

import importlib

import click

from botbus import subjects
from botbus.service._declare import Service


def load_service(name: str) -> Service:
    """Import ``services.<name>.service`` and return its module-level ``service``."""
    if not subjects.is_valid_name(name):
        raise click.BadParameter(f"{name!r} is not a service name", param_hint="NAME")
    try:
        module = importlib.import_module(f"services.{name}.service")
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"no service {name!r}: expected a module services/{name}/service.py ({exc})"
        ) from exc
    found = getattr(module, "service", None)
    if not isinstance(found, Service):
        raise click.ClickException(
            f"services/{name}/service.py must define a module-level `service = Service(...)`"
        )
    return found


@click.command("service")
@click.argument("name")
def service(name: str) -> None:
    """Run the service NAME (services/NAME) until SIGTERM or Ctrl-C."""
    load_service(name).run()
