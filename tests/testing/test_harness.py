"""botbus.testing: a service tested against a real broker in a few lines."""

from __future__ import annotations

import pytest

from botbus.service import Context, Service
from botbus.testing import ServiceHarness
from services.echo.service import service as echo


async def test_a_command_gets_the_services_reply() -> None:
    async with ServiceHarness(echo) as bus:
        reply = await bus.command("/echo hello there", chat_id=7)
        assert reply.text == "hello there"
        assert reply.actions[0].chat_id == 7


async def test_a_service_with_no_reply_fails_the_wait_clearly() -> None:
    quiet = Service("quiet", "1.0.0", {"en": "says nothing"})

    @quiet.command("hush", en="Say nothing")
    async def hush(ctx: Context, cmd: object) -> None:
        return None

    async with ServiceHarness(quiet) as bus:
        with pytest.raises(AssertionError, match="published no action within 1s"):
            await bus.command("/hush", timeout=1.0)
