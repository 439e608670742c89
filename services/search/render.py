"""Turning result pages into Telegram HTML messages and paging buttons.

Kept free of the bus so it can be tested as plain functions. Every piece of
user or document text is escaped here or arrives already escaped (snippets).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Protocol

from services.search.index import DocumentHit, MessageHit, ResultPage
from services.search.text import clip
from services.search.web import WebResult

PAGE_SIZE = 5
MAX_QUERY_SHOWN = 80  # characters of the query echoed in the header


class Translate(Protocol):
    """Message ``msg_id`` of the search catalogue in the user's language (the SDK's ``ctx.t``)."""

    def __call__(self, msg_id: str, /, **values: Any) -> str: ...


class PageInfo(Protocol):
    """Where a page sits in its result (any :class:`ResultPage` fits)."""

    @property
    def page(self) -> int: ...
    @property
    def page_size(self) -> int: ...
    @property
    def total(self) -> int: ...
    @property
    def has_next(self) -> bool: ...
    @property
    def has_previous(self) -> bool: ...


@dataclass(frozen=True)
class PageButton:
    """A paging button: its label and callback data (without the "search:" prefix)."""

    label: str
    data: str


def page_data(query_id: str, page: int) -> str:
    """Callback data naming a page of a saved query: ``<id>:<page>``."""
    return f"{query_id}:{page}"


def parse_page_data(data: str) -> tuple[str, int] | None:
    """(query id, page) from callback data, or None if it is not ours."""
    query_id, sep, page = data.partition(":")
    if not sep or not query_id or not page.isdigit() or len(page) > 4:
        return None
    return query_id, int(page)


def _quoted(query: str) -> str:
    return html.escape(clip(query, MAX_QUERY_SHOWN), quote=False)


def _header(t: Translate, page: PageInfo, shown: int, query: str, *, chat: bool) -> str:
    first = page.page * page.page_size + 1
    last = first + shown - 1
    msg_id = "header_messages" if chat else "header_results"
    return t(msg_id, first=first, last=last, total=page.total, query=_quoted(query))


def _did_you_mean(t: Translate, suggestion: str) -> str:
    return t("did_you_mean", suggestion=_quoted(suggestion))


def nothing_found(t: Translate, query: str, *, chat: bool, suggestion: str | None = None) -> str:
    """The reply when a query has no result (with "did you mean …" when a word was corrected)."""
    if suggestion and not chat:
        return t("nothing_found_for", query=_quoted(query)) + _did_you_mean(t, suggestion)
    msg_id = "nothing_found_in_chat" if chat else "nothing_found_try_fewer"
    return t(msg_id, query=_quoted(query))


def render_documents(
    t: Translate,
    page: ResultPage[DocumentHit],
    query: str,
    *,
    suggestion: str | None = None,
    relaxed: bool = False,
) -> str:
    """A page of knowledge-base results: numbered titles, snippets and links.

    ``suggestion``: the results are for this corrected query ("did you mean").
    ``relaxed``: no document holds every word; these hold most of them. The
    link is also written out, so clients that show no link markup still show it.
    """
    lines = [_header(t, page, len(page.hits), suggestion or query, chat=False)]
    if suggestion:
        lines.append(t("showing_suggestion", query=_quoted(query), suggestion=_quoted(suggestion)))
    if relaxed:
        lines.append(t("relaxed_results"))
    for number, hit in enumerate(page.hits, start=page.page * page.page_size + 1):
        title = html.escape(hit.title, quote=False)
        entry = f"\n{number}. <b>{title}</b>\n{hit.snippet}"
        if hit.url:
            link = html.escape(hit.url, quote=True)
            entry += f'\n🔗 <a href="{link}">{html.escape(hit.url, quote=False)}</a>'
        lines.append(entry)
    return "\n".join(lines)


def render_messages(t: Translate, page: ResultPage[MessageHit], query: str) -> str:
    """A page of chat-history results: author, date, link, then snippets."""
    lines = [_header(t, page, len(page.hits), query, chat=True)]
    for number, hit in enumerate(page.hits, start=page.page * page.page_size + 1):
        meta = f"<b>{html.escape(hit.author, quote=False)}</b> · {hit.date:%Y-%m-%d %H:%M} UTC"
        if hit.link:
            meta += f' · <a href="{html.escape(hit.link, quote=True)}">{t("open_link")}</a>'
        lines.append(f"\n{number}. {meta}\n{hit.snippet}")
    return "\n".join(lines)


def paging_buttons(t: Translate, page: PageInfo, query_id: str) -> list[PageButton]:
    """Previous/Next buttons for ``page`` (none when everything fits on one page)."""
    buttons: list[PageButton] = []
    if page.has_previous:
        buttons.append(PageButton(t("previous_page"), page_data(query_id, page.page - 1)))
    if page.has_next:
        buttons.append(PageButton(t("next_page"), page_data(query_id, page.page + 1)))
    return buttons


def _web_snippet(result: WebResult) -> str:
    return "".join(
        f"<b>{html.escape(text, quote=False)}</b>" if match else html.escape(text, quote=False)
        for text, match in result.snippet
    )


def render_web(t: Translate, results: list[WebResult]) -> str:
    """The "From the web" section under the first page of /search results."""
    heading = t("web_heading")
    if not results:
        return t("web_nothing_found", heading=heading)
    lines = [f"🌐 <b>{heading}</b>"]
    for result in results:
        title = html.escape(result.title, quote=False)
        link = html.escape(result.url, quote=True)
        lines.append(f'\n• <b><a href="{link}">{title}</a></b>')
        if result.snippet:
            lines.append(_web_snippet(result))
    return "\n".join(lines)


def web_unavailable(t: Translate) -> str:
    """The notice shown instead of web results when the web backend failed."""
    return t("web_unavailable")
