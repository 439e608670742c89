"""The seam between the outbound relay and Telegram: ``submit(job) -> Future[Outcome]``.

The relay never calls Telegram itself; it hands each call to a *sender* as an
:class:`OutboundJob` and awaits the :class:`Outcome`. :class:`DirectSender`
is the simple sender the gateway starts with: calls to one chat run one at a
time in submission order, a 429 pauses only that chat for ``retry_after``,
and transient network errors are retried a few times. The full scheduler
(``botbus.gateway.scheduler.OutboundScheduler``: rate budgets, priority
lanes) offers the same ``submit`` and replaces it through one constructor
argument of the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut

# One definition of the job and its outcome, shared with the scheduler.
from botbus.gateway.scheduler import OutboundJob, Outcome, retry_after_seconds

__all__ = ["DirectSender", "OutboundJob", "Outcome", "Sender", "is_transient"]

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 4  # tries of one call on transient errors
DEFAULT_BACKOFF = 0.5  # seconds before the first retry; doubles each time
DEFAULT_MAX_RETRY_AFTER = 300.0  # seconds; longer 429 pauses are capped to this
DEFAULT_CONCURRENCY = 64  # Telegram calls in flight at once, all chats


class Sender(Protocol):
    """Anything that runs outbound jobs: :class:`DirectSender` or the scheduler."""

    def submit(self, job: OutboundJob) -> asyncio.Future[Outcome]:
        """Queue ``job``; the future resolves with its outcome (never raises)."""
        ...


def is_transient(exc: TelegramError) -> bool:
    """True for errors worth retrying: timeouts and network trouble, not refusals."""
    return isinstance(exc, TimedOut) or (
        isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)
    )


@dataclass
class _Lane:
    """The queue of one chat; one worker drains it so calls keep their order."""

    jobs: deque[tuple[OutboundJob, asyncio.Future[Outcome]]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class DirectSender:
    """Sends jobs straight to Telegram, in order per chat, without rate budgets."""

    def __init__(
        self,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: dict[int, _Lane] = {}

    def submit(self, job: OutboundJob) -> asyncio.Future[Outcome]:
        """Queue ``job`` behind earlier jobs of the same chat."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        lane = self._lanes.setdefault(job.chat_id, _Lane())
        lane.jobs.append((job, future))
        if lane.worker is None:
            lane.worker = asyncio.create_task(self._drain(job.chat_id, lane))
        return future

    async def aclose(self) -> None:
        """Cancel queued work; pending futures resolve as ``gave_up``."""
        for lane in list(self._lanes.values()):
            if lane.worker is not None:
                lane.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.worker
            for _, future in lane.jobs:
                if not future.done():
                    future.set_result(Outcome("gave_up", error=RuntimeError("sender closed")))
        self._lanes.clear()

    async def _drain(self, chat_id: int, lane: _Lane) -> None:
        try:
            while lane.jobs:
                job, future = lane.jobs[0]
                outcome = await self._run(job)
                lane.jobs.popleft()
                if not future.done():
                    future.set_result(outcome)
        finally:
            lane.worker = None
            if not lane.jobs and self._lanes.get(chat_id) is lane:
                del self._lanes[chat_id]

    async def _run(self, job: OutboundJob) -> Outcome:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._slots:
                    result = await job.send()
            except RetryAfter as exc:
                # A 429 concerns this chat only: the lane waits, other chats go on.
                pause = min(retry_after_seconds(exc), DEFAULT_MAX_RETRY_AFTER)
                log.info(
                    "telegram asked to wait %.1fs for chat %s (%s)", pause, job.chat_id, job.key
                )
                await asyncio.sleep(pause)
                attempt -= 1  # a flood pause is not a failed attempt
            except TelegramError as exc:
                if not is_transient(exc):
                    return Outcome("refused", error=exc)
                if attempt >= self._max_attempts:
                    log.warning("giving up on %s after %d attempts: %s", job.key, attempt, exc)
                    return Outcome("gave_up", error=exc)
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            except Exception as exc:
                # A bug in building the call, not a Telegram answer: retrying cannot help.
                log.exception("outbound call %s failed unexpectedly", job.key)
                return Outcome("refused", error=exc)
            else:
                return Outcome("sent", result=result)
