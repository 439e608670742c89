"""Message catalogues: a file per language per package; adding a language is adding a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from botbus.errors import ConfigError
from botbus.i18n import Catalog, pick_language

BUNDLED = [
    "botbus.gateway",
    "botbus.service",
    "services.echo",
    "services.alerts",
    "services.games",
    "services.search",
    "services.sentiment",
]


@pytest.mark.parametrize("package", BUNDLED)
def test_every_bundled_translation_matches_its_english_reference(package: str) -> None:
    catalog = Catalog.load(package)
    assert catalog.languages[0] == "en" and "es" in catalog.languages
    assert catalog.check() == []


def test_adding_a_language_is_adding_a_file(tmp_path: Path) -> None:
    (tmp_path / "en.toml").write_text('hello = "Hello {name}!"\nbye = "Bye."\n', encoding="utf-8")
    before = Catalog.from_directory(tmp_path)
    assert before.languages == ("en",)
    assert pick_language(["fr-CA"], before.languages) == "en"

    (tmp_path / "fr.toml").write_text('hello = "Bonjour {name} !"\n', encoding="utf-8")
    after = Catalog.from_directory(tmp_path)
    assert after.languages == ("en", "fr")
    assert pick_language([None, "fr-CA"], after.languages) == "fr"
    assert after.text("fr", "hello", name="Ana") == "Bonjour Ana !"
    assert after.text("fr", "bye") == "Bye."  # not translated yet: English
    assert after.text("de", "hello", name="Ana") == "Hello Ana!"  # no file: English


def test_check_names_unknown_ids_and_differing_placeholders(tmp_path: Path) -> None:
    (tmp_path / "en.toml").write_text('hello = "Hello {name}!"\n', encoding="utf-8")
    (tmp_path / "es.toml").write_text(
        'hello = "¡Hola {nombre}!"\nextra = "sobra"\n', encoding="utf-8"
    )
    problems = Catalog.from_directory(tmp_path, "demo").check()
    assert problems == [
        "demo es: extra is not in en",
        "demo es: hello has placeholders ['nombre'], en has ['name']",
    ]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"es": 'a = "b"'}, "no en.toml"),
        ({"en": 'a = "b"', "Spanish": 'a = "c"'}, "not named by a language code"),
        ({"en": "a = "}, "en.toml"),
        ({"en": "a = 3"}, "must be strings"),
    ],
)
def test_a_broken_catalogue_is_a_clear_config_error(files: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Catalog.parse("demo", files)
