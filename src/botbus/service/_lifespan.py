"""Per-instance state with a lifespan: ``@service.lifespan``.

A lifespan is an async generator function taking the running
:class:`~botbus.service.App` and yielding once, as with Starlette's
``lifespan`` or aiohttp's ``cleanup_ctx``: what comes before the ``yield``
opens the instance's resources, what comes after (or a ``finally``) closes
them. A service may declare several; they are entered in declaration order
at start-up and exited in reverse at stop, and when one fails to start,
those entered before it are exited, in reverse, before the error is
raised. What a lifespan yields (if not ``None``) becomes ``app.state`` and
``ctx.state``; a later lifespan reads the earlier state from ``app.state``
and may yield a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from botbus.service._host import App

LifespanFunction = Callable[[App], AsyncIterator[Any]]
"""An async generator function: open, ``yield state``, close."""


class Lifespans:
    """The lifespans of one running instance, entered and exited as one."""

    def __init__(self, functions: list[LifespanFunction]) -> None:
        self._managers = [contextlib.asynccontextmanager(f) for f in functions]
        self._names = [getattr(f, "__name__", repr(f)) for f in functions]
        self._stack = contextlib.AsyncExitStack()

    async def enter(self, app: App, on_state: Callable[[Any], None]) -> None:
        """Enter every lifespan in order, passing each yielded state to ``on_state``.

        If one raises, those already entered are exited in reverse and the
        error propagates (``LifespanFailed`` names the lifespan).
        """
        try:
            for manager, name in zip(self._managers, self._names, strict=True):
                try:
                    state = await self._stack.enter_async_context(manager(app))
                except Exception as exc:
                    raise LifespanFailed(name, exc) from exc
                if state is not None:
                    on_state(state)
        except BaseException:
            await self._stack.aclose()
            raise

    async def exit(self) -> None:
        """Exit every entered lifespan, in reverse order."""
        await self._stack.aclose()


class LifespanFailed(Exception):
    """A lifespan raised while starting; ``name`` says which, ``__cause__`` why."""

    def __init__(self, name: str, cause: Exception) -> None:
        super().__init__(f"lifespan {name} failed: {type(cause).__name__}: {cause}")
        self.name = name
        self.cause = cause
