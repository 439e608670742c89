"""Waiting for something that happens asynchronously, with a timeout (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

POLL_INTERVAL = 0.02  # seconds between two looks at the condition


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    what: str = "the condition",
    *,
    interval: float = POLL_INTERVAL,
) -> None:
    """Wait until ``check()`` (a plain or an async function) is true; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
