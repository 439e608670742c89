"""The seam between the outbound relay and Telegram: ``submit(job) -> Future[Outcome]``.

The relay never calls Telegram itself; it hands each call to a *sender* as an
:class:`OutboundJob` and awaits the :class:`Outcome`. The gateway's sender is
the outbound scheduler (:class:`~botbus.gateway.scheduler.OutboundScheduler`),
which owns Telegram's budgets; the relay depends only on this protocol.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

# One definition of the job and its outcome, shared with the scheduler.
from botbus.gateway.scheduler import OutboundJob, Outcome

__all__ = ["OutboundJob", "Outcome", "Sender"]


class Sender(Protocol):
    """Anything that runs outbound jobs (the scheduler)."""

    def submit(self, job: OutboundJob) -> asyncio.Future[Outcome]:
        """Queue ``job``; the future resolves with its outcome (never raises).

        The sender owns each chat's order: jobs to one chat go in ascending
        ``job.seq`` (equal ones in submission order), a job whose ``after``
        was not sent is skipped.
        """
        ...
