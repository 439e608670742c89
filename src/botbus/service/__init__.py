"""The botbus service SDK: declare a :class:`Service`, handle with a :class:`Context`.

See docs/writing-a-service.md and services/echo for the template.
"""

from __future__ import annotations

from botbus.service._app import ServiceApp
from botbus.service._context import Context
from botbus.service._logging import JsonFormatter, configure_logging
from botbus.service._micro import META_COMMANDS, META_DESCRIPTION, META_INSTANCE, META_LISTENS
from botbus.service._runner import serve
from botbus.service._service import Command, Service

__all__ = [
    "META_COMMANDS",
    "META_DESCRIPTION",
    "META_INSTANCE",
    "META_LISTENS",
    "Command",
    "Context",
    "JsonFormatter",
    "Service",
    "ServiceApp",
    "configure_logging",
    "serve",
]
