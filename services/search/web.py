"""Optional web results for ``/search``: a small client for a MediaWiki search API.

Off unless ``BOTBUS_SEARCH_WEB_URL`` names an endpoint such as
``https://en.wikipedia.org/w/api.php``. The client asks
``?action=query&list=search&srsearch=...`` and turns the answer into
:class:`WebResult` values: a title, a link ``<scheme>://<host>/wiki/<Title>``
and the snippet as plain text segments (MediaWiki's HTML is parsed, never
passed on). Every way the backend can fail — timeout, refused connection,
non-200 status, an answer that is not the expected JSON, an API error —
raises :class:`WebSearchError`, so the caller can show local results alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from types import TracebackType
from typing import NamedTuple, Self
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from botbus.errors import BotbusError
from services.search.text import ELLIPSIS

DEFAULT_TIMEOUT = 3.0  # seconds for the whole request, connect to last byte
DEFAULT_LIMIT = 3  # web results shown
MAX_BODY = 1_000_000  # bytes; a search answer of a few results is a few kilobytes
MAX_SNIPPET = 220  # characters of plain text kept from a snippet
USER_AGENT = "botbus-search/1.0 (Telegram bot; web results for /search)"
# Characters MediaWiki titles may hold that can stay as they are in a /wiki/ link.
_TITLE_SAFE = "/:(),'!*@$;"
_SPACES = re.compile(r"\s+")


class WebSearchError(BotbusError):
    """The web backend gave no usable answer; ``reason`` names how it failed.

    Reasons: ``timeout``, ``unreachable``, ``status``, ``invalid`` (not the
    expected JSON), ``api`` (the API answered with an error), ``closed``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Segment(NamedTuple):
    """A run of snippet text; ``match`` when the backend highlighted it."""

    text: str
    match: bool


@dataclass(frozen=True)
class WebResult:
    """One web hit: title, link, and snippet segments (plain text, unescaped)."""

    title: str
    url: str
    snippet: tuple[Segment, ...] = ()

    @property
    def plain_snippet(self) -> str:
        """The snippet without highlighting."""
        return "".join(segment.text for segment in self.snippet)


# -- the answer's shape (only the fields we use; MediaWiki adds many more) ----------


class _Hit(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    title: str = Field(min_length=1)
    pageid: int
    snippet: str = ""


class _Search(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    search: list[_Hit]


class _ApiError(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    code: str = ""
    info: str = ""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    query: _Search | None = None
    error: _ApiError | None = None


# -- snippets -------------------------------------------------------------------------


class _SnippetParser(HTMLParser):
    """Collects text, noting what sits inside ``<span class="searchmatch">``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.segments: list[Segment] = []
        # One entry per open <span>: whether it is a search match.
        self._spans: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "span":
            classes = (dict(attrs).get("class") or "").split()
            self._spans.append("searchmatch" in classes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._spans:
            self._spans.pop()

    def handle_data(self, data: str) -> None:
        self.segments.append(Segment(data, any(self._spans)))


def snippet_segments(snippet_html: str, limit: int = MAX_SNIPPET) -> tuple[Segment, ...]:
    """MediaWiki's snippet HTML as plain text segments, whitespace folded, clipped.

    Tags are dropped and entities decoded; the caller escapes the text again.
    """
    parser = _SnippetParser()
    parser.feed(snippet_html)
    parser.close()
    merged: list[Segment] = []
    for text, match in parser.segments:
        text = _SPACES.sub(" ", text)
        if merged and merged[-1].match == match:
            merged[-1] = Segment(merged[-1].text + text, match)
        elif text:
            merged.append(Segment(text, match))
    clipped: list[Segment] = []
    left = limit
    for index, (text, match) in enumerate(merged):
        if index == 0:
            text = text.lstrip()
        if index == len(merged) - 1:
            text = text.rstrip()
        if len(text) >= left:
            clipped.append(Segment(text[: max(left - 1, 0)].rstrip() + ELLIPSIS, match))
            break
        if text:
            clipped.append(Segment(text, match))
        left -= len(text)
    return tuple(clipped)


def page_link(endpoint: URL, title: str) -> str:
    """The article link for ``title`` on the endpoint's host: ``/wiki/<Title>``."""
    return f"{endpoint.origin()}/wiki/{quote(title.replace(' ', '_'), safe=_TITLE_SAFE)}"


# -- the client -----------------------------------------------------------------------


class MediaWikiClient:
    """Searches one MediaWiki API endpoint over one pooled HTTP session.

    Lifecycle: :meth:`start` opens the session, :meth:`close` closes it (or
    use ``async with``). :meth:`search` raises :class:`WebSearchError` on any
    failure of the backend, never an aiohttp or pydantic exception.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self.endpoint = URL(endpoint)
        self.timeout = timeout
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session (idempotent)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )

    async def close(self) -> None:
        """Close the HTTP session; later searches fail with reason ``closed``."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _url(self, query: str) -> URL:
        # extend_query keeps any parameters the operator put in the endpoint URL.
        return self.endpoint.extend_query(
            action="query",
            list="search",
            srsearch=query,
            srlimit=self.limit,
            srprop="snippet",
            format="json",
            formatversion=2,
        )

    async def search(self, query: str) -> list[WebResult]:
        """The top web results for ``query`` (at most ``limit``; maybe none)."""
        if self._session is None:
            raise WebSearchError("closed", "the web search client is not started")
        host = self.endpoint.host or str(self.endpoint)
        try:
            async with self._session.get(self._url(query), allow_redirects=True) as response:
                if response.status != 200:
                    raise WebSearchError(
                        "status", f"{host} answered HTTP {response.status} {response.reason}"
                    )
                body = await _read_bounded(response, host)
        except TimeoutError:
            raise WebSearchError(
                "timeout", f"{host} did not answer within {self.timeout:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise WebSearchError(
                "unreachable", f"{host} is unreachable: {exc or type(exc).__name__}"
            ) from exc
        return self._results(body, host)

    def _results(self, body: bytes, host: str) -> list[WebResult]:
        try:
            answer = _Answer.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the body"
            raise WebSearchError(
                "invalid",
                f"{host} did not answer with MediaWiki search JSON ({where}: {first['msg']}); "
                "check that BOTBUS_SEARCH_WEB_URL is the wiki's api.php",
            ) from exc
        if answer.error is not None:
            raise WebSearchError(
                "api", f"{host} refused the search: {answer.error.code} {answer.error.info}"
            )
        if answer.query is None:
            raise WebSearchError(
                "invalid",
                f"{host} answered without query.search; check that BOTBUS_SEARCH_WEB_URL "
                "is the wiki's api.php",
            )
        return [
            WebResult(
                title=hit.title,
                url=page_link(self.endpoint, hit.title),
                snippet=snippet_segments(hit.snippet),
            )
            for hit in answer.query.search[: self.limit]
        ]


async def _read_bounded(response: aiohttp.ClientResponse, host: str) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY:
            raise WebSearchError("invalid", f"{host} sent more than {MAX_BODY} bytes")
    return bytes(body)
