"""``botbus up --cluster 3``: three local nats-servers, replicated streams, /echo works."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import nats
import pytest

from botbus import subjects
from botbus.connect import connect_options, server_list
from botbus.sandbox import SandboxClient
from botbus.settings import load_settings
from tests.gateway.factories import message_texts
from tests.gateway.test_supervisor import read_output, spawn_up


@pytest.mark.slow
async def test_up_with_a_cluster_of_three(tmp_path: Path) -> None:
    env = dict(os.environ)
    for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL", "BOTBUS_WEBHOOK_URL", "NATS_URL"):
        env.pop(name, None)
    env.update(BOTBUS_DATA_DIR=str(tmp_path / "data"), BOTBUS_GATEWAY_HTTP="127.0.0.1:0")
    proc = await spawn_up(
        env, tmp_path, "--cluster", "3", "--services", "echo", "--sandbox-port", "0"
    )
    lines: list[str] = []
    running = asyncio.Event()
    assert proc.stdout is not None
    reader = asyncio.create_task(read_output(proc.stdout, lines, running))
    try:
        async with asyncio.timeout(30):
            await running.wait()
        state = json.loads((tmp_path / "data" / "up.json").read_text())
        urls = server_list(state["nats_url"])
        assert len(urls) == 3
        base_url = state["telegram_api_url"].removesuffix("/bot")
        async with SandboxClient(base_url) as user:
            [bot] = await user.bots()
            sent = await user.send_text(bot.id, "/echo over three nodes")
            events = await user.wait_for(bot.id, sent["chat_id"], timeout=30)
            assert message_texts(events) == ["over three nodes"]
        admin = connect_options(
            load_settings(_env_file=None, BOTBUS_DATA_DIR=str(tmp_path / "data")), "admin"
        )
        nc = await nats.connect(urls, **admin)
        try:
            info = await nc.jetstream().stream_info(subjects.STREAM_INBOUND)
            assert info.config.num_replicas == 3
        finally:
            await nc.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
            await reader
    text = "\n".join(lines)
    assert proc.returncode == 0, text[-2000:]
    assert "JetStream cluster of 3 nats-servers" in text
