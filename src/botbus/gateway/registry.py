"""Which service owns which command, learnt live from NATS micro discovery.

Every ``DEFAULT_POLL_INTERVAL`` the gateway asks ``$SRV.INFO`` and gathers
every reply that arrives within a short window. A service's entry (version,
commands, whether it listens to plain messages) is persisted in the
gateway's KV bucket, so after a restart — or while every instance of a
service is down — its commands are still routed and wait in JetStream.

A service is declared *down* (users told it is unavailable, its commands
left out of the menu) only once it has been absent for a grace period
during which the bus itself was reachable. A round that fails, or during
which the gateway's connection dropped, proves nothing about the services;
after the bus comes back they get the whole grace to reconnect before
their absence counts. A broker restart therefore never makes live services
look down.

A claim is bound to the identity that makes it: any client may answer the
broadcast ``$SRV.INFO``, but only a client holding service ``NAME``'s
identity may subscribe to ``$SRV.INFO.NAME.<id>`` (its credentials allow
``$SRV.*.NAME.*`` and nothing else, see :mod:`botbus.auth`). Each round the
gateway asks every instance it heard of on that subject and believes only
what comes back there; an answer under a name the client does not hold is
logged and shown in ``botbus status`` as an unverified claim. A round
believes only replies published to its own inbox (not a JetStream push
consumer's deliveries into it), at most MAX_REPLIES_PER_ROUND new claims, and
shows at most MAX_UNVERIFIED unverified ones: a flood of forged answers costs
bounded work and keeps the ``_conflicts`` record small.

A command keeps its owner: a later claim by another service never takes it
(the conflict is logged and recorded under the key ``_conflicts`` of the
bucket for ``botbus status``), whether the owner is live or down — a crash
or a redeploy of a service must not hand its commands to whoever else claims
them, and while it is down its requests wait for it in the stream. A command
moves only when its owner is removed: ``botbus registry rm NAME`` deletes a
service gone for good; the gateway forgets it on its next round and the
oldest remaining claimant gets the command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from botbus import subjects

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 1.5  # seconds between discovery rounds
DEFAULT_GATHER_WINDOW = 0.25  # seconds to collect $SRV.INFO replies
LIVE_ROUNDS = 2  # rounds an instance counts as present after it last answered
# A service is down once absent this many rounds' worth of time with the bus reachable
# (about 5 s with the default interval): long enough for every service to reconnect
# after a broker restart or a cluster node's death.
ABSENT_ROUNDS = 3
# ...but never less than this many seconds, whatever the polling interval: a fast
# discovery loop (tests poll every 0.2-0.3 s) must not turn a service whose event loop
# is busy for a second (a broadcast, a chart, a loaded machine) into "unavailable".
MIN_ABSENT_GRACE = 5.0  # seconds

# What one round believes at most. A client may answer the broadcast many times
# (a push consumer of its own stream can deliver thousands of stored replies to
# the round's inbox): past this, replies are dropped, so a flood costs a bounded
# number of verifications and never grows the registry's memory or records.
MAX_REPLIES_PER_ROUND = 256
# Unverified claims shown in ``botbus status``: the latest this many, each until it
# has not been repeated for UNVERIFIED_TTL seconds. The ``_conflicts`` record stays
# a few kilobytes, far below the broker's max payload, whatever is claimed.
MAX_UNVERIFIED = 100
UNVERIFIED_TTL = 600.0  # seconds
# A micro instance id (a NUID): it goes into the subject the gateway asks on.
_INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Commands one service may claim: the menu holds 100 in all, and a service must not
# crowd out the others (the excess is refused and shown in ``botbus status``).
MAX_COMMANDS_PER_SERVICE = 30

META_COMMANDS = "botbus.commands"
META_LISTENS = "botbus.listens"
META_INSTANCE = "botbus.instance"


class CommandSpec(BaseModel):
    """One command a service owns, as it advertises it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    command: str
    description: dict[str, str] = Field(default_factory=dict)
    admin_only: bool = False

    def describe(self, language: str) -> str:
        """The description in ``language``, else English, else the name."""
        return self.description.get(language) or self.description.get("en") or self.command


class ServiceEntry(BaseModel):
    """What the gateway remembers about a service (persisted in KV)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: str = ""
    commands: tuple[CommandSpec, ...] = ()
    listens: bool = False
    since: float = 0.0  # wall-clock time first registered: the older claim wins a tie
    refused: tuple[str, ...] = ()  # commands claimed past MAX_COMMANDS_PER_SERVICE


class Conflicts(BaseModel):
    """What ``botbus status`` shows: claims the gateway did not accept."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # command -> services that claim it but do not own it
    commands: dict[str, list[str]] = Field(default_factory=dict)
    # service name -> why its claim was not believed
    unverified: dict[str, str] = Field(default_factory=dict)
    # service name -> the commands it claimed past MAX_COMMANDS_PER_SERVICE (not routed)
    excess: dict[str, list[str]] = Field(default_factory=dict)


class ServiceInfo(BaseModel):
    """The parts of a micro ``$SRV.INFO`` reply the gateway reads."""

    model_config = ConfigDict(extra="ignore")

    name: str
    id: str
    version: str = ""
    metadata: dict[str, str] | None = None


def entry_from_info(info: ServiceInfo) -> ServiceEntry:
    """Turn an INFO reply into a registry entry; bad command lists are dropped."""
    meta = info.metadata or {}
    commands: list[CommandSpec] = []
    try:
        raw: Any = json.loads(meta.get(META_COMMANDS, "[]"))
        for item in raw if isinstance(raw, list) else []:
            spec = CommandSpec.model_validate(item)
            if subjects.is_valid_name(spec.command):
                commands.append(spec)
            else:
                log.warning("service %s advertises invalid command %r", info.name, spec.command)
    except (ValueError, ValidationError) as exc:
        log.warning("service %s advertises unreadable commands: %s", info.name, exc)
    kept, refused = commands[:MAX_COMMANDS_PER_SERVICE], commands[MAX_COMMANDS_PER_SERVICE:]
    if refused:
        log.warning(
            "service %s claims %d commands, more than %d: %d refused",
            info.name,
            len(commands),
            MAX_COMMANDS_PER_SERVICE,
            len(refused),
        )
    return ServiceEntry(
        name=info.name,
        version=info.version,
        commands=tuple(kept),
        listens=meta.get(META_LISTENS, "false") == "true",
        refused=tuple(spec.command for spec in refused),
    )


class Registry:
    """Live map of services and their commands."""

    def __init__(
        self,
        nc: Client,
        kv: KeyValue,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        gather_window: float = DEFAULT_GATHER_WINDOW,
        absent_grace: float | None = None,
    ) -> None:
        self._nc = nc
        self._kv = kv
        self.poll_interval = poll_interval
        self.gather_window = gather_window
        self._absent_grace = absent_grace
        # Since when (monotonic) every discovery round has seen the bus reachable;
        # None while it is not (or before the first good round).
        self._bus_since: float | None = None
        self._entries: dict[str, ServiceEntry] = {}
        self._instances: dict[str, dict[str, float]] = {}  # service -> instance -> last seen
        self._owners: dict[str, tuple[str, CommandSpec]] = {}
        self.conflicts = Conflicts()
        self._recorded_conflicts: Conflicts | None = None
        # service name -> (why its claim was not believed, when last made), oldest first
        self._unverified: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._verified: dict[tuple[str, str], ServiceInfo] = {}  # (name, id) -> its own answer
        self._live_signature: tuple[object, ...] = ()
        self._round = asyncio.Event()

    # -- queries -------------------------------------------------------------

    def owner(self, command: str) -> tuple[str, CommandSpec] | None:
        """(service, spec) owning ``command``, live or not; None if unknown."""
        return self._owners.get(command)

    def knows(self, service: str) -> bool:
        """True if ``service`` was ever seen (its requests can wait for it)."""
        return service in self._entries

    @property
    def absent_grace(self) -> float:
        """Seconds a service may be missing, with the bus reachable, before it is down."""
        if self._absent_grace is not None:
            return self._absent_grace
        return max(MIN_ABSENT_GRACE, ABSENT_ROUNDS * (self.poll_interval + self.gather_window))

    @property
    def bus_reachable(self) -> bool:
        """True when the last discovery round ran on a connection that stayed up."""
        return self._bus_since is not None and self._nc.is_connected

    def is_live(self, service: str) -> bool:
        """False only once ``service`` has been absent for the grace with the bus up.

        While the bus is unreachable nothing is declared down: absence then
        says nothing about the service (and nothing could be published anyway).
        A service never seen at all is not live.
        """
        if service not in self._entries:
            return False
        if not self.bus_reachable:
            return True
        assert self._bus_since is not None
        last_seen = max(self._instances.get(service, {}).values(), default=self._bus_since)
        absent_for = time.monotonic() - max(last_seen, self._bus_since)
        return absent_for <= self.absent_grace

    def live_services(self) -> list[ServiceEntry]:
        """Entries of the live services, by name."""
        return [e for name, e in sorted(self._entries.items()) if self.is_live(name)]

    def instances(self, service: str) -> int:
        """How many instances of ``service`` are live."""
        horizon = time.monotonic() - LIVE_ROUNDS * (self.poll_interval + self.gather_window)
        return sum(1 for seen in self._instances.get(service, {}).values() if seen >= horizon)

    def live_commands(self) -> list[tuple[str, CommandSpec]]:
        """(service, spec) of every command of a live service, by command name."""
        return sorted(
            ((s, spec) for s, spec in self._owners.values() if self.is_live(s)),
            key=lambda item: item[1].command,
        )

    # -- updates -------------------------------------------------------------

    async def load(self) -> None:
        """Read the persisted entries so routing works before the first round."""
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            keys = []
        for key in keys:
            if not subjects.is_valid_name(key):
                continue  # the conflicts record, not a service
            try:
                stored = await self._kv.get(key)
            except KeyNotFoundError:
                continue
            try:
                self._entries[key] = ServiceEntry.model_validate_json(stored.value or b"")
            except ValidationError as exc:
                log.warning("ignoring unreadable registry entry %r: %s", key, exc)
        self._rebuild_owners()
        log.info("registry loaded %d known service(s) from KV", len(self._entries))

    async def discover(self) -> list[ServiceInfo]:
        """One round: who answers ``$SRV.INFO``, then what each says on its own subject.

        An answer identical to one already verified for that instance is
        believed without asking again (a replay of it claims nothing new), so
        a steady bus costs one broadcast per round.
        """
        claims = await self._gather(subjects.SRV_INFO)
        checked = await asyncio.gather(
            *(
                self._verify(info)
                for key, info in claims.items()
                if subjects.is_valid_name(info.name)
                and _INSTANCE_ID_RE.fullmatch(info.id)
                and self._verified.get(key) != info
            )
        )
        self._verified = {
            key: info for key, info in self._verified.items() if claims.get(key) == info
        }
        self._verified.update(((i.name, i.id), i) for i in checked if i is not None)
        return list(self._verified.values())

    async def _gather(self, subject: str) -> dict[tuple[str, str], ServiceInfo]:
        """The replies to ``subject`` within the window, by (name, instance id).

        Only a reply published to the inbox itself counts: a JetStream push
        consumer whose deliver subject is the inbox delivers messages under
        their stream's subject, and those are nobody's answer. At most
        MAX_REPLIES_PER_ROUND claims not verified already are kept; a
        verified instance's unchanged answer is always kept (it costs
        nothing), so a flood cannot make a live service look absent.
        """
        inbox = self._nc.new_inbox()
        replies: dict[tuple[str, str], ServiceInfo] = {}
        new = dropped = 0
        malformed = ""
        sub = await self._nc.subscribe(inbox)
        try:
            await self._nc.publish(subject, b"", reply=inbox)
            deadline = time.monotonic() + self.gather_window
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except TimeoutError:
                    break
                if msg.subject != inbox:
                    dropped += 1
                    continue
                if not msg.data:
                    continue  # "no responders" status: no service is running
                try:
                    info = ServiceInfo.model_validate_json(msg.data)
                except ValidationError as exc:
                    malformed, dropped = str(exc)[:200], dropped + 1
                    continue
                key = (info.name, info.id)
                if key in replies or self._verified.get(key) == info:
                    replies[key] = info
                elif new < MAX_REPLIES_PER_ROUND:
                    new += 1
                    replies[key] = info
                else:
                    dropped += 1
        finally:
            await sub.unsubscribe()
        if dropped:
            log.warning(
                "ignored %d $SRV.INFO replies: malformed (last: %s), not published to the "
                "round's inbox, or past %d new claims in one round",
                dropped,
                malformed or "none",
                MAX_REPLIES_PER_ROUND,
            )
        return replies

    async def _verify(self, claim: ServiceInfo) -> ServiceInfo | None:
        """``claim`` as told on ``$SRV.INFO.<name>.<id>``, which only ``name``'s identity hears."""
        subject = f"{subjects.SRV_INFO}.{claim.name}.{claim.id}"
        try:
            msg = await self._nc.request(subject, b"", timeout=self.gather_window)
            info = ServiceInfo.model_validate_json(msg.data)
        except (NatsError, TimeoutError, ValidationError):
            info = None
        if info is None or info.name != claim.name or info.id != claim.id:
            reason = (
                f"instance {claim.id} answered $SRV.INFO as {claim.name!r} but not on "
                f"{subject}: it does not hold {claim.name!r}'s identity"
            )
            known = self._unverified.pop(claim.name, None)
            if known is None or known[0] != reason:
                log.warning("ignoring an unverified claim: %s", reason)
            self._unverified[claim.name] = (reason, time.monotonic())  # the newest last
            while len(self._unverified) > MAX_UNVERIFIED:
                self._unverified.popitem(last=False)
            return None
        self._unverified.pop(claim.name, None)
        return info

    async def refresh(self) -> bool:
        """Run one discovery round; True if the live command set changed."""
        now = time.monotonic()
        reconnects = self._nc.stats["reconnects"]
        connected = self._nc.is_connected
        try:
            infos = await self.discover()
        except BaseException:
            self._bus_since = None
            raise
        if not connected or not self._nc.is_connected or self._nc.stats["reconnects"] != reconnects:
            # Replies may have been lost with the connection: this round proves nothing.
            self._bus_since = None
            self._finish_round()
            return False
        if self._bus_since is None:
            self._bus_since = now
            log.info(
                "discovery: the bus is reachable; a service still missing in %.1fs is down",
                self.absent_grace,
            )
        for info in infos:
            instance = (info.metadata or {}).get(META_INSTANCE) or info.id
            self._instances.setdefault(info.name, {})[instance] = now
            known = self._entries.get(info.name)
            entry = entry_from_info(info).model_copy(
                update={"since": known.since if known else time.time()}
            )
            if known != entry:
                self._entries[info.name] = entry
                await self._kv.put(info.name, entry.model_dump_json().encode())
                log.info(
                    "service %s %s registered: %s",
                    entry.name,
                    entry.version,
                    ", ".join(f"/{c.command}" for c in entry.commands) or "no commands",
                )
        self._forget_stale_instances(now)
        await self._forget_removed()
        self._rebuild_owners()
        await self._record_conflicts()
        signature: tuple[object, ...] = tuple(self.live_commands())
        signature += tuple(e.name for e in self.live_services())
        changed = signature != self._live_signature
        self._live_signature = signature
        self._finish_round()
        return changed

    def _finish_round(self) -> None:
        finished, self._round = self._round, asyncio.Event()
        finished.set()

    def _forget_stale_instances(self, now: float) -> None:
        horizon = now - 10 * LIVE_ROUNDS * (self.poll_interval + self.gather_window)
        for seen in self._instances.values():
            for instance in [i for i, t in seen.items() if t < horizon]:
                del seen[instance]

    async def _forget_removed(self) -> None:
        """Drop services deleted from the bucket (``botbus registry rm``) that are not live."""
        for name in [n for n in self._entries if not self.instances(n)]:
            try:
                await self._kv.get(name)
            except KeyNotFoundError:
                log.info("service %s was removed from the registry; forgetting it", name)
                del self._entries[name]
                self._instances.pop(name, None)

    def _rebuild_owners(self) -> None:
        """Who owns each command: the current owner keeps it while it is registered.

        A command changes hands only when its owner left the registry
        (``botbus registry rm``); among several claimants of a command with no
        owner, the one registered first wins (a gateway restarted with a
        persisted registry therefore picks the same owners again).
        """
        claims: dict[str, list[tuple[str, CommandSpec]]] = {}
        for name, entry in self._entries.items():
            for spec in entry.commands:
                claims.setdefault(spec.command, []).append((name, spec))
        owners: dict[str, tuple[str, CommandSpec]] = {}
        conflicts: dict[str, list[str]] = {}
        for command, claimants in claims.items():
            if command in subjects.BUILTIN_COMMANDS:  # the gateway's own: nobody's to claim
                keeper = "the gateway (built in)"
            else:
                current = self._owners.get(command)
                keep = next((c for c in claimants if current and c[0] == current[0]), None)
                if keep is None:
                    keep = min(claimants, key=lambda c: (self._entries[c[0]].since, c[0]))
                owners[command] = keep
                keeper = keep[0]
            losers = sorted(name for name, _ in claimants if name != keeper)
            if losers:
                conflicts[command] = losers
                if self.conflicts.commands.get(command) != losers:
                    log.warning(
                        "command /%s claimed by %s too; %s keeps it",
                        command,
                        ", ".join(losers),
                        keeper,
                    )
        self._owners = owners
        horizon = time.monotonic() - UNVERIFIED_TTL
        while self._unverified and next(iter(self._unverified.values()))[1] < horizon:
            self._unverified.popitem(last=False)
        unverified = {name: reason for name, (reason, _) in self._unverified.items()}
        excess = {name: list(e.refused) for name, e in self._entries.items() if e.refused}
        self.conflicts = Conflicts(commands=conflicts, unverified=unverified, excess=excess)

    async def _record_conflicts(self) -> None:
        """Keep the conflicts in the bucket, where ``botbus status`` reads them."""
        if self.conflicts != self._recorded_conflicts:
            await self._kv.put(
                subjects.KV_REGISTRY_CONFLICTS, self.conflicts.model_dump_json().encode()
            )
            self._recorded_conflicts = self.conflicts

    async def next_round(self) -> None:
        """Wait until the next discovery round has completed."""
        await self._round.wait()

    async def run(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Poll forever, calling ``on_change`` when live commands change."""
        while True:
            try:
                if await self.refresh():
                    await on_change()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Discovery must outlive a broker hiccup; the next round retries.
                log.exception("service discovery round failed; retrying")
            await asyncio.sleep(self.poll_interval)
