"""Loading a file or folder of knowledge-base documents into the index."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from services.search.index import SearchIndex
from services.search.kb import Problem, find_files, load_file

logger = logging.getLogger(__name__)

# Folders with fewer files than this index without a progress bar.
PROGRESS_MIN_FILES = 20


@dataclass
class IndexReport:
    """What an indexing run did."""

    files: int = 0
    documents: int = 0
    problems: list[Problem] = field(default_factory=list)


def index_path(index: SearchIndex, path: Path, *, progress: bool = False) -> IndexReport:
    """Index every supported file at ``path``; each file replaces its previous version.

    ``progress`` shows a tqdm bar (on stderr) when the folder is large.
    """
    report = IndexReport()
    if not path.exists():
        report.problems.append(Problem(str(path), "does not exist"))
        return report
    files = find_files(path)
    if not files:
        report.problems.append(
            Problem(str(path), "holds no .md, .markdown, .txt or .jsonl file to index")
        )
        return report
    bar = tqdm(
        files,
        desc="indexing",
        unit="file",
        disable=not progress or len(files) < PROGRESS_MIN_FILES,
    )
    for file in bar:
        loaded = load_file(file)
        report.problems.extend(loaded.problems)
        if loaded.documents or not loaded.problems:
            report.documents += index.replace_file(str(file.resolve()), loaded.documents)
            report.files += 1
    for problem in report.problems:
        logger.warning("not indexed: %s", problem)
    return report


def index_bundled(index: SearchIndex, folder: Path) -> IndexReport | None:
    """Index the bundled knowledge base ``folder`` if the index is empty or was seeded from it.

    So an index seeded by an earlier release gets this release's pages at
    start, while a knowledge base the operator loaded instead is left alone.
    None when nothing was indexed.
    """
    if index.document_count() and not index.holds_files_under(folder):
        return None
    return index_path(index, folder)
