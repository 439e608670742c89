"""Names a service cannot take, and packages that cannot load: refused in one line.

A newcomer's review found a service called ``admin`` issued the admin's
identity, ``/help`` claimable by any service, and one bad package stopping
``make run`` with a traceback.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner

from botbus import supervisor
from botbus.auth import Authority, authority_dir
from botbus.errors import ConfigError
from botbus.service import Service, _discovery
from botbus.service.cli import service as service_command
from botbus.settings import load_settings


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("admin", "reserved by botbus"),
        ("gateway", "reserved by botbus"),
        ("svc", "reserved by botbus"),
        ("my_svc", "no '_'"),
        ("Echo", "lowercase"),
    ],
)
def test_a_service_cannot_take_a_reserved_or_malformed_name(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Service(name, "1.0.0", {"en": "x"})


@pytest.mark.parametrize("command", ["help", "start", "language", "forgetme"])
def test_a_service_cannot_declare_a_command_built_into_the_gateway(command: str) -> None:
    svc = Service("weather", "1.0.0", {"en": "x"})
    with pytest.raises(ValueError, match="built into the gateway"):
        svc.command(command)


def _installed(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    points = {n: EntryPoint(n, t, _discovery.ENTRY_POINT_GROUP) for n, t in targets.items()}
    monkeypatch.setattr(_discovery, "_entry_points", lambda: points)


def test_a_package_that_fails_to_import_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _installed(monkeypatch, hello="tests.sdk._broken_service:service")
    with pytest.raises(ConfigError, match=r"'hello' .* cannot be imported: FileNotFoundError"):
        _discovery.load_service("hello")
    result = CliRunner().invoke(service_command, ["hello"])
    assert result.exit_code == 2
    assert "cannot be imported: FileNotFoundError" in result.output
    assert "Traceback" not in result.output


def test_botbus_up_skips_entry_points_that_cannot_be_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(supervisor, "installed_services", lambda: ["admin", "echo", "my_svc"])
    assert supervisor.discover_services() == ["echo"]
    said = capsys.readouterr().out
    assert "skipping the installed entry point 'admin'" in said
    assert "skipping the installed entry point 'my_svc'" in said


def test_botbus_up_never_issues_a_service_the_admins_identity(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path / "data"))
    Authority.load_or_create(authority_dir(settings))
    with pytest.raises(ConfigError, match="reserved by botbus"):
        supervisor.component_creds(settings, "admin")
