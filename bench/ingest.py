"""Webhook ingest throughput: durable updates per second into JetStream.

The gateway runs in webhook mode (its own process); 40 concurrent HTTP
connections — what Telegram uses at most — POST text-message updates with
the secret token. An update counts once the gateway answered 200, which it
does only after JetStream acknowledged it; the script checks the stream
holds them all.

    python bench/ingest.py [--updates 20000] [--connections 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import nats
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig

from botbus import subjects, topology
from botbus.connect import connect_options
from botbus.natsserver import NatsServer
from botbus.sandbox import Limits, SandboxServer
from botbus.settings import load_settings

SECRET = "bench-secret"
USERS = 2000
GATEWAY_CMD = [sys.executable, "-m", "botbus.gateway"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def update(n: int) -> dict[str, object]:
    uid = 1 + n % USERS
    return {
        "update_id": n,
        "message": {
            "message_id": n,
            "date": 0,
            "chat": {"id": uid, "type": "private"},
            "from": {"id": uid, "is_bot": False, "first_name": "B", "language_code": "en"},
            "text": f"bench message number {n}",
        },
    }


async def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError("the gateway's webhook never started listening; see gateway.log")


async def main(count: int, connections: int) -> None:
    with tempfile.TemporaryDirectory(prefix="botbus-ingest-") as tmp:
        workdir = Path(tmp)
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=str(workdir / "data"))
        async with NatsServer(workdir / "nats", settings) as server:
            login = connect_options(settings, "admin")
            nc = await nats.connect(
                server.url,
                **login,
            )
            js = nc.jetstream()
            await topology.ensure_topology(js)
            # A durable consumer keeps interest so every published update stays countable.
            await js.add_consumer(
                subjects.STREAM_INBOUND,
                ConsumerConfig(durable_name="bench_count", ack_policy=AckPolicy.NONE),
            )
            sandbox = SandboxServer(Limits(enabled=False))
            await sandbox.start()
            bot = sandbox.add_bot(username="bench_ingest_bot")
            port = free_port()
            env = dict(os.environ)
            env.update(
                NATS_URL=server.url,
                TELEGRAM_BOT_TOKEN=bot.token,
                TELEGRAM_API_URL=sandbox.api_url,
                BOTBUS_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
                BOTBUS_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
                BOTBUS_WEBHOOK_SECRET=SECRET,
                BOTBUS_GATEWAY_HTTP="off",
                BOTBUS_FLOOD_RATE="100000",
                BOTBUS_FLOOD_BURST="100000",
                BOTBUS_LOG_LEVEL="WARNING",
                BOTBUS_DATA_DIR=str(workdir / "data"),
            )
            with (workdir / "gateway.log").open("ab") as log:
                gateway = await asyncio.create_subprocess_exec(
                    *GATEWAY_CMD, env=env, stdout=log, stderr=log
                )
            try:
                await wait_listening(port)
                url = f"http://127.0.0.1:{port}/hook"
                headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
                queue: asyncio.Queue[int] = asyncio.Queue()
                for n in range(1, count + 1):
                    queue.put_nowait(n)
                failures = 0

                async def worker(http: aiohttp.ClientSession) -> None:
                    nonlocal failures
                    while not queue.empty():
                        n = queue.get_nowait()
                        async with http.post(url, json=update(n), headers=headers) as resp:
                            if resp.status != 200:
                                failures += 1

                connector = aiohttp.TCPConnector(limit=connections)
                async with aiohttp.ClientSession(connector=connector) as http:
                    started = time.perf_counter()
                    await asyncio.gather(*(worker(http) for _ in range(connections)))
                    elapsed = time.perf_counter() - started
                stored = (await js.stream_info(subjects.STREAM_INBOUND)).state.messages
            finally:
                if gateway.returncode is None:
                    gateway.terminate()
                await gateway.wait()
                await sandbox.stop()
                await nc.close()
        print(f"{count} updates over {connections} connections in {elapsed:.2f}s")
        print(f"durable ingest: {count / elapsed:,.0f} updates/s (target >= 2,000)")
        print(f"non-200 answers: {failures}; updates in BOTBUS_IN: {stored}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=40)
    args = parser.parse_args()
    # The load generator must not be the bottleneck: give it the fast event loop too.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(args.updates, args.connections))
