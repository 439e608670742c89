"""Fixtures of the sandbox tests: a server, one bot, a PTB Bot and a user-side client."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import telegram

from botbus.sandbox import Limits, SandboxBot, SandboxClient, SandboxServer

USER = 1001


@dataclass
class World:
    """Everything one test needs: the server, a registered bot, both sides."""

    server: SandboxServer
    bot: SandboxBot
    ptb: telegram.Bot
    client: SandboxClient

    async def user_says(self, text: str, *, user: int = USER, chat_id: int | None = None) -> int:
        """A user writes ``text``; returns the update_id."""
        sent = await self.client.send_text(self.bot.id, text, user=user, chat_id=chat_id)
        return int(sent["update_id"])


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """A sandbox with flood limits off (limit tests turn them on) and one bot."""
    server = SandboxServer(Limits(enabled=False), webhook_retry_delay=0.05)
    await server.start()
    bot = server.add_bot(username="sandbox_test_bot")
    ptb = telegram.Bot(bot.token, base_url=server.api_url, base_file_url=server.file_url)
    client = SandboxClient(server.base_url)
    try:
        async with ptb:
            yield World(server, bot, ptb, client)
    finally:
        await client.close()
        await server.stop()


def png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
