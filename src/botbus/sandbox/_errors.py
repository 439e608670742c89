"""Errors of the sandbox: Telegram's refusals (bot side) and user-side refusals.

SandboxError
├── ApiError        a Bot API call refused with Telegram's envelope and text
├── UserApiError    a user-side request refused (unknown bot, bad body, ...)
└── SandboxBusy     another sandbox already runs on the same state directory
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botbus.errors import BotbusError

CHAT_NOT_FOUND = "Bad Request: chat not found"
BLOCKED = "Forbidden: bot was blocked by the user"
TEXT_EMPTY = "Bad Request: message text is empty"
TEXT_TOO_LONG = "Bad Request: message is too long"
CAPTION_TOO_LONG = "Bad Request: message caption is too long"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
BUTTON_DATA_INVALID = "Bad Request: BUTTON_DATA_INVALID"
POLL_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
MESSAGE_TO_EDIT_NOT_FOUND = "Bad Request: message to edit not found"
MESSAGE_TO_DELETE_NOT_FOUND = "Bad Request: message to delete not found"
MESSAGE_CANT_BE_EDITED = "Bad Request: message can't be edited"
REPLY_NOT_FOUND = "Bad Request: message to be replied not found"
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
UNAUTHORIZED = "Unauthorized"
NOT_FOUND = "Not Found"

# Descriptions used by fault injection when the test does not give one.
DEFAULT_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request: injected failure",
    401: UNAUTHORIZED,
    403: BLOCKED,
    404: NOT_FOUND,
    409: POLL_CONFLICT,
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class SandboxError(BotbusError):
    """Root of the sandbox's own errors."""


class ApiError(SandboxError):
    """A Bot API refusal: becomes ``{"ok": false, "error_code", "description"}``."""

    def __init__(
        self,
        error_code: int,
        description: str,
        *,
        retry_after: int | None = None,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def envelope(self) -> dict[str, Any]:
        """The JSON body Telegram answers with for this refusal."""
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        parameters: dict[str, int] = {}
        if self.retry_after is not None:
            parameters["retry_after"] = self.retry_after
        if self.migrate_to_chat_id is not None:
            parameters["migrate_to_chat_id"] = self.migrate_to_chat_id
        if parameters:
            body["parameters"] = parameters
        return body


def bad_request(text: str) -> ApiError:
    """A 400 with ``text`` after Telegram's "Bad Request: " prefix."""
    return ApiError(400, f"Bad Request: {text}")


def too_many_requests(retry_after: int) -> ApiError:
    """A 429 carrying ``parameters.retry_after`` (whole seconds, at least 1)."""
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


class UserApiError(SandboxError):
    """A user-side request the sandbox refuses; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SandboxBusy(SandboxError):
    """Another sandbox holds this state directory; ``base_url`` is where it listens."""

    def __init__(self, directory: Path, base_url: str | None) -> None:
        self.directory = directory
        self.base_url = base_url
        where = f" at {base_url}" if base_url else ""
        super().__init__(f"another sandbox is already running{where} with its state in {directory}")
