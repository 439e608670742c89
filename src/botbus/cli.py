"""The ``botbus`` command line.

Subcommands live beside the code they drive and are imported only when
invoked, so ``botbus --help`` stays fast and one broken area cannot break
the others' commands.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

import click

# name -> "module:attribute" of a click command
SUBCOMMANDS: dict[str, str] = {
    "sandbox": "botbus.sandbox.cli:sandbox",
    "chat": "botbus.sandbox.chat:chat",
    "service": "botbus.service.cli:service",
    "gateway": "botbus.gateway.cli:gateway",
    "up": "botbus.supervisor:up",
    "status": "botbus.status:status",
    "healthcheck": "botbus.health:healthcheck",
    "creds": "botbus.creds:creds",
    "registry": "botbus.status:registry",
}


# Installed packages add commands of their own (e.g. a service's `search-index`):
# [project.entry-points."botbus.commands"] name = "module:command"
COMMANDS_ENTRY_POINT_GROUP = "botbus.commands"


def _all_commands() -> dict[str, str]:
    added = {ep.name: ep.value for ep in entry_points(group=COMMANDS_ENTRY_POINT_GROUP)}
    return {**added, **SUBCOMMANDS}  # a package cannot replace botbus's own commands


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_all_commands())

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _all_commands().get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise click.ClickException(f"'{cmd_name}' is not available: {exc}") from exc
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="botbus")
def cli() -> None:
    """botbus: a Telegram bot whose brains live on a NATS bus."""


def main() -> None:
    """Entry point of the ``botbus`` script."""
    sys.exit(cli())
