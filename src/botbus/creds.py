"""``botbus creds``: issue identities on the bus, with no edit to the broker's config.

The authority (``<data dir>/auth``, see :mod:`botbus.auth`) is created by the
first ``botbus up`` or by ``botbus creds init``; whoever holds it can issue.
A service installed on this machine gets the grants it declares
(``Service(grants=...)``, its streams) written into its identity.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from botbus.auth import AUTHORITY_FILE, Authority, Credentials, Grants, authority_dir
from botbus.errors import BotbusError
from botbus.service import declared_grants, installed_services
from botbus.settings import Settings, load_settings

SERVER_BLOCK = "auth.conf"  # what `bootstrap` writes for nats-server to include


def _settings() -> Settings:
    try:
        return load_settings()
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc


def _authority(directory: Path) -> Authority:
    try:
        return Authority.load(directory)
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc


def issue_for(authority: Authority, name: str, extra: Grants | None = None) -> Credentials:
    """``name``'s identity: its declared grants plus ``extra``."""
    return authority.issue(name, declared_grants(name).merged(extra or Grants()))


def bootstrap(directory: Path, names: Iterable[str], publishers: Iterable[str] = ()) -> list[Path]:
    """Create (or reuse) the authority in ``directory`` and write what a deployment needs:
    ``auth.conf`` for nats-server to include, and ``<name>.creds`` for each component
    (``admin`` and ``gateway`` too) and ``publisher-<service>.creds`` per publisher.

    The directory is private (0700); the files in it are readable (0644) so each
    can be bind-mounted into a container that runs as another user.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    authority = Authority.load_or_create(directory)
    written = [directory / SERVER_BLOCK]
    written[0].write_text(authority.server_config())
    for name in dict.fromkeys(["admin", "gateway", *names]):
        written.append(issue_for(authority, name).write(directory / f"{name}.creds"))
    for service in publishers:
        path = directory / f"publisher-{service}.creds"
        written.append(authority.issue_publisher(service).write(path))
    for path in written:
        path.chmod(0o644)
    return written


def _write(creds: Credentials, out: Path | None, directory: Path) -> None:
    path = out or directory / "creds" / f"{creds.name}.creds"
    creds.write(path)
    click.echo(f"wrote {path} (identity {creds.name!r}); start it with BOTBUS_NATS_CREDS={path}")


@click.group()
def creds() -> None:
    """Issue NATS identities (operator-mode JWTs) for services, publishers and the gateway."""


@creds.command()
def init() -> None:
    """Create the bus's authority in BOTBUS_DATA_DIR/auth (once)."""
    directory = authority_dir(_settings())
    existed = (directory / AUTHORITY_FILE).exists()
    Authority.load_or_create(directory)
    click.echo(f"authority {'already in' if existed else 'created in'} {directory}")


@creds.command("server-config")
def server_config() -> None:
    """Print the nats-server configuration block (operator, accounts) to include."""
    click.echo(_authority(authority_dir(_settings())).server_config(), nl=False)


@creds.command()
@click.argument("name")
@click.option("--resource", "resources", multiple=True, help="Extra stream/bucket suffix.")
@click.option("--publishes", multiple=True, help="Subject prefix it may also publish to.")
@click.option("--listens", is_flag=True, help="It may read every plain message of every chat.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Where to write the .creds.")
def issue(
    name: str,
    resources: tuple[str, ...],
    publishes: tuple[str, ...],
    listens: bool,
    out: Path | None,
) -> None:
    """Issue the identity of service NAME (or 'gateway', 'admin') to a .creds file.

    An installed service gets the grants it declares (an on_message handler: --listens);
    --resource, --publishes and --listens add more.
    """
    directory = authority_dir(_settings())
    try:
        extra = Grants(resources=resources, publishes=publishes, listens=listens)
        credentials = issue_for(_authority(directory), name, extra)
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    _write(credentials, out, directory)


@creds.command()
@click.argument("service")
@click.option("--name", default="publisher", show_default=True, help="The publisher's name.")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Where to write the .creds.")
def publisher(service: str, name: str, out: Path | None) -> None:
    """Issue a publish-only identity for SERVICE's subjects (e.g. alert publishers).

    MQTT devices log in with its JWT (the first block of the file) as password.
    """
    directory = authority_dir(_settings())
    try:
        credentials = _authority(directory).issue_publisher(service, name)
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    _write(credentials, out, directory)


@creds.command("bootstrap")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("names", nargs=-1)
@click.option(
    "--publisher", "publishers", multiple=True, help="Also a publisher identity for SERVICE."
)
def bootstrap_command(directory: Path, names: tuple[str, ...], publishers: tuple[str, ...]) -> None:
    """Write DIRECTORY/auth.conf and a .creds per component (for containers).

    NAMES default to every installed service; admin and gateway are always issued.
    """
    try:
        written = bootstrap(directory, names or installed_services(), publishers)
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(
        f"include {directory / SERVER_BLOCK} in nats-server's configuration; keep "
        f"{directory / AUTHORITY_FILE} secret (it issues any identity)"
    )
