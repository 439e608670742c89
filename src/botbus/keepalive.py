"""Keep held JetStream messages from being redelivered, with one loop.

A process that holds messages for a while (the SDK's prefetched and running
messages, the gateway's outbound actions waiting for Telegram's budget)
must tell JetStream it is still working on them before ``ack_wait`` runs
out. A task and a timer per message cost a lot at thousands of messages a
second; :class:`KeepAlive` keeps one registry and one loop: a message held
for ``every`` seconds gets an in-progress ack, and another every ``every``
seconds after that, until it is released.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)

STOP_WAIT = 2.0  # seconds stop() waits for the loop to end


class KeepAlive:
    """Held messages, and the loop that keeps them alive."""

    def __init__(self, every: float, *, tick: float) -> None:
        if every <= 0 or tick <= 0:
            raise ValueError(f"every and tick must be > 0, got {every!r}, {tick!r}")
        self.every = every
        self.tick = tick
        # id(message) -> (message, when the server last heard it is being worked on);
        # Msg is not hashable.
        self._held: dict[int, tuple[Msg, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, msg: Msg) -> None:
        """Keep ``msg`` alive from now until :meth:`release`."""
        self._held[id(msg)] = (msg, time.monotonic())

    def release(self, msg: Msg) -> None:
        """``msg`` is settled (or handed back): stop keeping it alive."""
        self._held.pop(id(msg), None)

    def start(self) -> None:
        """Start the loop (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="keep-alive")

    async def stop(self) -> None:
        """End the loop, waiting a bounded time.

        Bounded: a cancel lost inside nats-py must not hang a stop, and
        asyncio.wait never swallows a cancel aimed at the caller.
        """
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            due = time.monotonic() - self.every
            for key, (msg, since) in list(self._held.items()):
                if since > due or key not in self._held:
                    continue
                self._held[key] = (msg, time.monotonic())
                try:
                    await msg.in_progress()
                except (NatsError, OSError) as exc:
                    log.debug("in-progress ack failed: %s", exc)
