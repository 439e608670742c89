"""What services stored: their outbound actions (as the gateway reads them), dead letters."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from botbus import subjects
from botbus.models import Action, DeadLetter, SendText, decode_action, decode_as


class Outbox:
    """One service's outbound actions, read in order from the start of the stream."""

    def __init__(self, js: JetStreamContext, service: str) -> None:
        self.js = js
        self.service = service
        self._sub: JetStreamContext.PullSubscription | None = None

    async def take(self, count: int = 1, timeout: float = 10.0) -> list[Action]:
        """The next ``count`` actions (fewer if ``timeout`` runs out)."""
        if self._sub is None:
            self._sub = await self.js.pull_subscribe(
                subjects.outbound_of(self.service), stream=subjects.STREAM_OUTBOUND
            )
        got: list[Action] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count and (left := deadline - loop.time()) > 0:
            try:
                msgs = await self._sub.fetch(batch=count - len(got), timeout=left)
            except TimeoutError:
                break
            for msg in msgs:
                await msg.ack()
                got.append(decode_action(msg.data))
        return got

    async def close(self) -> None:
        """Drop the reader (a late fetch status would otherwise stall the drain)."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None


class StreamReader:
    """Reads what was STORED on a subject, from the start of its stream."""

    def __init__(self, js: JetStreamContext, stream: str, subject: str) -> None:
        self.js, self.stream, self.subject = js, stream, subject
        self._sub: JetStreamContext.PullSubscription | None = None

    async def _raw(self, count: int, timeout: float) -> list[bytes]:
        if self._sub is None:
            self._sub = await self.js.pull_subscribe(
                self.subject,
                stream=self.stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count and (left := deadline - loop.time()) > 0:
            try:
                msgs = await self._sub.fetch(batch=min(100, count - len(got)), timeout=left)
            except TimeoutError:
                break
            for msg in msgs:
                await msg.ack()
                got.append(msg.data)
        return got

    async def close(self) -> None:
        """Remove the reader's consumer subscription."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def actions(self, count: int, timeout: float = 10.0) -> list[Action]:
        """Up to ``count`` actions stored within ``timeout`` seconds."""
        return [decode_action(d) for d in await self._raw(count, timeout)]

    async def dead_letters(self, count: int, timeout: float = 10.0) -> list[DeadLetter]:
        """Up to ``count`` dead-letter records."""
        return [decode_as(DeadLetter, d) for d in await self._raw(count, timeout)]


def texts(actions: list[Action]) -> list[str]:
    """The texts of the SendText actions."""
    return [a.text for a in actions if isinstance(a, SendText)]
