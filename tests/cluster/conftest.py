"""The cluster tests reuse the gateway tests' sandbox, bot and user fixtures."""

from __future__ import annotations

from tests.gateway.conftest import bot, quiet_sandbox, user

__all__ = ["bot", "quiet_sandbox", "user"]
