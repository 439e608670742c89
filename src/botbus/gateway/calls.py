"""What an outbound action is in Telegram's terms: its calls, and what their errors mean.

:func:`telegram_calls` maps one bus action to the Bot API calls that carry it
out, in order (a text over 4096 characters is several ``sendMessage`` calls).
Each :class:`TelegramCall` is one budgeted unit for the outbound scheduler;
its ``send`` already holds the plain-text fallback (a text Telegram cannot
parse as MarkdownV2/HTML is sent again without formatting), so the fallback
never lets another message to the chat slip in between.

:func:`classify_telegram_error` says what a failed call means for the
scheduler: a 429 to honour, a refusal for good, or a transient failure to
retry. The scheduler takes it as a parameter, so it knows no Telegram error
class itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    LinkPreviewOptions,
    ReplyParameters,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from botbus.models import (
    MAX_MESSAGE_TEXT,
    AnswerCallback,
    DeleteMessage,
    EditText,
    InlineKeyboard,
    SendChatAction,
    SendPhoto,
    SendText,
)

__all__ = [
    "PERMANENT_ERRORS",
    "SendAction",
    "TelegramCall",
    "Verdict",
    "classify_telegram_error",
    "error_code",
    "foreign_buttons",
    "is_harmless",
    "retry_after_seconds",
    "split_text",
    "telegram_calls",
]

SendAction = SendText | EditText | AnswerCallback | SendPhoto | SendChatAction | DeleteMessage
Send = Callable[[], Awaitable[object]]

# Built once: PTB objects are costly to construct, and this one never changes.
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)

# Telegram's answers that will not change on a retry.
PERMANENT_ERRORS: tuple[type[TelegramError], ...] = (
    Forbidden,
    BadRequest,  # a subclass of NetworkError: must be matched before the transient ones
    ChatMigrated,
    InvalidToken,
    EndPointNotFound,
    Conflict,
)


@dataclass(frozen=True)
class Verdict:
    """What a failed call means: wait ``retry_after`` (a 429), a refusal for good,
    retry later, or a bug in the caller (refused too, and logged with its traceback)."""

    kind: Literal["rate_limited", "permanent", "transient", "bug"]
    retry_after: float = 0.0  # seconds, for "rate_limited"


@dataclass(frozen=True)
class TelegramCall:
    """One Bot API call of an action."""

    send: Send
    # Calls that send no message (answerCallbackQuery, sendChatAction) are outside
    # Telegram's message budgets.
    unlimited: bool = False


def retry_after_seconds(exc: RetryAfter) -> float:
    """``exc.retry_after`` in seconds, whether PTB hands out an int or a timedelta.

    PTB 22.2+ warns on reading the attribute unless ``PTB_TIMEDELTA`` is set; the
    value is the same either way, so the warning is silenced here only.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: object = exc.retry_after
    if isinstance(value, timedelta):
        return max(value.total_seconds(), 0.0)
    if isinstance(value, int | float):
        return max(float(value), 0.0)
    raise TypeError(f"RetryAfter.retry_after has unexpected type {type(value).__name__}")


def classify_telegram_error(exc: Exception) -> Verdict:
    """The scheduler's reading of an exception raised by a PTB call.

    ``RetryAfter`` is a 429; ``Forbidden`` (blocked, kicked), ``BadRequest``
    (chat not found, bad text), ``ChatMigrated``, ``InvalidToken``,
    ``EndPointNotFound`` and ``Conflict`` are refusals for good; network
    errors, timeouts, 5xx and any other ``TelegramError`` are transient. An
    exception that is not a ``TelegramError`` is a bug in the caller (retrying
    would repeat it).
    """
    if isinstance(exc, RetryAfter):
        return Verdict("rate_limited", retry_after_seconds(exc))
    if isinstance(exc, PERMANENT_ERRORS):
        return Verdict("permanent")
    if isinstance(exc, TelegramError):
        return Verdict("transient")
    return Verdict("bug")


def _cannot_parse(error: BaseException) -> bool:
    return isinstance(error, BadRequest) and "can't parse entities" in error.message.lower()


def is_harmless(error: BaseException | None) -> bool:
    """Editing a message to the text it already has changes nothing the user sees."""
    return isinstance(error, BadRequest) and "message is not modified" in error.message.lower()


def error_code(error: BaseException | None) -> int:
    """The Bot API error code a refusal stands for, for the owning service."""
    if isinstance(error, BadRequest):
        return 400
    name = type(error).__name__
    return {"Forbidden": 403, "ChatMigrated": 400, "InvalidToken": 401}.get(name, 400)


def split_text(text: str, limit: int = MAX_MESSAGE_TEXT) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` characters.

    Cuts at the last line break in reach, else the last space, else hard (a
    boundary that would leave a part under half the limit does not count).
    """
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        # A boundary in the first half would leave a stub of a message: cut hard instead.
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = max(window.rfind(" "), window.rfind("\t"))
        if cut < limit // 2:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    if rest.strip() or not parts:
        parts.append(rest)
    return [p for p in parts if p] or [text[:limit]]


def foreign_buttons(action: SendAction) -> list[str]:
    """The callback data of ``action``'s buttons that do not name its own service.

    A press is routed by the prefix of its callback data (``games:...`` goes
    to games), so a button under another service's prefix would let its
    sender act as that service: such an action is refused.
    """
    keyboard = getattr(action, "keyboard", None)
    if not isinstance(keyboard, InlineKeyboard):
        return []
    own = f"{action.service}:"
    return [
        b.callback_data
        for row in keyboard.rows
        for b in row
        if b.callback_data is not None and not b.callback_data.startswith(own)
    ]


def _markup(keyboard: InlineKeyboard | None) -> InlineKeyboardMarkup | None:
    if keyboard is None:
        return None
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(b.text, callback_data=b.callback_data, url=b.url) for b in row]
            for row in keyboard.rows
        ]
    )


def _with_plain_fallback(
    formatted: Callable[[str | None], Awaitable[object]], mode: str | None
) -> Send:
    """Send with ``mode``; if Telegram cannot parse the entities, send it plain."""
    if mode is None:
        return lambda: formatted(None)

    async def send() -> object:
        try:
            return await formatted(mode)
        except BadRequest as exc:
            if not _cannot_parse(exc):
                raise
        return await formatted(None)

    return send


def telegram_calls(bot: Bot, action: SendAction) -> list[TelegramCall]:
    """The Bot API calls that carry out ``action``, in the order they must be made."""
    if isinstance(action, SendText):
        return _text_calls(bot, action)
    if isinstance(action, EditText):
        a = action

        def edit(mode: str | None) -> Awaitable[object]:
            return bot.edit_message_text(
                a.text,
                chat_id=a.chat_id,
                message_id=a.message_id,
                parse_mode=mode,
                reply_markup=_markup(a.keyboard),
            )

        return [TelegramCall(_with_plain_fallback(edit, a.parse_mode))]
    if isinstance(action, AnswerCallback):
        b = action
        return [
            TelegramCall(
                lambda: bot.answer_callback_query(
                    b.callback_query_id, text=b.text, show_alert=b.show_alert
                ),
                unlimited=True,
            )
        ]
    if isinstance(action, SendPhoto):
        p = action

        def photo(mode: str | None) -> Awaitable[object]:
            return bot.send_photo(
                p.chat_id,
                InputFile(p.photo, filename=p.filename),
                caption=p.caption,
                parse_mode=mode,
                message_thread_id=p.message_thread_id,
            )

        return [TelegramCall(_with_plain_fallback(photo, p.parse_mode))]
    if isinstance(action, SendChatAction):
        c = action
        return [
            TelegramCall(
                lambda: bot.send_chat_action(
                    c.chat_id, c.action, message_thread_id=c.message_thread_id
                ),
                unlimited=True,
            )
        ]
    d = action
    return [TelegramCall(lambda: bot.delete_message(d.chat_id, d.message_id))]


def _text_calls(bot: Bot, action: SendText) -> list[TelegramCall]:
    parts = split_text(action.text)
    preview = _NO_PREVIEW if action.disable_link_preview else None
    calls: list[TelegramCall] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        markup = _markup(action.keyboard) if last else None
        reply_to = (
            ReplyParameters(action.reply_to_message_id, allow_sending_without_reply=True)
            if index == 0 and action.reply_to_message_id is not None
            else None
        )

        def message(
            mode: str | None,
            part: str = part,
            markup: InlineKeyboardMarkup | None = markup,
            reply_to: ReplyParameters | None = reply_to,
        ) -> Awaitable[object]:
            return bot.send_message(
                action.chat_id,
                part,
                parse_mode=mode,
                reply_markup=markup,
                link_preview_options=preview,
                reply_parameters=reply_to,
                message_thread_id=action.message_thread_id,
            )

        calls.append(TelegramCall(_with_plain_fallback(message, action.parse_mode)))
    return calls
