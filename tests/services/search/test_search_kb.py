"""Loading knowledge-base files, the bundled sample, and `botbus search-index`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from botbus.cli import cli
from services.search.index import SearchIndex
from services.search.indexing import index_bundled, index_path
from services.search.kb import load_file
from services.search.query import parse_query

BUNDLED_KB = Path(__file__).resolve().parents[3] / "docs" / "kb"


def test_markdown_title_comes_from_front_matter_or_first_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("Intro\n\n# **Streams** guide\n\nUse [streams](x.md) `now`.\n")
    (tmp_path / "b.md").write_text(
        "---\ntitle: Front\nurl: https://e.org/b\n---\n# Heading\ntext\n"
    )
    (a,) = load_file(tmp_path / "a.md").documents
    assert (a.title, a.body) == ("Streams guide", "Intro\n\nUse streams now.")
    (b,) = load_file(tmp_path / "b.md").documents
    assert (b.title, b.url) == ("Front", "https://e.org/b")
    assert "Heading" in b.body


def test_plain_text_title_is_the_first_line(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_text("\nNotes\nbody line\n")
    (doc,) = load_file(tmp_path / "n.txt").documents
    assert (doc.title, doc.body) == ("Notes", "body line")


def test_json_lines_report_each_bad_line(tmp_path: Path) -> None:
    lines = [
        json.dumps({"title": "Good", "body": "ok", "url": "https://e.org"}),
        "{not json",
        json.dumps({"body": "no title"}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"title": "Also good", "body": "fine"}),
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    loaded = load_file(tmp_path / "d.jsonl")
    assert [d.title for d in loaded.documents] == ["Good", "Also good"]
    reasons = [str(p) for p in loaded.problems]
    assert len(reasons) == 3
    assert reasons[0].endswith(
        "d.jsonl:2: not valid JSON (Expecting property name enclosed in double quotes)"
    )
    assert '"title" must be a non-empty string' in reasons[1]


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "bin.md").write_bytes(b"\xff\xfe\x00bad")
    loaded = load_file(tmp_path / "bin.md")
    assert loaded.documents == []
    assert "UTF-8" in str(loaded.problems[0])


def test_bundled_knowledge_base_loads_in_both_languages(tmp_path: Path) -> None:
    with SearchIndex(tmp_path / "i.sqlite3") as index:
        report = index_path(index, BUNDLED_KB)
        assert report.problems == []
        assert report.documents >= 30
        assert index.search_documents(parse_query("jetstream consumers")).total >= 2
        spanish = index.search_documents(parse_query("cancion"))
        assert "Una canción para probar las tildes" in [h.title for h in spanish.hits]


def test_an_index_seeded_from_the_bundled_kb_gets_its_new_pages_at_start(
    tmp_path: Path,
) -> None:
    bundled = tmp_path / "kb"
    shutil.copytree(BUNDLED_KB, bundled)
    with SearchIndex(tmp_path / "seeded.sqlite3") as index:
        assert index_bundled(index, bundled) is not None  # empty: seeded
        (bundled / "en" / "privacy.md").write_text("# Privacy\n\nA new release's quokka.")
        report = index_bundled(index, bundled)  # the next start
        assert report is not None and report.problems == []
        assert [h.title for h in index.search_documents(parse_query("quokka")).hits] == ["Privacy"]
    # An operator's own knowledge base is left alone: no bundled page added.
    with SearchIndex(tmp_path / "own.sqlite3") as index:
        own = tmp_path / "own.md"
        own.write_text("# Our handbook\n\nOnly ours.")
        index_path(index, own)
        assert index_bundled(index, bundled) is None
        assert index.document_count() == 1


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)  # no developer .env file
    monkeypatch.setenv("BOTBUS_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def test_search_index_command_indexes_a_folder(runner: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    for i in range(25):  # enough files for the progress bar
        (folder / f"doc{i}.md").write_text(f"# Doc {i}\n\nabout gateways {i}\n")
    (folder / "bad.jsonl").write_text("{oops\n")
    result = runner.invoke(cli, ["search-index", str(folder)])
    assert result.exit_code == 0, result.output
    assert "indexed 25 documents from 25 files (25 documents in the index)" in result.output
    assert "bad.jsonl:1: not valid JSON" in result.output
    with SearchIndex.in_data_dir(tmp_path / "data") as index:
        assert index.search_documents(parse_query("gateway")).total == 25


def test_search_index_command_fails_clearly_when_nothing_loads(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(cli, ["search-index", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "holds no .md, .markdown, .txt or .jsonl file" in result.output
    assert "nothing was indexed" in result.output
