"""Which service sent each message of the bot: an edit or a delete needs to be its own.

A service may edit or delete only messages it sent (a reply, a game board)
or messages no service sent (a user's, for moderation). Without this any
service could rewrite another's board or delete its replies.

Records live in the gateway's KV bucket ``botbus_owners``, one key
``<chat>.<message>.<service>`` per message the gateway sent, expiring with
the bucket's TTL. They are written and looked up as the sent keys are
(:class:`~botbus.gateway.sentkeys.SentKeys`: plain publishes, one batch
direct get per fetched batch, the service read from the key by a wildcard).
A message with no record (older than the TTL, sent before the records
existed, or a user's) may be edited or deleted by any service.
"""

from __future__ import annotations

from collections.abc import Iterable

from botbus.gateway.sentkeys import SentKeys

OWNERS_TTL = 7 * 24 * 3600.0  # seconds a message's sender is remembered


def _chat(chat_id: int) -> str:
    return str(chat_id)  # "-100123": "-" is allowed in a KV key


class MessageOwners:
    """Record and look up the service that sent each message."""

    def __init__(self, keys: SentKeys) -> None:
        self._keys = keys

    async def record(self, chat_id: int, message_id: int, service: str) -> None:
        """``service`` sent message ``message_id`` of chat ``chat_id``."""
        await self._keys.record(f"{_chat(chat_id)}.{message_id}.{service}")

    async def owners(self, messages: Iterable[tuple[int, int]]) -> dict[tuple[int, int], set[str]]:
        """For each (chat, message), the services recorded as its sender (none: unknown)."""
        wanted = list(dict.fromkeys(messages))
        found = await self._keys.find(f"{_chat(c)}.{m}.*" for c, m in wanted)
        owners: dict[tuple[int, int], set[str]] = {pair: set() for pair in wanted}
        for key in found:
            chat, message, service = key.split(".", 2)
            pair = (int(chat), int(message))
            if pair in owners:
                owners[pair].add(service)
        return owners
