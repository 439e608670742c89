"""search — ``/search`` over the knowledge base, ``/find`` over this chat's history.

The service listens to every plain message and indexes it (author, date) in
a SQLite FTS5 file under ``BOTBUS_DATA_DIR/search/``; ``/forgetme`` removes
the user's messages, and messages older than ``BOTBUS_SEARCH_RETENTION_DAYS``
are pruned. The knowledge base is loaded with ``botbus search-index PATH``;
an empty index gets the bundled ``docs/kb`` on start.

Several instances must share one data directory (one host): the index is a
local file, and each plain message is indexed by only one instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from botbus.models import (
    ForgetUser,
    InboundCallback,
    InboundCommand,
    InboundMessage,
    InlineButton,
)
from botbus.service import App, Context, Refuse, Service
from services.search.answer import answer
from services.search.index import (
    ChatMessage,
    DocumentHit,
    MessageHit,
    ResultPage,
    SavedQuery,
    Scope,
    SearchIndex,
)
from services.search.indexing import index_bundled
from services.search.query import Query, QueryError, parse_query
from services.search.render import (
    PAGE_SIZE,
    nothing_found,
    paging_buttons,
    parse_page_data,
    render_documents,
    render_messages,
    render_web,
    web_unavailable,
)
from services.search.settings import SearchSettings
from services.search.web import MediaWikiClient, WebSearchError

logger = logging.getLogger(__name__)

BUNDLED_KB = Path(__file__).resolve().parents[2] / "docs" / "kb"
PRUNE_INTERVAL = 3600.0  # seconds between retention sweeps

service = Service(
    name="search",
    version="1.0.0",
    locales=__package__,
)


@dataclass
class Instance:
    """What one running instance holds: its open index and, when configured, a web client."""

    index: SearchIndex
    web: MediaWikiClient | None = None


async def _prune_forever(index: SearchIndex) -> None:
    while True:
        await asyncio.sleep(PRUNE_INTERVAL)
        try:
            await asyncio.to_thread(index.prune)
        except Exception:
            # A failed sweep is retried next hour; /find hides expired messages anyway.
            logger.exception("pruning the search index failed")


@service.lifespan
async def open_index(app: App) -> AsyncIterator[Instance]:
    """Open (or create) the index, load the bundled knowledge base (see index_bundled), prune."""
    retention = timedelta(days=SearchSettings.load(app.settings).retention_days)
    index = await asyncio.to_thread(
        SearchIndex.in_data_dir, app.settings.data_dir, retention=retention
    )
    try:
        if BUNDLED_KB.is_dir():
            report = await asyncio.to_thread(index_bundled, index, BUNDLED_KB)
            if report is not None:
                logger.info("indexed %s bundled documents from %s", report.documents, BUNDLED_KB)
        elif await asyncio.to_thread(index.document_count) == 0:
            logger.warning(
                "the knowledge base is empty and %s is missing: load documents with "
                "`botbus search-index PATH`",
                BUNDLED_KB,
            )
        await asyncio.to_thread(index.prune)
        pruner = asyncio.create_task(_prune_forever(index), name="search:prune")
        logger.info("search index %s open", index.path)
        try:
            yield Instance(index)
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
    finally:
        await asyncio.to_thread(index.close)


@service.lifespan
async def open_web(app: App) -> AsyncIterator[None]:
    """Open the web backend's HTTP session when ``BOTBUS_SEARCH_WEB_URL`` is set."""
    settings = SearchSettings.load(app.settings)
    if settings.web_url is None:
        yield
        return
    client = MediaWikiClient(
        settings.web_url,
        timeout=settings.web_timeout,
        limit=settings.web_results,
    )
    await client.start()
    instance: Instance = app.state
    instance.web = client
    logger.info(
        "web results for /search from %s (timeout %s s)",
        client.endpoint.host,
        settings.web_timeout,
    )
    try:
        yield
    finally:
        instance.web = None
        await client.close()


def _parse(ctx: Context, text: str) -> Query:
    try:
        return parse_query(text)
    except QueryError as exc:
        raise Refuse(ctx.t(exc.msg_id, **exc.values)) from exc


def _keyboard(ctx: Context, buttons_of: list[tuple[str, str]]) -> list[list[InlineButton]] | None:
    if not buttons_of:
        return None
    return [[ctx.button(label, data) for label, data in buttons_of]]


async def _run(
    ctx: Context, index: SearchIndex, scope: Scope, chat_id: int, query: Query, page: int
) -> tuple[str, list[tuple[str, str]]]:
    """Run ``query`` and render one page: (HTML text, paging buttons)."""
    result: ResultPage[DocumentHit] | ResultPage[MessageHit]
    suggestion: str | None = None
    for _attempt in range(2):
        if scope == "kb":
            found = await asyncio.to_thread(
                answer, index, query, page=page, page_size=PAGE_SIZE, language=ctx.language
            )
            result, suggestion = found.page, found.suggestion
            text = render_documents(
                ctx.t, found.page, query.text, suggestion=suggestion, relaxed=found.relaxed
            )
        else:
            msgs = await asyncio.to_thread(
                index.find_messages, chat_id, query, page=page, page_size=PAGE_SIZE
            )
            result, text = msgs, render_messages(ctx.t, msgs, query.text)
        if result.hits or not result.total:
            break
        # The result shrank since the buttons were drawn (pruned, forgotten):
        # show its last page rather than an empty one.
        page = result.pages - 1
    if not result.hits:
        return nothing_found(ctx.t, query.text, chat=scope == "chat", suggestion=suggestion), []
    buttons: list[tuple[str, str]] = []
    if result.has_next or result.has_previous:
        query_id = await asyncio.to_thread(index.save_query, scope, chat_id, query.text)
        buttons = [(b.label, b.data) for b in paging_buttons(ctx.t, result, query_id)]
    return text, buttons


async def _web_section(ctx: Context, client: MediaWikiClient, query: Query) -> str:
    """The "From the web" section, or the notice that it is unavailable (never raises)."""
    try:
        results = await client.search(query.text)
    except WebSearchError as exc:
        ctx.log.warning("web results unavailable (%s): %s", exc.reason, exc)
        return web_unavailable(ctx.t)
    except Exception:
        # Web results are an extra: a bug here must not cost the user the local results.
        ctx.log.exception("web results failed unexpectedly")
        return web_unavailable(ctx.t)
    return render_web(ctx.t, results)


async def _answer(ctx: Context[Instance], cmd: InboundCommand, scope: Scope) -> None:
    query = _parse(ctx, cmd.args)
    local = _run(ctx, ctx.state.index, scope, cmd.chat.id, query, 0)
    client = ctx.state.web if scope == "kb" else None
    if client is None:
        text, buttons = await local
    else:
        # Both at once: the web request (bounded by its timeout) adds no wait to the index's.
        (text, buttons), web = await asyncio.gather(local, _web_section(ctx, client, query))
        text = f"{text}\n\n{web}"
    await ctx.reply(text, parse_mode="HTML", keyboard=_keyboard(ctx, buttons))


@service.command("search")
async def search(ctx: Context, cmd: InboundCommand) -> None:
    """Knowledge-base results: title, highlighted snippet, link; paged."""
    if not cmd.args.strip():
        raise Refuse(ctx.t("usage_search_query_e"))
    await _answer(ctx, cmd, "kb")


@service.command("find")
async def find(ctx: Context, cmd: InboundCommand) -> None:
    """This chat's past messages, recent relevant ones first, with links where possible."""
    if not cmd.args.strip():
        raise Refuse(ctx.t("usage_find_words_e"))
    await _answer(ctx, cmd, "chat")


@service.on_callback
async def turn_page(ctx: Context[Instance], cb: InboundCallback) -> None:
    """Next/Previous: re-run the saved query and edit the results message in place."""
    index = ctx.state.index
    parsed = parse_page_data(cb.data)
    saved: SavedQuery | None = None
    if parsed is not None:
        saved = await asyncio.to_thread(index.saved_query, parsed[0])
    if saved is None or saved.chat_id != cb.chat.id or cb.message_id is None:
        await ctx.answer_callback(
            ctx.t("this_search_has_expired"),
            show_alert=True,
        )
        return
    assert parsed is not None  # saved is only set when parsed
    # A saved query was valid when saved; parse errors here would be a bug.
    query = parse_query(saved.query)
    text, buttons = await _run(ctx, index, saved.scope, saved.chat_id, query, parsed[1])
    await ctx.edit(cb.message_id, text, parse_mode="HTML", keyboard=_keyboard(ctx, buttons))
    await ctx.answer_callback()


@service.on_message
async def remember(ctx: Context[Instance], msg: InboundMessage) -> None:
    """Index a plain message of any chat (an edit replaces the earlier text)."""
    if not msg.text.strip():
        return
    message = ChatMessage(
        chat_id=msg.chat.id,
        message_id=msg.message_id,
        user_id=msg.user.id,
        author=msg.user.display_name,
        date=msg.date,
        text=msg.text,
        chat_type=msg.chat.type,
    )
    await asyncio.to_thread(ctx.state.index.add_message, message)


@service.on_forget
async def forget(ctx: Context[Instance], event: ForgetUser) -> None:
    """``/forgetme``: delete every indexed message the user wrote."""
    removed = await asyncio.to_thread(ctx.state.index.forget_user, event.user_id)
    ctx.log.info("forgot user %s: %s indexed messages removed", event.user_id, removed)
