"""Which gateway of a bot is the active one: a lease in a KV bucket.

Several gateways may run for one token (an active one and standbys). Only
the holder of the lease polls Telegram, serves the webhook, relays outbound
actions and syncs the menu; the others wait. The lease is the key
``gateway.<bot_id>`` in the bucket ``botbus_lease``, whose entries expire
``ttl`` seconds after their last write (the bucket's max age, counted by
the server):

- a standby tries ``create`` every ``standby_poll`` seconds, which succeeds
  only when the key is absent: the holder let it go, or died and its last
  write expired;
- a gateway restarted in place (same host and data directory, hence the
  same holder name) takes its own lease back at once instead of waiting
  for it to expire: the process that held it is gone, since two gateways
  never share a data directory;
- the holder renews with ``update`` on the revision it last wrote
  (compare-and-set); a wrong revision means another gateway took the lease,
  and the holder raises :class:`LeaseLost` (the gateway then stops);
- the holder counts the lease as *valid* only until ``ttl - margin``
  seconds after it sent its last successful renewal. The server's expiry
  starts no earlier than that send, so the holder always stops working
  (:meth:`Lease.guard` cancels its long poll) before a standby can take
  over: two gateways never poll at once.

Time is injected (``clock`` and ``sleep``), so the rules can be tested on
virtual time too.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TypeVar

from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from botbus.errors import SteppedDown

log = logging.getLogger(__name__)

DEFAULT_TTL = 5.0  # seconds a lease outlives its holder's last renewal
DEFAULT_RENEW_EVERY = 1.0  # seconds between two renewals
DEFAULT_MARGIN = 1.5  # seconds the holder stops before its lease could expire
DEFAULT_STANDBY_POLL = 0.5  # seconds between a standby's attempts to take the lease
WARN_EVERY = 10.0  # seconds between two "cannot renew" / "standby" log lines

T = TypeVar("T")


class LeaseLost(SteppedDown):
    """Another gateway holds the lease now: this one must stop being active."""


class LeaseInvalid(Exception):
    """The lease could not be renewed in time; the guarded work was cancelled."""


def lease_key(bot_id: int) -> str:
    """The KV key of the lease of bot ``bot_id``."""
    return f"gateway.{bot_id}"


def holder_id(data_dir: Path) -> str:
    """This gateway's name: its host and data directory, stable across restarts."""
    return f"{socket.gethostname()}:{data_dir.resolve()}"


class Lease:
    """The active-gateway lease of one bot (see the module docstring)."""

    def __init__(
        self,
        kv: KeyValue,
        key: str,
        holder: str,
        *,
        ttl: float = DEFAULT_TTL,
        renew_every: float = DEFAULT_RENEW_EVERY,
        margin: float = DEFAULT_MARGIN,
        standby_poll: float = DEFAULT_STANDBY_POLL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < renew_every < ttl - margin:
            raise ValueError("a lease must be renewed well within its ttl minus margin")
        self._kv = kv
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self.renew_every = renew_every
        self.margin = margin
        self.standby_poll = standby_poll
        self._clock = clock
        self._sleep = sleep
        self._revision: int | None = None
        self._valid_until = 0.0
        self._valid = asyncio.Event()
        self._invalid = asyncio.Event()
        self._invalid.set()
        self.acquired_at: float | None = None  # clock() when it was taken

    @property
    def held(self) -> bool:
        """True while this gateway holds a lease it may act on."""
        return self._valid.is_set()

    def _mark(self, valid: bool) -> None:
        if valid:
            self._invalid.clear()
            self._valid.set()
        else:
            self._valid.clear()
            self._invalid.set()

    async def acquire(self) -> None:
        """Wait until this gateway holds the lease (as a standby meanwhile)."""
        last_log = -WARN_EVERY
        while True:
            sent = self._clock()
            try:
                self._revision = await self._kv.create(self.key, self.holder.encode())
            except KeyWrongLastSequenceError:
                if await self._reclaim():
                    self._valid_until = sent + self.ttl - self.margin
                    self.acquired_at = self._clock()
                    self._mark(True)
                    log.info("active: this gateway (%s) took back %s", self.holder, self.key)
                    return
                if self._clock() - last_log >= WARN_EVERY:
                    log.info("standby: another gateway holds %s; waiting to take over", self.key)
                    last_log = self._clock()
            except (NatsError, TimeoutError) as exc:
                if self._clock() - last_log >= WARN_EVERY:
                    log.warning("standby: cannot reach the lease bucket (%s); retrying", exc)
                    last_log = self._clock()
            else:
                self._valid_until = sent + self.ttl - self.margin
                self.acquired_at = self._clock()
                self._mark(True)
                log.info("active: this gateway (%s) holds %s", self.holder, self.key)
                return
            await self._sleep(self.standby_poll)

    async def _retake(self) -> bool:
        """Take the lease again if nobody else holds it."""
        try:
            self._revision = await self._kv.create(self.key, self.holder.encode())
        except KeyWrongLastSequenceError:
            return await self._reclaim()
        return True

    async def _reclaim(self) -> bool:
        """Take back a lease written under our own name by our previous run."""
        try:
            entry = await self._kv.get(self.key)
        except KeyNotFoundError:
            return False  # expired in between; the next create() takes it
        if entry.value != self.holder.encode() or entry.revision is None:
            return False
        try:
            self._revision = await self._kv.update(
                self.key, self.holder.encode(), last=entry.revision
            )
        except KeyWrongLastSequenceError:
            return False
        return True

    async def keep(self) -> None:
        """Renew forever; raise :class:`LeaseLost` once another gateway has it."""
        last_warn = -WARN_EVERY
        while True:
            left = self._valid_until - self._clock()
            await self._sleep(max(0.0, min(self.renew_every, left)))
            if self.held and self._clock() >= self._valid_until:
                log.warning("lease %s not renewed in time: pausing ingest", self.key)
                self._mark(False)
            sent = self._clock()
            try:
                self._revision = await asyncio.wait_for(
                    self._kv.update(self.key, self.holder.encode(), last=self._revision),
                    timeout=self.renew_every,
                )
            except KeyWrongLastSequenceError as exc:
                # Our entry is gone: expired while the bus was unreachable (then it is
                # free, or ours again), or replaced by another gateway (then we are out).
                if not await self._retake():
                    self._mark(False)
                    raise LeaseLost(
                        f"another gateway took {self.key} while this one could not renew it"
                    ) from exc
                log.info("lease %s expired during an outage and was taken again", self.key)
            except (NatsError, TimeoutError) as exc:
                if self._clock() - last_warn >= WARN_EVERY:
                    log.warning("could not renew lease %s: %s", self.key, exc)
                    last_warn = self._clock()
                continue
            self._valid_until = sent + self.ttl - self.margin
            if not self.held:
                log.info("lease %s renewed: resuming", self.key)
            self._mark(True)

    async def guard(self, work: Coroutine[object, object, T]) -> T:
        """Run ``work`` while the lease is valid; cancel it (LeaseInvalid) when it is not.

        Waits first for a valid lease, so a paused holder resumes by itself
        once a renewal goes through.
        """
        await self._valid.wait()
        task = asyncio.ensure_future(work)
        invalid = asyncio.ensure_future(self._invalid.wait())
        try:
            # Bounded by the validity itself too, so a renewal loop that is late
            # (a stalled event loop) cannot let the work outlive the lease.
            await asyncio.wait(
                {task, invalid},
                timeout=max(0.0, self._valid_until - self._clock()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:
            task.cancel()
            raise
        finally:
            invalid.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        if self._clock() >= self._valid_until:
            self._mark(False)
        raise LeaseInvalid(f"lease {self.key} is not valid now")

    async def release(self) -> None:
        """Give the lease up at once (clean stop), so a standby need not wait for it."""
        self._mark(False)
        if self._revision is None:
            return
        try:
            await self._kv.delete(self.key, last=self._revision)
        except (NatsError, TimeoutError) as exc:
            log.info("lease %s not released (%s); it expires in %.0fs", self.key, exc, self.ttl)
        else:
            log.info("released lease %s", self.key)
        self._revision = None
