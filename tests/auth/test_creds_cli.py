"""``botbus creds``: an operator issues identities from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from botbus.auth import Credentials, decode_claims
from botbus.cli import cli


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("BOTBUS_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def test_issue_without_an_authority_says_how_to_get_one(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["creds", "issue", "weather"])
    assert result.exit_code == 1
    assert "no botbus authority" in result.output and "botbus up" in result.output
    assert "BOTBUS_DATA_DIR" in result.output  # where to point it when run elsewhere


def test_init_then_issue_a_service_and_a_publisher(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(cli, ["creds", "init"]).exit_code == 0
    out = tmp_path / "weather.creds"
    result = runner.invoke(
        cli, ["creds", "issue", "weather", "--resource", "cache", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    claims = decode_claims(Credentials.read(out).jwt)
    assert claims["name"] == "weather" and claims["nats"]["tags"] == ["res:cache"]

    result = runner.invoke(cli, ["creds", "publisher", "weather", "--name", "sensor-1"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "data" / "auth" / "creds" / "sensor-1.creds"
    assert decode_claims(Credentials.read(path).jwt)["nats"]["tags"] == ["publishes:weather"]

    config = runner.invoke(cli, ["creds", "server-config"])
    assert "operator:" in config.output and "resolver: MEMORY" in config.output


def test_a_reserved_name_gets_a_clear_refusal(runner: CliRunner) -> None:
    runner.invoke(cli, ["creds", "init"])
    result = runner.invoke(cli, ["creds", "issue", "botbus"])
    assert result.exit_code == 1 and "reserved" in result.output
