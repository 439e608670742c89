"""Read a service's stored outbound actions from BOTBUS_OUT, as the gateway would."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from botbus import subjects
from botbus.models import Action, decode_action


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
