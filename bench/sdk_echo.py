"""Throughput of the service SDK: N /echo commands through one in-process echo.

Prints commands/s from the first publish to the last stored reply, and the
publish-to-stored latency percentiles. Run: .venv/bin/python bench/sdk_echo.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats

from botbus import subjects
from botbus.models import InboundCommand, decode_action, encode
from botbus.natsserver import NatsServer
from botbus.service import ServiceApp
from botbus.settings import load_settings
from botbus.topology import ensure_topology
from services.echo.service import service

COMMANDS = 2000


def command(i: int) -> InboundCommand:
    return InboundCommand.model_validate(
        {
            "correlation_id": f"1:{i}",
            "bot_id": 1,
            "update_id": i,
            "chat": {"id": i % 50},
            "user": {"id": i % 50},
            "message_id": i,
            "service": "echo",
            "command": "echo",
            "args": f"message {i}",
        }
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(_env_file=None, BOTBUS_DATA_DIR=tmp)
        async with NatsServer(Path(tmp) / "nats", settings) as server:
            admin = await nats.connect(
                server.url, user="admin", password=settings.password_for("admin")
            )
            gw = await nats.connect(
                server.url, user="gateway", password=settings.password_for("gateway")
            )
            await ensure_topology(admin.jetstream())
            sent: dict[str, float] = {}
            stored: dict[str, float] = {}
            done = asyncio.Event()

            async def on_reply(msg: nats.aio.msg.Msg) -> None:
                action = decode_action(msg.data)
                stored[action.correlation_id or ""] = time.perf_counter()
                if len(stored) == COMMANDS:
                    done.set()

            await admin.subscribe(subjects.outbound("echo"), cb=on_reply)
            js = gw.jetstream()
            async with ServiceApp(service, settings, url=server.url):
                start = time.perf_counter()
                for i in range(COMMANDS):
                    cmd = command(i)
                    sent[cmd.correlation_id] = time.perf_counter()
                    await js.publish(
                        subjects.inbound_command("echo", "echo"),
                        encode(cmd),
                        headers={"Nats-Msg-Id": cmd.correlation_id},
                    )
                await asyncio.wait_for(done.wait(), 120)
                elapsed = time.perf_counter() - start
            latencies = sorted((stored[k] - sent[k]) * 1000 for k in sent)
            q = statistics.quantiles(latencies, n=100)
            print(
                f"sdk echo: {COMMANDS} commands in {elapsed:.2f}s = {COMMANDS / elapsed:.0f} cmd/s"
            )
            print(
                f"publish->stored latency ms: p50 {q[49]:.1f}  p95 {q[94]:.1f}  "
                f"max {latencies[-1]:.1f}"
            )
            await gw.close()
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
