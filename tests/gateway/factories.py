"""Small factories for bus payloads the tests publish."""

from __future__ import annotations

import itertools

from nats.aio.client import Client

from botbus import subjects
from botbus.models import SendText, encode

_keys = itertools.count(1)


async def publish_reply(nc: Client, chat_id: int, text: str, **fields: object) -> SendText:
    """Publish a SendText from the "echo" service, as a service would."""
    action = SendText.model_validate(
        {
            "service": "echo",
            "chat_id": chat_id,
            "idempotency_key": f"test-{next(_keys)}",
            "text": text,
            **fields,
        }
    )
    await nc.jetstream().publish(
        subjects.outbound("echo", action.priority),
        encode(action),
        headers={"Nats-Msg-Id": action.idempotency_key},
    )
    return action


def message_texts(events: list[dict[str, object]]) -> list[str]:
    """The texts of the "message" events the sandbox recorded."""
    out: list[str] = []
    for event in events:
        message = event.get("message")
        if event["kind"] == "message" and isinstance(message, dict):
            out.append(str(message.get("text")))
    return out
