"""Services' streams and KV buckets, made by the core on their behalf.

A service identity may not create, update or restore a stream (see
:func:`botbus.auth.service_template`): NATS cannot check the subjects inside
a ``$JS.API.STREAM.CREATE.<stream>`` request, so a service allowed to
create ``svc_<name>`` could give it ``botbus.in.>`` as subjects, or
``sources``/``mirror`` of a shared stream, or ``republish`` into someone
else's subjects, and read or forge other services' traffic.

Instead a service asks on ``botbus.ctl.provision.<name>``, a subject only
the identity ``<name>`` may publish to, and the :class:`Provisioner` (run by
every gateway instance, in one queue group) creates the stream or bucket,
or brings an existing one up to date. It takes the service's name from the
subject, never from the payload, and builds the configuration itself from
a short whitelist of options:

- a stream is named ``svc_<name>`` or ``svc_<name>_<suffix>``, and every
  subject of it lies under ``<name>.``;
- a bucket follows the same naming rule; its subjects (``$KV.<bucket>.>``)
  are the provisioner's own;
- no ``sources``, ``mirror``, ``republish``, subject transform or any field
  the request models below do not name (an unknown field is refused);
- replicas are the provisioner's choice (three on a cluster), never the
  request's.

Requests and replies are JSON of :data:`ProvisionRequest` and
:class:`ProvisionReply`. A bad request gets ``ok: false`` and an error that
says what to fix; nothing a request holds can stop the provisioner. Nor can
how many: a request with no reply subject is dropped unread, and each
service may send :data:`PROVISION_BURST` at once and :data:`PROVISION_RATE`
a second on average; beyond that it is refused at once, without a JetStream
call, with ``retry_after`` seconds (which :func:`provision` waits, then asks
again), so one service flooding it cannot delay the others' requests.

Several gateways serve in that queue group, so two requests of one service
may be handled at once by two provisioners, each checking the quota against
what the service has before the other's stream exists. A provisioner works
for a service only while it holds the service's key in the bucket
``botbus_provisioning`` (compare-and-set ``create``, renewed while its
holder works, released when done, expiring :data:`LOCK_TTL` after its last
renewal if its holder died; the release deletes only the holder's own
revision, so one that lost its lock leaves the next holder's alone); one
that cannot get it within :data:`LOCK_WAIT` answers with ``retry_after``.
The rate limit is kept there too (the key ``rate.<name>``, compare-and-set),
so N gateways do not allow a service N times the rate; each provisioner
also keeps it locally, which spares the bucket a flood's requests.

The client side (:func:`provision`, :func:`service_bucket`) is what the SDK
calls. On a broker without authentication (a bare development
``nats-server``) with no provisioner running, it creates the stream itself,
through the same code the provisioner runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from botbus import subjects, topology
from botbus.auth import check_service_name
from botbus.errors import ConfigError, ProvisionError

log = logging.getLogger(__name__)

T = TypeVar("T")

PROVISION_WAIT = 30.0  # seconds a service waits for a provisioner to answer at all
PROVISION_RETRY = 0.5  # seconds between two asks while no provisioner answers
PROVISION_LOG_EVERY = 5.0  # seconds between two "waiting for the provisioner" lines
# The provisioner's own JetStream calls may take topology.SETUP_TIMEOUT (a cluster
# waiting for its peers); the asker waits a little longer than that.
REQUEST_TIMEOUT = topology.SETUP_TIMEOUT + 5.0  # seconds
EXISTS_TIMEOUT = 2.0  # seconds to learn whether a stream exists, with no provisioner
MAX_REQUEST_BYTES = 16 * 1024
MAX_SUBJECTS = 16  # subjects per stream
MAX_DESCRIPTION = 256  # characters
PROVISION_BURST = 20  # requests one service may send at once
PROVISION_RATE = 5.0  # requests a second one service may send on average
LOCK_TTL = REQUEST_TIMEOUT  # seconds a service's lock outlives a provisioner that died with it
LOCK_WAIT = 2.0  # seconds a provisioner waits for another to finish with the same service
LOCK_POLL = 0.05  # seconds between two tries to take it
LOCK_RETRY = 0.5  # seconds the service is told to wait when it stays taken
LOCK_RENEWALS = 3  # times a held lock is renewed per LOCK_TTL, so slow work keeps it
SHARED_RATE_TRIES = 5  # compare-and-set attempts on a service's shared rate limit
MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class Quota:
    """How much of the broker's store one service may reserve through the provisioner.

    JetStream reserves a stream's ``max_bytes`` from the store all streams
    share (``max_file_store``, ``max_memory_store`` in nats.conf), so one
    service (hostile or just buggy) could otherwise leave none for the others.
    """

    max_bytes: int = 256 * MiB
    """Per stream or bucket on file; asking for more, or for no limit (-1), is refused."""
    default_bytes: int = 64 * MiB
    """What a stream on file asked for without ``max_bytes`` gets."""
    max_total: int = 1 * GiB
    """All of one service's streams and buckets on file together."""
    max_memory_bytes: int = 16 * MiB
    """Per stream or bucket in memory, and what one not saying ``max_bytes`` gets: the
    server's whole memory store is small (``max_memory_store`` 256 MB)."""
    max_memory_total: int = 32 * MiB
    """All of one service's streams and buckets in memory together."""
    max_resources: int = 16
    """Streams and buckets per service (``svc_<name>`` and its suffixes)."""
    max_consumers: int = 256
    """Consumers on each of them (the stream's ``max_consumers``): every consumer costs
    the broker memory, and a service may make any number on its own streams. A
    durable per handler and an ephemeral per KV watch and instance stay far below."""
    max_duplicate_window: float = 120.0
    """Seconds a stream remembers message ids for deduplication. The server keeps
    every id of that window in memory, whatever ``max_bytes`` evicts: unbounded,
    a service could fill the broker's memory with tiny messages."""


DEFAULT_QUOTA = Quota()

_SUFFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,31}\Z")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
# Fields the provisioner never sets: a stream carrying one was not made by it.
_UNMANAGED = ("mirror", "sources", "republish", "subject_transform")

Storage = Literal["file", "memory"]


class _Request(BaseModel):
    """What every request shares: strict types, no field the model does not name."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    """``svc_<service>`` or ``svc_<service>_<suffix>``."""
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    storage: Storage | None = None
    """On creation; default ``file``. JetStream cannot change it afterwards."""


class StreamRequest(_Request):
    """A stream of the service's own subjects; options not given are left as they are."""

    kind: Literal["stream"] = "stream"
    subjects: list[str] = Field(min_length=1, max_length=MAX_SUBJECTS)
    retention: Literal["limits", "interest", "workqueue"] | None = None
    max_age: float | None = Field(None, ge=0)  # seconds, 0 = forever
    max_msgs: int | None = Field(None, ge=-1)
    max_bytes: int | None = Field(None, ge=-1)
    max_msgs_per_subject: int | None = Field(None, ge=-1)
    max_msg_size: int | None = Field(None, ge=-1)
    discard: Literal["old", "new"] | None = None
    duplicate_window: float | None = Field(None, ge=0)  # seconds
    allow_msg_schedules: bool | None = None
    allow_msg_ttl: bool | None = None

    def options(self) -> dict[str, Any]:
        """The ``StreamConfig`` fields the request sets (name, subjects, storage aside)."""
        given = self.model_dump(exclude_none=True, exclude={"kind", "name", "subjects", "storage"})
        if "retention" in given:
            given["retention"] = RetentionPolicy(given["retention"])
        if "discard" in given:
            given["discard"] = DiscardPolicy(given["discard"])
        return given


class BucketRequest(_Request):
    """A KV bucket; the provisioner builds its stream (subjects ``$KV.<bucket>.>``)."""

    kind: Literal["bucket"] = "bucket"
    history: int = Field(1, ge=1, le=64)
    ttl: float | None = Field(None, ge=0)  # seconds, None = values never expire
    max_bytes: int | None = Field(None, ge=-1)
    """None: topology.DEFAULT_BUCKET_MAX_BYTES on file, the memory quota in memory."""
    max_value_size: int = Field(topology.DEFAULT_BUCKET_MAX_VALUE, ge=-1)


ProvisionRequest = Annotated[StreamRequest | BucketRequest, Field(discriminator="kind")]
_REQUEST: TypeAdapter[StreamRequest | BucketRequest] = TypeAdapter(ProvisionRequest)


class ProvisionReply(BaseModel):
    """The provisioner's answer. Read tolerantly: a newer provisioner may say more."""

    model_config = ConfigDict(extra="ignore")

    ok: bool
    name: str = ""
    created: bool = False
    changed: list[str] = Field(default_factory=list)
    """What an update changed (empty: it was already as asked)."""
    error: str = ""
    retry_after: float = 0.0
    """Seconds to wait before asking again, when refused for asking too often."""


class Busy(Exception):
    """Another provisioner is working for the same service: ask again shortly."""


class Refused(Exception):
    """A request the provisioner will not carry out; the message says why."""


# -- what is allowed -------------------------------------------------------------------


def stream_request(name: str, subjects: list[str], **options: Any) -> StreamRequest:
    """A :class:`StreamRequest` from ``StreamConfig``-style keyword arguments.

    Enum values (``DiscardPolicy.OLD``, ``StorageType.FILE``...) are taken by
    value. An option the provisioner does not accept raises ``ValueError``
    naming it and the accepted ones.
    """
    allowed = set(StreamRequest.model_fields) - {"kind", "name", "subjects"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"stream {name}: option(s) {', '.join(unknown)} cannot be provisioned; "
            f"a service's stream takes only {', '.join(sorted(allowed))}"
        )
    plain = {k: getattr(v, "value", v) for k, v in options.items()}
    for key in ("max_age", "duplicate_window"):
        if isinstance(plain.get(key), int):
            plain[key] = float(plain[key])
    try:
        return StreamRequest(name=name, subjects=list(subjects), **plain)
    except ValidationError as exc:
        raise ValueError(f"stream {name}: {_first_error(exc)}") from None


def check_name(service: str, name: str) -> str:
    """``name`` if it may name a stream or bucket of ``service``; else :class:`Refused`."""
    own = subjects.service_bucket(service)
    suffix = name.removeprefix(f"{own}_")
    if name == own or (name != suffix and _SUFFIX_RE.match(suffix)):
        return name
    raise Refused(
        f"{name!r} is not a stream or bucket service {service} may own: use {own} "
        f"or {own}_<suffix> (suffix: lowercase letters and digits)"
    )


def check_subjects(service: str, wanted: list[str]) -> list[str]:
    """``wanted`` if every subject lies under ``<service>.``; else :class:`Refused`."""
    for subject in wanted:
        tokens = subject.split(".")
        valid = len(tokens) >= 2 and tokens[0] == service
        for i, token in enumerate(tokens[1:], start=1):
            last = i == len(tokens) - 1
            valid = valid and (
                token == "*" or (token == ">" and last) or bool(_TOKEN_RE.match(token))
            )
        if not valid:
            raise Refused(
                f"subject {subject!r} is not under {service}.> (service {service} owns "
                f"only the subjects {service}.<token>...; tokens: letters, digits, '_', "
                "'-', a '*' token, or a final '>')"
            )
    return wanted


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    # Field names come from the request: escaped, so they cannot forge log lines.
    where = ".".join(str(p) for p in first["loc"])[:100].encode("unicode_escape").decode()
    where = where or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse(data: bytes) -> StreamRequest | BucketRequest:
    """The request in ``data``; :class:`Refused` saying what is wrong with it."""
    if len(data) > MAX_REQUEST_BYTES:
        raise Refused(f"request of {len(data)} bytes; at most {MAX_REQUEST_BYTES}")
    try:
        return _REQUEST.validate_json(data)
    except ValidationError as exc:
        raise Refused(f"invalid request: {_first_error(exc)}") from None


# -- doing it --------------------------------------------------------------------------


def _unmanaged(config: StreamConfig) -> list[str]:
    return [field for field in _UNMANAGED if getattr(config, field, None)]


async def _info(js: JetStreamContext, stream: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(stream)).config
    except NotFoundError:
        return None


async def _update(
    js: JetStreamContext, current: StreamConfig, wanted: StreamConfig, fields: list[str]
) -> list[str]:
    """Update ``current`` to ``wanted`` where ``fields`` (or replicas) differ; what changed."""
    refused = _unmanaged(current)
    if refused:
        raise Refused(
            f"stream {current.name} has {', '.join(refused)}, which the provisioner never "
            f"sets: an operator must remove it (nats stream rm {current.name})"
        )
    changed = [f for f in fields if getattr(current, f) != getattr(wanted, f)]
    have = current.num_replicas or 1
    wanted.num_replicas = max(have, wanted.num_replicas or 1)  # never shed copies
    if wanted.num_replicas != have:
        changed.append(f"replicas {have} -> {wanted.num_replicas}")
    if not changed:
        return changed
    try:
        await js.update_stream(wanted)
    except APIError:
        if wanted.num_replicas == have:
            raise
        log.warning("stream %s not scaled up to %s replicas", current.name, wanted.num_replicas)
        wanted.num_replicas = have
        await js.update_stream(wanted)
    return changed


async def _stream(
    js: JetStreamContext,
    req: StreamRequest,
    replicas: int,
    quota: Quota,
    current: StreamConfig | None,
) -> ProvisionReply:
    options = req.options()
    if current is None:
        storage = StorageType(req.storage or "file")
        config = StreamConfig(
            name=req.name,
            subjects=list(req.subjects),
            storage=storage,
            num_replicas=replicas,
            max_consumers=quota.max_consumers,
            **options,
        )
        await topology.add_stream(js, config)
        return ProvisionReply(ok=True, name=req.name, created=True)
    wanted = replace(
        current,
        subjects=list(req.subjects),
        num_replicas=replicas,
        max_consumers=quota.max_consumers,
        **options,
    )
    if req.storage is not None:
        wanted.storage = StorageType(req.storage)
    fields = ["subjects", "storage", "max_consumers", *options]
    changed = await _update(js, current, wanted, fields)
    return ProvisionReply(ok=True, name=req.name, changed=changed)


async def _bucket(
    js: JetStreamContext,
    req: BucketRequest,
    replicas: int,
    quota: Quota,
    current: StreamConfig | None,
) -> ProvisionReply:
    if current is None:
        config = KeyValueConfig(
            bucket=req.name,
            description=req.description,
            history=req.history,
            ttl=req.ttl,
            max_bytes=req.max_bytes,
            max_value_size=req.max_value_size,
            storage=StorageType(req.storage or "file"),
            # Reads answered by the stream itself, not through the JetStream API.
            direct=True,
            replicas=replicas,
        )
        try:
            await js.create_key_value(config)
        except APIError as exc:
            if replicas <= 1:
                raise
            log.warning("KV bucket %s: %s; created with 1 replica", req.name, exc.description)
            await js.create_key_value(replace(config, replicas=1))
        # A bucket's configuration has no consumer limit: its stream gets it after.
        made = await _info(js, f"KV_{req.name}")
        if made is not None:
            limited = replace(made, max_consumers=quota.max_consumers)
            await _update(js, made, limited, ["max_consumers"])
        return ProvisionReply(ok=True, name=req.name, created=True)
    ttl = req.ttl or 0.0
    wanted = replace(
        current,
        max_msgs_per_subject=req.history,
        max_age=ttl,
        max_bytes=req.max_bytes,
        max_msg_size=req.max_value_size,
        allow_direct=True,
        # Per-message TTLs (a key that expires alone), as new buckets have them.
        allow_msg_ttl=True,
        num_replicas=replicas,
        max_consumers=quota.max_consumers,
    )
    # Within the quota (a bucket made some other way may remember ids for longer),
    # and within max_age, as JetStream wants it.
    bound = min(quota.max_duplicate_window, ttl or quota.max_duplicate_window)
    wanted.duplicate_window = min(wanted.duplicate_window or bound, bound)
    fields = ["max_msgs_per_subject", "max_age", "max_bytes", "max_msg_size"]
    fields += ["allow_direct", "allow_msg_ttl", "duplicate_window", "max_consumers"]
    if req.storage is not None:
        wanted.storage = StorageType(req.storage)
        fields.append("storage")
    changed = await _update(js, current, wanted, fields)
    return ProvisionReply(ok=True, name=req.name, changed=changed)


def _size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def _storage(config: StreamConfig) -> Storage:
    return "memory" if config.storage == StorageType.MEMORY else "file"


def check_size(
    request: StreamRequest | BucketRequest, quota: Quota, storage: Storage = "file"
) -> None:
    """:class:`Refused` if ``request`` asks to store more than ``quota`` allows."""
    asked = request.max_bytes
    cap = quota.max_memory_bytes if storage == "memory" else quota.max_bytes
    where = "in memory" if storage == "memory" else "on file"
    if asked is not None and (asked < 0 or asked > cap):
        raise Refused(
            f"max_bytes {'unlimited' if asked < 0 else asked} for {request.name} is over the "
            f"{_size(cap)} a service's stream or bucket {where} may hold: ask for at most "
            f"{cap} bytes"
        )


def check_dedupe(
    request: StreamRequest, current: StreamConfig | None, quota: Quota
) -> StreamRequest:
    """``request``, its dedupe window within ``quota`` and ``max_age``; else :class:`Refused`.

    A request that does not name the window gets an existing stream's window
    brought within bounds (one made before they were enforced).
    """
    cap = quota.max_duplicate_window
    max_age = request.max_age if request.max_age is not None else 0.0
    if request.max_age is None and current is not None:
        max_age = current.max_age or 0.0
    asked = request.duplicate_window
    if asked is None:
        have = current.duplicate_window if current is not None else None
        bound = min(cap, max_age or cap)
        if have is not None and have > bound:
            return request.model_copy(update={"duplicate_window": bound})
        return request
    if asked > cap:
        raise Refused(
            f"duplicate_window {asked:g} s for {request.name} is over the {cap:g} s a "
            f"service's stream may remember message ids for (the broker keeps each in "
            f"memory): ask for at most {cap:g}"
        )
    if max_age and asked > max_age:
        raise Refused(
            f"duplicate_window {asked:g} s for {request.name} is longer than its max_age "
            f"{max_age:g} s: JetStream wants it within max_age; ask for at most {max_age:g}"
        )
    return request


async def _owned(js: JetStreamContext, service: str) -> dict[str, tuple[Storage, int]]:
    """The streams and buckets ``service`` has now (stream name: storage, bytes reserved)."""
    own = subjects.service_bucket(service)
    found: dict[str, tuple[Storage, int]] = {}
    offset = 0
    while page := await js.streams_info(offset):
        offset += len(page)
        for info in page:
            name = info.config.name or ""
            base = name.removeprefix("KV_")
            if base == own or base.startswith(f"{own}_"):
                found[name] = (_storage(info.config), max(info.config.max_bytes or 0, 0))
    return found


async def apply(
    js: JetStreamContext,
    service: str,
    request: StreamRequest | BucketRequest,
    replicas: int | None = None,
    quota: Quota = DEFAULT_QUOTA,
) -> ProvisionReply:
    """Create or update ``service``'s stream or bucket as ``request`` asks, if allowed.

    Raises :class:`Refused` for a request outside what ``service`` may own or
    beyond its ``quota``; JetStream's own refusals come as ``nats`` errors.
    ``replicas`` defaults to what the server calls for
    (:func:`botbus.topology.replicas_for`).
    """
    try:
        check_service_name(service)
    except ConfigError as exc:
        raise Refused(str(exc)) from None
    check_name(service, request.name)
    if isinstance(request, StreamRequest):
        check_subjects(service, request.subjects)
    stream = request.name if isinstance(request, StreamRequest) else f"KV_{request.name}"
    current = await _info(js, stream)
    storage: Storage = request.storage or (_storage(current) if current else "file")
    memory = storage == "memory"
    check_size(request, quota, storage)
    if isinstance(request, StreamRequest):
        request = check_dedupe(request, current, quota)
    if request.max_bytes is None and (isinstance(request, BucketRequest) or current is None):
        if memory:
            default = quota.max_memory_bytes
        elif isinstance(request, BucketRequest):
            default = topology.DEFAULT_BUCKET_MAX_BYTES
        else:
            default = quota.default_bytes
        request = request.model_copy(update={"max_bytes": default})
    if request.max_bytes is not None:
        owned = await _owned(js, service)
        if current is None and len(owned) >= quota.max_resources:
            raise Refused(
                f"service {service} already has {len(owned)} streams and buckets, the most "
                f"one service may have ({quota.max_resources}): {', '.join(sorted(owned))}"
            )
        total = quota.max_memory_total if memory else quota.max_total
        others = sum(size for n, (kind, size) in owned.items() if kind == storage and n != stream)
        if others + request.max_bytes > total:
            raise Refused(
                f"{request.name} with max_bytes {request.max_bytes} would take service "
                f"{service} over the {_size(total)} all its streams and buckets "
                f"{'in memory' if memory else 'on file'} may hold ({_size(others)} already)"
            )
    copies = topology.replicas_for(js) if replicas is None else replicas
    # ``current`` as read above: reading it again would close no race (another
    # gateway's provisioner may act between any two reads).
    if isinstance(request, StreamRequest):
        return await _stream(js, request, copies, quota, current)
    return await _bucket(js, request, copies, quota, current)


class RateLimit:
    """A token bucket per key: ``burst`` requests at once, ``rate`` a second after that."""

    def __init__(self, burst: int = PROVISION_BURST, rate: float = PROVISION_RATE) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError(f"a rate limit needs burst >= 1 and rate > 0 (got {burst}, {rate})")
        self.burst = burst
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}  # key: (tokens, when counted)

    def _step(self, state: tuple[float, float] | None, now: float) -> tuple[float, float, float]:
        """(tokens left, when counted, seconds to wait: 0 if a token was used) from ``state``.

        The time counted never goes back: a shared state written by a gateway whose
        clock is ahead stays counted at that time, so one whose clock is behind neither
        refills it nor moves it back for the next to refill the difference again.
        """
        tokens, then = state or (float(self.burst), now)
        tokens = min(float(self.burst), tokens + max(now - then, 0.0) * self.rate)
        then = max(then, now)
        if tokens >= 1.0:
            return tokens - 1.0, then, 0.0
        return tokens, then, (1.0 - tokens) / self.rate

    def take(self, key: str, now: float) -> float:
        """0 if ``key`` may go ahead at ``now`` (a token is used); else seconds to wait."""
        tokens, then, wait = self._step(self._buckets.get(key), now)
        self._buckets[key] = (tokens, then)
        return wait

    async def take_shared(self, kv: KeyValue, key: str, now: float) -> float:
        """As :meth:`take`, the bucket kept in ``kv`` for every provisioner to share.

        ``now`` is wall-clock time (the provisioners run on different hosts).
        A state the bucket let expire counts as full. Raises ``nats`` errors.
        """
        for _ in range(SHARED_RATE_TRIES):
            revision: int | None = None
            state: tuple[float, float] | None = None
            try:
                entry = await kv.get(key)
                revision = entry.revision
                tokens, then = json.loads(entry.value or b"")
                state = (float(tokens), float(then))
            except KeyNotFoundError:
                pass
            except (ValueError, TypeError):
                state = None  # unreadable: start again from a full bucket
            tokens, then, wait = self._step(state, now)
            if wait:
                return wait  # nothing used: nothing to write
            value = json.dumps([tokens, then]).encode()
            try:
                if revision is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=revision)
                return 0.0
            except KeyWrongLastSequenceError:
                continue  # another provisioner took a token meanwhile: count again
        return 1.0 / self.rate  # contended all along: this one waits for the next token


class Provisioner:
    """Answers ``botbus.ctl.provision.<service>`` requests (the gateway runs one).

    Requests are handled one at a time, so two asks for the same stream never
    race. ``replicas`` overrides the copies the server calls for; ``limit``
    is how often one service may ask (:class:`RateLimit`, per service name).
    ``dropped`` counts requests with no reply subject, ``throttled`` those
    refused for coming too often.
    """

    def __init__(
        self,
        nc: Client,
        *,
        replicas: int | None = None,
        quota: Quota = DEFAULT_QUOTA,
        limit: RateLimit | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=topology.SETUP_TIMEOUT)
        self._replicas = replicas
        self._quota = quota
        self._limit = limit or RateLimit()
        self._sub: Subscription | None = None
        self._locks: KeyValue | None = None
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.dropped = 0
        self.throttled = 0

    async def start(self) -> None:
        """Start answering, in the queue group every provisioner shares.

        Returns once the broker has the subscription: a request sent right
        after, from another connection, finds it (not "no responders")."""
        self._locks = await self._open_state()
        self._sub = await self._nc.subscribe(
            subjects.PROVISION_ALL, queue=subjects.PROVISION_QUEUE, cb=self._on_request
        )
        await self._nc.flush()

    async def _open_state(self) -> KeyValue:
        config = KeyValueConfig(
            bucket=subjects.KV_PROVISIONING,
            history=1,
            ttl=LOCK_TTL,
            storage=StorageType.MEMORY,
        )
        return await topology.open_bucket(self._js, config)

    async def _reopen_state(self, exc: Exception) -> bool:
        """Make ``botbus_provisioning`` again if ``exc`` says it is gone; True if made.

        It is in memory: a broker restarting (one server, or a whole cluster) loses
        it while this provisioner stays connected, which made every request fail.
        """
        if not isinstance(exc, (NoStreamResponseError, NoRespondersError, BucketNotFoundError)):
            return False
        try:
            self._locks = await self._open_state()
        except (NatsError, TimeoutError) as again:
            log.warning("could not make %s again: %s", subjects.KV_PROVISIONING, again)
            return False
        log.warning("%s was gone (a broker restart?): made again", subjects.KV_PROVISIONING)
        return True

    async def stop(self) -> None:
        """Stop answering (a request being handled is finished first by nats-py)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except (NatsError, ValueError) as exc:
                log.debug("provisioner unsubscribe: %s", exc)

    async def __aenter__(self) -> Provisioner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def handle(self, subject: str, data: bytes) -> ProvisionReply:
        """The reply to one request; never raises."""
        service = subjects.provision_requester(subject)
        try:
            if service is None:
                raise Refused(f"{subject!r} names no service")
            request = parse(data)
            async with self._working_for(service):
                reply = await apply(self._js, service, request, self._replicas, self._quota)
        except Busy:
            log.info("provisioning for %s: another provisioner is at it; retry asked", service)
            return ProvisionReply(
                ok=False,
                error=f"another provisioner is working for {service}, retry in {LOCK_RETRY:g} s",
                retry_after=LOCK_RETRY,
            )
        except Refused as exc:
            log.warning("provisioning refused (%s): %s", subject, exc)
            return ProvisionReply(ok=False, error=str(exc))
        except APIError as exc:
            log.warning("provisioning for %s: JetStream refused: %s", service, exc.description)
            return ProvisionReply(ok=False, error=f"JetStream refused it: {exc.description}")
        except Exception as exc:
            log.exception("provisioning for %s failed", service)
            return ProvisionReply(ok=False, error=f"the provisioner failed: {exc!r}")
        if reply.created:
            log.info("provisioned %s %s for %s", request.kind, reply.name, service)
        elif reply.changed:
            log.info("updated %s %s: %s", request.kind, reply.name, ", ".join(reply.changed))
        return reply

    @contextlib.asynccontextmanager
    async def _working_for(self, service: str) -> AsyncIterator[None]:
        """Hold ``service``'s lock (see the module's docstring) while the body runs."""
        if self._locks is None:
            raise RuntimeError("the provisioner is not started")
        key = f"svc.{service}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT
        holder = self._holder.encode()
        while True:
            try:
                revision = await self._on_state(lambda kv: kv.create(key, holder))
                break
            except KeyWrongLastSequenceError:
                if loop.time() >= deadline:
                    raise Busy(service) from None
                await asyncio.sleep(LOCK_POLL)
        locks = self._locks
        held = [revision]  # its latest revision, renewed while the body runs
        done = asyncio.Event()
        renewal = asyncio.create_task(self._renew(locks, key, held, done))
        try:
            yield
        finally:
            done.set()  # not cancelled: a renewal in flight must tell its revision
            await renewal
            # Only if it is still ours: one not renewed in time (the bucket
            # unreachable for LOCK_TTL) expired, and another provisioner may hold it
            # now (then this delete is refused).
            try:
                await locks.delete(key, last=held[0])
            except (NatsError, TimeoutError) as exc:  # it expires after LOCK_TTL anyway
                log.warning(
                    "could not release the provisioning lock of %s (expired and taken by "
                    "another provisioner?): %s",
                    service,
                    exc,
                )

    async def _on_state(self, op: Callable[[KeyValue], Awaitable[T]]) -> T:
        """``op`` on ``botbus_provisioning``, once more if it had to be made again."""
        if self._locks is None:
            raise RuntimeError("the provisioner is not started")
        try:
            return await op(self._locks)
        except NatsError as exc:
            if not await self._reopen_state(exc):
                raise
        return await op(self._locks)

    async def _take_shared(self, service: str) -> float:
        """:meth:`RateLimit.take_shared` for ``service``; 0 if the bucket cannot say."""
        key = f"rate.{service}"
        try:
            return await self._on_state(lambda kv: self._limit.take_shared(kv, key, time.time()))
        except (NatsError, TimeoutError) as exc:
            log.warning("shared provisioning rate of %s unknown (%s): local only", service, exc)
            return 0.0

    async def _renew(self, locks: KeyValue, key: str, held: list[int], done: asyncio.Event) -> None:
        """Renew the lock ``key`` (revision ``held[0]``) until ``done``.

        Work may outlast LOCK_TTL (JetStream calls of a slow cluster each wait
        up to topology.SETUP_TIMEOUT, and the asker times out and asks another
        gateway meanwhile): unrenewed, the lock would expire under it and let a
        second provisioner past the same service's quota check.
        """
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), LOCK_TTL / LOCK_RENEWALS)
            if done.is_set():
                return
            try:
                held[0] = await locks.update(key, self._holder.encode(), last=held[0])
            except KeyWrongLastSequenceError:
                log.warning("provisioning lock %s expired and was taken meanwhile", key)
                return
            except (NatsError, TimeoutError) as exc:
                log.warning("could not renew provisioning lock %s: %s", key, exc)

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            # Nobody to tell: the work is not done (a flood of these would delay the rest).
            self.dropped += 1
            log.debug("provisioning request on %s with no reply subject dropped", msg.subject)
            return
        service = subjects.provision_requester(msg.subject) or msg.subject
        wait = self._limit.take(service, asyncio.get_running_loop().time())
        if not wait:
            wait = await self._take_shared(service)
        if wait:
            self.throttled += 1
            wait = math.ceil(wait * 10) / 10
            log.debug(
                "provisioning request of %s refused: too many (%d so far)", service, self.throttled
            )
            reply = ProvisionReply(
                ok=False,
                error=f"too many provisioning requests from {service}, retry in {wait:g} s",
                retry_after=wait,
            )
        else:
            reply = await self.handle(msg.subject, msg.data)
        try:
            await msg.respond(reply.model_dump_json().encode())
        except (NatsError, OSError) as exc:
            log.warning("could not answer a provisioning request: %s", exc)


# -- the client side -------------------------------------------------------------------


def auth_required(nc: Client) -> bool:
    """True unless the server said it needs no authentication (a bare dev broker)."""
    info = getattr(nc, "_server_info", None)  # nats-py keeps the server's INFO privately
    # The server leaves "auth_required" out of its INFO when it is false.
    return not isinstance(info, dict) or bool(info.get("auth_required", False))


async def _exists(nc: Client, request: StreamRequest | BucketRequest) -> bool:
    stream = request.name if isinstance(request, StreamRequest) else f"KV_{request.name}"
    try:
        return await _info(nc.jetstream(timeout=EXISTS_TIMEOUT), stream) is not None
    except (NatsError, TimeoutError):
        return False  # not this identity's to look at (a suffix it was not granted)


async def provision(
    nc: Client,
    service: str,
    request: StreamRequest | BucketRequest,
    *,
    wait: float = PROVISION_WAIT,
) -> ProvisionReply:
    """Have ``service``'s stream or bucket created (or updated) as ``request`` says.

    Asks the provisioner. While none answers: on a broker without
    authentication it is done directly; if the stream or bucket exists it is
    used as it is (with a warning: its settings are not updated); else the
    ask is repeated for ``wait`` seconds. Refused for asking too often, it asks
    again after the ``retry_after`` the provisioner gave, if that is within
    ``wait``. Raises :class:`ProvisionError` when the provisioner refuses, or
    none answered in time.
    """
    subject = subjects.provision(service)
    payload = request.model_dump_json(exclude_none=True).encode()
    js = nc.jetstream(timeout=topology.SETUP_TIMEOUT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    logged = loop.time()
    first = True
    while True:
        try:
            msg = await nc.request(subject, payload, timeout=REQUEST_TIMEOUT)
        except NoRespondersError:
            silence = "no provisioner answers"
            if not auth_required(nc):
                try:
                    return await apply(js, service, request)
                except Refused as exc:
                    raise ProvisionError(str(exc)) from None
        except (NatsTimeoutError, TimeoutError):
            # A provisioner stopping (a gateway failing over) drops what it was sent.
            silence = f"a request got no answer within {REQUEST_TIMEOUT:g}s"
        else:
            reply = _read_reply(request, msg.data)
            retry = reply.retry_after
            if reply.ok or not retry or loop.time() + retry > deadline:
                break
            log.info("the provisioner asks to retry %s in %g s", request.name, retry)
            await asyncio.sleep(retry)
            continue
        if first and await _exists(nc, request):
            log.warning(
                "%s %s: %s (is the gateway running?); using it as it is, its settings not updated",
                request.kind,
                request.name,
                silence,
            )
            return ProvisionReply(ok=True, name=request.name)
        now = loop.time()
        if now >= deadline:
            raise ProvisionError(
                f"{request.kind} {request.name}: no provisioner answered on {subject} within "
                f"{wait:g}s ({silence}). The gateway runs it: start the gateway (`botbus up` "
                "does), then this service; if it runs, check that this identity may publish "
                f"there (issue it with `botbus creds issue {service}`)"
            )
        first = False
        if now - logged >= PROVISION_LOG_EVERY:
            log.warning(
                "waiting for the provisioner to make %s — is the gateway running?", request.name
            )
            logged = now
        await asyncio.sleep(PROVISION_RETRY)
    if not reply.ok:
        raise ProvisionError(
            f"the provisioner refused {request.kind} {request.name}: {reply.error}"
        )
    return reply


def _read_reply(request: StreamRequest | BucketRequest, data: bytes) -> ProvisionReply:
    try:
        return ProvisionReply.model_validate_json(data)
    except ValidationError:
        raise ProvisionError(
            f"{request.kind} {request.name}: the provisioner's answer is not one "
            f"(got {data[:100]!r})"
        ) from None


async def service_bucket(
    nc: Client,
    service: str,
    suffix: str = "",
    *,
    wait: float = PROVISION_WAIT,
    **options: Any,
) -> KeyValue:
    """Open ``service``'s KV bucket ``svc_<service>[_<suffix>]``, provisioned first.

    ``options`` are :class:`BucketRequest` fields (``history``, ``ttl``,
    ``max_bytes``, ``max_value_size``, ``storage``).
    """
    request = BucketRequest(name=subjects.service_bucket(service, suffix), **options)
    await provision(nc, service, request, wait=wait)
    return await nc.jetstream(timeout=topology.SETUP_TIMEOUT).key_value(request.name)
