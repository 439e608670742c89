"""A service package whose import fails as a real one did (its data files left out)."""

from pathlib import Path

Path(__file__).with_name("no-such-locales-dir").joinpath("en.toml").read_text()
