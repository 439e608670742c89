"""README's settings table names every setting botbus reads."""

from __future__ import annotations

import re
from pathlib import Path

from botbus.settings import Settings, _env_name

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    table = text[text.index("| variable | default | meaning |") :]
    table = table[: table.index("\n\n")]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    # "`BOTBUS_FLOOD_RATE` / `BOTBUS_FLOOD_BURST`" and "`..._TIMEOUT` / `_RESULTS`" rows
    for prefix, suffix in re.findall(r"`([A-Z0-9_]+?)_[A-Z]+` / `(_[A-Z]+)`", table):
        listed.add(prefix + suffix)
    missing = sorted(_env_name(f) for f in Settings.model_fields if _env_name(f) not in listed)
    assert not missing, f"README's settings table lacks {missing}"
