"""The JetStream topology: botbus's streams and the services' KV buckets.

:func:`ensure_topology` creates (or brings up to date) every shared stream
and is idempotent, so the gateway and the admin tooling both call it at
start-up. Services do not: their identities give them no right to create or
change any stream (a service could otherwise shrink a limit every other
part relies on, or capture others' subjects); they wait for the shared
streams with :func:`wait_for_streams`.

Limits (all explicit, file storage; one replica on a single server, three on
a JetStream cluster, see :func:`replicas_for`):

=============  ================  =========  ========  =========  ========  ==========
stream         subjects          retention  max_age   max_bytes  discard   dedupe
=============  ================  =========  ========  =========  ========  ==========
BOTBUS_IN      botbus.in.>       interest   3 days    512 MiB    new       2 minutes
BOTBUS_OUT     botbus.out.>      limits     1 day     1 GiB      old       2 minutes
BOTBUS_EVENTS  botbus.event.>    limits     7 days    64 MiB     old       2 minutes
BOTBUS_DLQ     botbus.dlq.>      limits     30 days   256 MiB    old       none
=============  ================  =========  ========  =========  ========  ==========

Why:

- BOTBUS_IN keeps a message until every durable consumer that wants it has
  acked it (interest), so requests wait while a service is down, and space
  is freed as soon as they are handled. When it is full it refuses new
  messages (discard new) instead of dropping unhandled ones: the gateway
  then does not confirm the update to Telegram, which keeps it (24 h), so
  back-pressure never loses a request. The dedupe window absorbs a
  gateway that re-publishes an update after a crash.
- BOTBUS_OUT keeps actions a day so the gateway can catch up after an
  outage; an action older than that is worthless to a user, so the oldest
  go first when full. The dedupe window makes a redelivered handler's
  actions (same idempotency key) a no-op.
- BOTBUS_EVENTS and BOTBUS_DLQ are small audit trails. A service's own
  streams (``svc_<name>...``, e.g. the alerts service's feed) are declared
  by the service (``Service.stream``) and made by the core's provisioner
  on its request (:mod:`botbus.provision`), which the gateway runs.
- Replicas: on a cluster every stream and bucket keeps three copies, so the
  death of one node loses nothing and stops nothing (two of three still
  form a quorum). botbus scales a stream up to that, never down: a cluster
  seen with a node missing must not shed copies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from botbus import subjects

log = logging.getLogger(__name__)

MINUTE = 60.0  # seconds
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MiB = 1024 * 1024

DEDUPE_WINDOW = 2 * MINUTE
CLUSTER_REPLICAS = 3  # copies of each stream and bucket on a JetStream cluster
# JetStream API timeout for creating streams and buckets: on a busy cluster a
# replicated create waits for its peers well beyond nats-py's 5 s default.
SETUP_TIMEOUT = 10.0  # seconds
# A reply lost with a dying cluster node is a timeout; the set-up is idempotent,
# so it is tried again this many times before start-up gives up.
SETUP_ATTEMPTS = 3
STREAM_WAIT_LOG_EVERY = 5.0  # seconds between two "waiting for stream" log lines
# Services start beside the gateway, which makes the streams: waiting this
# long is normal (INFO); longer means the gateway is missing (WARNING).
STREAM_WAIT_GRACE = 10.0  # seconds
STREAM_WAIT_POLL = 0.5  # seconds between two checks for a missing stream

# Service KV buckets: small state, one value per key by default.
DEFAULT_BUCKET_MAX_BYTES = 64 * MiB
DEFAULT_BUCKET_MAX_VALUE = 1 * MiB


@dataclass(frozen=True)
class StreamSpec:
    """The settings botbus manages for one stream (see the module table)."""

    name: str
    subject: str
    retention: RetentionPolicy
    max_age: float  # seconds
    max_bytes: int
    discard: DiscardPolicy
    duplicate_window: float  # seconds, 0 = no dedupe
    max_msg_size: int
    description: str

    def config(self, replicas: int = 1) -> StreamConfig:
        """The nats-py configuration of this stream with ``replicas`` copies."""
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=[self.subject],
            retention=self.retention,
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            max_msg_size=self.max_msg_size,
            discard=self.discard,
            duplicate_window=self.duplicate_window,
            storage=StorageType.FILE,
            num_replicas=replicas,
        )


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        name=subjects.STREAM_INBOUND,
        subject=subjects.INBOUND_ALL,
        retention=RetentionPolicy.INTEREST,
        max_age=3 * DAY,
        max_bytes=512 * MiB,
        discard=DiscardPolicy.NEW,
        duplicate_window=DEDUPE_WINDOW,
        max_msg_size=256 * 1024,
        description="Inbound messages, commands and callbacks from the gateway",
    ),
    StreamSpec(
        name=subjects.STREAM_OUTBOUND,
        subject=subjects.OUTBOUND_ALL,
        retention=RetentionPolicy.LIMITS,
        max_age=1 * DAY,
        max_bytes=1024 * MiB,
        discard=DiscardPolicy.OLD,
        duplicate_window=DEDUPE_WINDOW,
        max_msg_size=8 * MiB,
        description="Outbound actions of every service, relayed by the gateway",
    ),
    StreamSpec(
        name=subjects.STREAM_EVENTS,
        subject=subjects.EVENTS_ALL,
        retention=RetentionPolicy.LIMITS,
        max_age=7 * DAY,
        max_bytes=64 * MiB,
        discard=DiscardPolicy.OLD,
        duplicate_window=DEDUPE_WINDOW,
        max_msg_size=64 * 1024,
        description="Forget-me and delivery events for services",
    ),
    StreamSpec(
        name=subjects.STREAM_DLQ,
        subject=subjects.DLQ_ALL,
        retention=RetentionPolicy.LIMITS,
        max_age=30 * DAY,
        max_bytes=256 * MiB,
        discard=DiscardPolicy.OLD,
        duplicate_window=0,
        max_msg_size=1 * MiB,
        description="Messages services gave up on (DeadLetter records)",
    ),
)


def _differs(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    fields = ("subjects", "max_age", "max_bytes", "max_msg_size", "discard", "duplicate_window")
    return [f for f in fields if getattr(current, f) != getattr(wanted, f)]


def replicas_for(js: JetStreamContext) -> int:
    """How many copies botbus keeps of a stream on the server behind ``js``.

    Three when the server is a node of a cluster (its INFO names one), one
    otherwise. nats-py keeps that INFO only on a private attribute; without
    it this answers 1, the safe choice on any server.
    """
    info = getattr(getattr(js, "_nc", None), "_server_info", None)
    return CLUSTER_REPLICAS if isinstance(info, dict) and info.get("cluster") else 1


async def add_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create a stream; with one replica if the cluster is too small for more.

    A cluster reporting fewer nodes than replicas (e.g. two of three still
    up at first start) refuses the stream; botbus then starts with one copy
    and scales it up at a later start (:func:`ensure_stream`).
    """
    try:
        await js.add_stream(config)
    except APIError as exc:
        if (config.num_replicas or 1) <= 1:
            raise
        log.warning(
            "stream %s: the cluster refused %s replicas (%s); created with 1, "
            "restart the gateway once every node is up to replicate it",
            config.name,
            config.num_replicas,
            exc.description,
        )
        await js.add_stream(replace(config, num_replicas=1))


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> None:
    """Create ``spec``'s stream, or update its limits (and scale it up) if they drifted."""
    wanted = spec.config(replicas)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        await add_stream(js, wanted)
        log.info("created stream %s (%s, %d replicas)", spec.name, spec.subject, replicas)
        return
    current_replicas = info.config.num_replicas or 1
    wanted.num_replicas = max(current_replicas, replicas)  # never shed copies
    changed = _differs(info.config, wanted)
    if wanted.num_replicas != current_replicas:
        changed.append(f"replicas {current_replicas} -> {wanted.num_replicas}")
    if info.config.retention != wanted.retention:
        # JetStream cannot change retention in place; deleting would lose data.
        log.warning(
            "stream %s has retention %s, botbus expects %s: delete the stream "
            "(nats stream rm %s) to recreate it",
            spec.name,
            info.config.retention,
            wanted.retention,
            spec.name,
        )
    if changed:
        try:
            await js.update_stream(wanted)
        except APIError as exc:
            if wanted.num_replicas == current_replicas:
                raise
            log.warning("stream %s not scaled up: %s", spec.name, exc.description)
            wanted.num_replicas = current_replicas
            await js.update_stream(wanted)
        log.info("updated stream %s: %s", spec.name, ", ".join(changed))


async def ensure_topology(
    js: JetStreamContext, streams: Iterable[StreamSpec] = STREAMS, *, replicas: int | None = None
) -> None:
    """Create or update every shared stream; safe to call from many processes.

    ``replicas`` defaults to what the server calls for (:func:`replicas_for`).
    """
    copies = replicas_for(js) if replicas is None else replicas
    for spec in streams:
        for attempt in range(1, SETUP_ATTEMPTS + 1):
            try:
                await ensure_stream(js, spec, copies)
                break
            except TimeoutError as exc:  # nats-py's TimeoutError is one too
                if attempt == SETUP_ATTEMPTS:
                    raise
                log.warning("stream %s: no answer from JetStream (%r); retrying", spec.name, exc)


async def wait_for_streams(
    js: JetStreamContext,
    names: Iterable[str],
    *,
    grace: float = STREAM_WAIT_GRACE,
    clock: Callable[[], float] | None = None,
) -> None:
    """Block until every stream in ``names`` exists, logging what is missing.

    The first ``grace`` seconds (by ``clock``, the event loop's by default) it
    logs at INFO, then at WARNING.
    """
    time = clock or asyncio.get_running_loop().time
    start = time()
    last_log: float | None = None
    for name in names:
        while True:
            try:
                await js.stream_info(name)
                break
            except NotFoundError:
                now = time()
                if last_log is None or now - last_log >= STREAM_WAIT_LOG_EVERY:
                    if now - start < grace:
                        log.info("waiting for stream %s (the gateway makes it)", name)
                    else:
                        log.warning(
                            "still waiting for stream %s after %.0f s — is the gateway running?",
                            name,
                            now - start,
                        )
                    last_log = now
                await asyncio.sleep(STREAM_WAIT_POLL)


async def service_bucket(
    js: JetStreamContext,
    service: str,
    suffix: str = "",
    *,
    history: int = 1,
    ttl: float | None = None,
    max_bytes: int = DEFAULT_BUCKET_MAX_BYTES,
    max_value_size: int = DEFAULT_BUCKET_MAX_VALUE,
) -> KeyValue:
    """Open the KV bucket ``svc_<service>[_<suffix>]``, creating it if missing.

    Defaults: one revision per key, no TTL, 64 MiB per bucket, 1 MiB per
    value. Made directly, so only by an identity that may create streams
    (admin tooling, tests); a service gets its buckets from the core's
    provisioner (:func:`botbus.provision.service_bucket`).
    """
    config = KeyValueConfig(
        bucket=subjects.service_bucket(service, suffix),
        history=history,
        ttl=ttl,
        max_bytes=max_bytes,
        max_value_size=max_value_size,
        storage=StorageType.FILE,
    )
    return await open_bucket(js, config)


async def open_bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Open the KV bucket ``config.bucket``, creating it from ``config`` if missing.

    Buckets allow direct gets: a read is answered by the stream itself
    instead of a JSON API round trip through the JetStream API handler
    (about 0.1 ms less per read, and reads do not queue behind other API
    calls). On a cluster they keep three copies, like the streams. A bucket
    created before either is switched over in place.
    """
    replicas = max(config.replicas, replicas_for(js))
    try:
        kv = await js.key_value(config.bucket)
    except (BucketNotFoundError, NotFoundError):
        try:
            kv = await js.create_key_value(replace(config, direct=True, replicas=replicas))
        except APIError as exc:
            if replicas <= 1:
                raise
            log.warning("KV bucket %s: %s; created with 1 replica", config.bucket, exc.description)
            kv = await js.create_key_value(replace(config, direct=True, replicas=1))
        log.info("created KV bucket %s", config.bucket)
        return kv
    stream = f"KV_{config.bucket}"
    try:
        current = (await js.stream_info(stream)).config
        copies = max(current.num_replicas or 1, replicas)
        if current.allow_direct and copies == (current.num_replicas or 1):
            return kv
        await js.update_stream(replace(current, allow_direct=True, num_replicas=copies))
    except NatsError as exc:
        log.info("KV bucket %s left as it is (could not update it: %s)", stream, exc)
        return kv
    log.info("KV bucket %s: direct gets on, %d replicas", config.bucket, copies)
    return await js.key_value(config.bucket)
