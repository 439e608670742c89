"""Reading knowledge-base files into documents.

Supported files:

- ``.md`` / ``.markdown``: optional front matter (``---`` lines around
  ``title: ...`` / ``url: ...`` / ``lang: ...``); otherwise the title is the
  first heading. Markdown syntax is reduced to plain text so snippets read cleanly.
- ``.txt``: the first non-empty line is the title, the rest the body.
- ``.jsonl``: one JSON object a line with ``title``, ``body`` and optional
  ``url`` and ``lang`` strings.

A document's language (``en``, ``es``, ...) comes from its ``lang`` field,
else from a folder of that name on its path (``kb/es/faq.md``); search ranks
the documents in the user's language first.

A file that cannot be read is reported as a :class:`Problem`, never skipped
silently; the other files still load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

SUFFIXES = frozenset({".md", ".markdown", ".txt", ".jsonl"})
MAX_FILE_BYTES = 20 * 1024 * 1024  # larger files are refused, not read into memory

_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS_RE = re.compile(r"(\*\*|__|`)")
_LIST_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_QUOTE_RE = re.compile(r"^\s*>\s?")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_TABLE_RULE_RE = re.compile(r"^\s*\|?[\s:|-]+\|[\s:|-]*$")
_ITALIC_RE = re.compile(r"(?<![\w*])[*_](?=\S)([^*_\n]+?)(?<=\S)[*_](?![\w*])")
_AUTOLINK_RE = re.compile(r"<(https?://[^>\s]+)>")
_REFERENCE_RE = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_RULE_RE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_LANG_RE = re.compile(r"^[a-z]{2}$")
# ISO 639-1 codes recognised as folder names (a folder "kb" or "db" is not a language).
_FOLDER_LANGUAGES = {"ar", "ca", "de", "el", "en", "es", "eu", "fr", "gl", "he", "hi", "it"} | {
    "ja",
    "ko",
    "nl",
    "pl",
    "pt",
    "ro",
    "ru",
    "sv",
    "tr",
    "uk",
    "zh",
}


@dataclass(frozen=True)
class Document:
    """One searchable document. ``file`` groups the documents of one source file."""

    file: str
    title: str
    body: str
    url: str | None = None
    lang: str | None = None  # two-letter language code, when known


@dataclass(frozen=True)
class Problem:
    """A file, or a line of one, that could not be loaded, and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Loaded:
    """The documents of one file and the problems met reading it."""

    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def find_files(path: Path) -> list[Path]:
    """Supported files at ``path`` (a file, or a folder searched recursively), sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def load_file(path: Path) -> Loaded:
    """Read one file into documents; problems are reported, not raised."""
    loaded = Loaded()
    key = str(path.resolve())
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        loaded.problems.append(
            Problem(str(path), f"unsupported file type; use one of {', '.join(sorted(SUFFIXES))}")
        )
        return loaded
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            loaded.problems.append(
                Problem(str(path), f"larger than {MAX_FILE_BYTES // 2**20} MB; split it")
            )
            return loaded
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        loaded.problems.append(Problem(str(path), f"cannot be read as UTF-8 text: {exc}"))
        return loaded
    if suffix == ".jsonl":
        _load_jsonl(key, str(path), raw, loaded)
    elif suffix == ".txt":
        _add(loaded, *_plain_text(key, raw, path.stem))
    else:
        _add(loaded, *_markdown(key, raw, path.stem))
    folder = folder_language(path)
    loaded.documents = [
        d if d.lang or not folder else replace(d, lang=folder) for d in loaded.documents
    ]
    return loaded


def folder_language(path: Path) -> str | None:
    """``es`` for ``.../kb/es/faq.md``: the file's folder, when named by a language code."""
    folder = path.resolve().parent.name.lower()
    return folder if folder in _FOLDER_LANGUAGES else None


def _language(value: object) -> str | None:
    if isinstance(value, str) and _LANG_RE.match(value.strip().lower()):
        return value.strip().lower()
    return None


def _add(loaded: Loaded, document: Document | None, where: str = "") -> None:
    if document is None:
        loaded.problems.append(Problem(where, "has no text"))
    else:
        loaded.documents.append(document)


def _load_jsonl(key: str, where: str, raw: str, loaded: Loaded) -> None:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            loaded.problems.append(Problem(f"{where}:{number}", f"not valid JSON ({exc.msg})"))
            continue
        if not isinstance(item, dict):
            loaded.problems.append(Problem(f"{where}:{number}", "must be a JSON object"))
            continue
        title, body, url = item.get("title"), item.get("body"), item.get("url")
        if not isinstance(title, str) or not title.strip():
            loaded.problems.append(
                Problem(f"{where}:{number}", '"title" must be a non-empty string')
            )
        elif not isinstance(body, str):
            loaded.problems.append(Problem(f"{where}:{number}", '"body" must be a string'))
        elif url is not None and not isinstance(url, str):
            loaded.problems.append(Problem(f"{where}:{number}", '"url" must be a string'))
        else:
            loaded.documents.append(
                Document(
                    key,
                    title.strip(),
                    plain_text(body.strip()),
                    url or None,
                    _language(item.get("lang")),
                )
            )


def _plain_text(key: str, raw: str, fallback: str) -> tuple[Document | None, str]:
    lines = raw.strip().splitlines()
    if not lines:
        return None, key
    title = lines[0].strip() or fallback
    return Document(key, title, plain_text("\n".join(lines[1:]).strip())), key


def _front_matter(raw: str) -> tuple[dict[str, str], str]:
    lines = raw.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, raw
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            meta: dict[str, str] = {}
            for line in lines[1:end]:
                name, sep, value = line.partition(":")
                if sep:
                    meta[name.strip().lower()] = value.strip().strip("\"'")
            return meta, "\n".join(lines[end + 1 :])
    return {}, raw


def markdown_to_text(raw: str) -> Iterator[str]:
    """Lines of ``raw`` Markdown with the markup removed (code blocks kept as text)."""
    for line in raw.splitlines():
        if _FENCE_RE.match(line) or _TABLE_RULE_RE.match(line) or _RULE_RE.match(line):
            continue
        heading = _HEADING_RE.match(line)
        if heading:
            line = heading.group(1)
        line = _QUOTE_RE.sub("", _LIST_RE.sub("", line))
        line = _REFERENCE_RE.sub(r"\1", _LINK_RE.sub(r"\1", _AUTOLINK_RE.sub(r"\1", line)))
        line = _ITALIC_RE.sub(r"\1", _EMPHASIS_RE.sub("", line))
        yield line.replace("|", " ").strip()


def plain_text(text: str) -> str:
    """``text`` with any Markdown markup removed (plain text passes unchanged)."""
    return _BLANK_LINES_RE.sub("\n\n", "\n".join(markdown_to_text(text))).strip()


def _markdown(key: str, raw: str, fallback: str) -> tuple[Document | None, str]:
    meta, content = _front_matter(raw)
    title = meta.get("title", "")
    lines = content.splitlines()
    if not title:
        for index, line in enumerate(lines):
            heading = _HEADING_RE.match(line)
            if heading:
                title = _EMPHASIS_RE.sub("", heading.group(1))
                del lines[index]
                break
    body = _BLANK_LINES_RE.sub("\n\n", "\n".join(markdown_to_text("\n".join(lines)))).strip()
    if not title and not body:
        return None, key
    return (
        Document(
            key, title or fallback, body, meta.get("url") or None, _language(meta.get("lang"))
        ),
        key,
    )
