"""Benchmark: plan the fan-out of one alert to 100,000 subscribers.

Starts a throwaway nats-server, stores N subscriptions in the alerts
service's KV bucket, then times one :class:`Broadcaster` run: reading every
subscription of the channel from JetStream, building one bulk SendText per
chat and enqueueing them on BOTBUS_OUT with pipelined publishes (progress
recorded per batch). Prints wall time, throughput and peak memory (Python
heap via tracemalloc, and the process's peak RSS). Targets: < 10 s, < 200 MB.

    python bench/alerts.py [--subscribers 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import nats

from botbus.connect import connect_options
from botbus.models import Alert
from botbus.natsserver import NatsServer
from botbus.settings import load_settings
from botbus.topology import ensure_topology
from services.alerts.fanout import Broadcaster
from services.alerts.store import AlertsStore, Subscription

CHANNEL = "bench"
TARGET_SECONDS = 10.0
TARGET_MB = 200.0


async def populate(store: AlertsStore, count: int) -> None:
    """Store ``count`` subscriptions to the bench channel (pipelined KV puts)."""
    js = store.js
    es = Subscription(language="es").model_dump_json().encode()
    en = Subscription(language="en").model_dump_json().encode()
    futures = []
    for chat in range(1, count + 1):
        subject = f"$KV.{store.subs_bucket}.{CHANNEL}.{chat}"
        futures.append(await js.publish_async(subject, es if chat % 3 == 0 else en))
    await asyncio.gather(*futures)


async def run(count: int) -> None:
    """Start a server, populate, and time one broadcast."""
    with tempfile.TemporaryDirectory(prefix="botbus-bench-") as tmp:
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(Path(tmp) / "data"))
        async with NatsServer(Path(tmp) / "nats", settings) as server:
            login = connect_options(settings, "admin")
            nc = await nats.connect(
                server.url,
                **login,
            )
            js = nc.jetstream(publish_async_max_pending=4000)
            await ensure_topology(js)
            store = await AlertsStore.open(js)

            started = time.perf_counter()
            await populate(store, count)
            print(f"populated {count:,} subscriptions in {time.perf_counter() - started:.2f} s")

            broadcaster = Broadcaster(js, store)
            alert = Alert(title="Bench alert", text="Fan-out benchmark", severity="warning")
            rss_before = _rss_mb()
            started = time.perf_counter()
            subscribers = await store.subscribers(CHANNEL)
            read_seconds = time.perf_counter() - started
            del subscribers  # the broadcast reads them again, as in production

            # Timed run without tracing (tracemalloc slows allocation-heavy code ~4x).
            started = time.perf_counter()
            result = await broadcaster.run("1", CHANNEL, alert)
            elapsed = time.perf_counter() - started
            rss_after = _rss_mb()

            # Same work for a second alert under tracemalloc, for the heap peak.
            tracemalloc.start()
            await broadcaster.run("2", CHANNEL, alert)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()

            info = await js.stream_info("BOTBUS_OUT")
            await nc.drain()

    peak_mb = peak / 1024 / 1024
    print(f"reading {count:,} subscriptions alone: {read_seconds:.2f} s")
    print(
        f"fan-out of one alert to {result.subscribers:,} subscribers: "
        f"{result.enqueued_now:,} actions enqueued in {elapsed:.2f} s "
        f"({result.enqueued_now / elapsed:,.0f} actions/s); BOTBUS_OUT holds "
        f"{info.state.messages:,} messages"
    )
    print(
        f"peak Python heap of one fan-out (tracemalloc): {peak_mb:.1f} MB; "
        f"process peak RSS: {rss_after:.0f} MB (before the fan-out: {rss_before:.0f} MB, "
        "most of it the populate step)"
    )
    verdict_time = "OK" if elapsed < TARGET_SECONDS else "OVER"
    verdict_mem = "OK" if max(peak_mb, rss_after - rss_before) < TARGET_MB else "OVER"
    print(
        f"targets: < {TARGET_SECONDS:.0f} s [{verdict_time}], < {TARGET_MB:.0f} MB [{verdict_mem}]"
    )


def _rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=100_000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.subscribers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
