"""Inbound payloads as the gateway publishes them; tests never hand-write their JSON."""

from __future__ import annotations

import itertools
from typing import Any

from botbus.models import InboundCallback, InboundCommand, InboundMessage

_update_ids = itertools.count(1000)


def _base(chat_id: int, language: str, update_id: int | None, chat_type: str) -> dict[str, Any]:
    uid = update_id if update_id is not None else next(_update_ids)
    return {
        "correlation_id": f"1:{uid}",
        "bot_id": 1,
        "update_id": uid,
        "chat": {"id": chat_id, "type": chat_type},
        "user": {"id": chat_id, "first_name": "Ana", "language_code": language},
        "language": language,
    }


def make_command(
    args: str = "hello",
    *,
    command: str = "echo",
    service: str = "echo",
    language: str = "en",
    chat_id: int = 42,
    update_id: int | None = None,
    chat_type: str = "private",
    **overrides: Any,
) -> InboundCommand:
    """An inbound ``/command args`` for ``service``."""
    base = _base(chat_id, language, update_id, chat_type)
    fields = {**base, "message_id": base["update_id"], "service": service, "command": command}
    return InboundCommand.model_validate({**fields, "args": args, **overrides})


def make_message(
    text: str = "hi",
    *,
    chat_id: int = 42,
    language: str = "en",
    chat_type: str = "private",
    **overrides: Any,
) -> InboundMessage:
    """A plain inbound message (fanned out to every listening service)."""
    base = _base(chat_id, language, None, chat_type)
    return InboundMessage.model_validate(
        {**base, "message_id": base["update_id"], "text": text, **overrides}
    )


def make_callback(
    data: str,
    *,
    service: str = "echo",
    chat_id: int = 42,
    language: str = "en",
    message_id: int | None = 7,
    **overrides: Any,
) -> InboundCallback:
    """A press of one of ``service``'s inline buttons carrying ``data``."""
    base = _base(chat_id, language, None, "private")
    fields = {
        **base,
        "callback_query_id": f"q{base['update_id']}",
        "message_id": message_id,
        "service": service,
        "data": data,
    }
    return InboundCallback.model_validate({**fields, **overrides})
