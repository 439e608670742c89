"""``botbus search-index PATH``: load knowledge-base documents into the search index."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from botbus.errors import BotbusError
from botbus.settings import load_settings
from services.search.index import SearchIndex
from services.search.indexing import index_path
from services.search.settings import SearchSettings


@click.command("search-index")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def search_index(path: Path) -> None:
    """Index the Markdown, text and JSON-lines documents at PATH for /search.

    PATH is a file or a folder (searched recursively). Re-indexing a file
    replaces its earlier documents. The index lives in BOTBUS_DATA_DIR/search/.
    """
    try:
        settings = load_settings()
        retention = timedelta(days=SearchSettings.load(settings).retention_days)
        with SearchIndex.in_data_dir(settings.data_dir, retention=retention) as index:
            report = index_path(index, path, progress=True)
            total = index.document_count()
    except BotbusError as exc:
        raise click.ClickException(str(exc)) from exc
    for problem in report.problems:
        click.echo(f"skipped {problem}", err=True)
    click.echo(
        f"indexed {report.documents} documents from {report.files} files "
        f"({total} documents in the index)"
    )
    if report.problems and not report.documents:
        raise click.ClickException("nothing was indexed; fix the files listed above")
