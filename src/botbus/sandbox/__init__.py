"""The sandbox: a local emulator of the Telegram Bot API, and its user-side client.

Bots (python-telegram-bot, the gateway, anything speaking the Bot API) call
``SandboxServer.api_url``; people, tests and benchmarks act as Telegram users
through :class:`SandboxClient` (HTTP, under ``/sandbox``).
"""

from __future__ import annotations

from botbus.sandbox._errors import ApiError, SandboxBusy, SandboxError, UserApiError
from botbus.sandbox._limits import Limits
from botbus.sandbox._persist import running_url
from botbus.sandbox._server import SandboxServer
from botbus.sandbox._state import SandboxBot
from botbus.sandbox.client import SandboxClient

__all__ = [
    "ApiError",
    "Limits",
    "SandboxBot",
    "SandboxBusy",
    "SandboxClient",
    "SandboxError",
    "SandboxServer",
    "UserApiError",
    "running_url",
]
