"""Stopping the service's background loops (lease renewal, opt-out probe) reliably.

Cancelling such a loop is not enough to end it. nats-py waits for every reply
with ``asyncio.wait_for``, and on Python 3.11 ``wait_for`` returns the reply
instead of raising when the cancellation lands just after the reply arrived:
the loop goes on as if it had never been cancelled, and whoever awaits it (the
service's shutdown) waits forever. So every loop also checks a stop event
between two rounds, and pauses with :func:`stop_requested`, which the event
ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib


async def stop_requested(stopping: asyncio.Event, seconds: float) -> bool:
    """Pause ``seconds`` or until ``stopping`` is set; True if it is set (stop the loop)."""
    # asyncio.timeout, unlike wait_for on 3.11, never drops a cancellation of the caller.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()
    return stopping.is_set()


async def end_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended (see the module docstring).

    Waiting with :func:`asyncio.wait` rather than awaiting the task under
    ``suppress(CancelledError)`` keeps a cancellation of the caller itself
    from being taken for the task's and dropped.
    """
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.result()  # an unexpected error of the loop surfaces here, not in a log at exit
