"""Which broker a process connects to when NATS_URL is unset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from botbus.connect import UP_STATE_FILE, resolve_url
from botbus.errors import ConfigError
from botbus.settings import load_settings


def test_a_service_joins_the_botbus_up_running_on_its_data_directory(tmp_path: Path) -> None:
    (tmp_path / UP_STATE_FILE).write_text(json.dumps({"nats_url": "nats://127.0.0.1:35611"}))
    settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path))
    assert resolve_url(settings) == "nats://127.0.0.1:35611"
    # NATS_URL, when set, always wins over what botbus up recorded.
    explicit = load_settings(
        _env_file=None, BOTBUS_DATA_DIR=str(tmp_path), NATS_URL="nats://broker:4222"
    )
    assert resolve_url(explicit) == "nats://broker:4222"


@pytest.mark.parametrize("content", [None, "", "not json", "[]", '{"nats_url": 5}'])
def test_without_a_running_botbus_up_the_error_says_what_to_set(
    tmp_path: Path, content: str | None
) -> None:
    if content is not None:
        (tmp_path / UP_STATE_FILE).write_text(content)
    settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path))
    with pytest.raises(ConfigError, match="setting NATS_URL is missing"):
        resolve_url(settings)
