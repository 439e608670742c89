"""The botbus service SDK: declare a :class:`Service`, handle with a :class:`Context`.

See docs/writing-a-service.md and services/echo for the template.
"""

from __future__ import annotations

from botbus.auth import Grants
from botbus.service._app import ServiceApp
from botbus.service._context import Context
from botbus.service._declare import Command, Service
from botbus.service._discovery import (
    ENTRY_POINT_GROUP,
    declared_grants,
    installed_services,
    load_service,
)
from botbus.service._host import App
from botbus.service._logging import JsonFormatter, configure_logging
from botbus.service._micro import META_COMMANDS, META_DESCRIPTION, META_INSTANCE, META_LISTENS
from botbus.service._outcomes import Ack, HandlerResult, Outcome, Refuse, Reject, Retry
from botbus.service._runner import serve
from botbus.service._settings import ServiceSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "META_COMMANDS",
    "META_DESCRIPTION",
    "META_INSTANCE",
    "META_LISTENS",
    "Ack",
    "App",
    "Command",
    "Context",
    "Grants",
    "HandlerResult",
    "JsonFormatter",
    "Outcome",
    "Refuse",
    "Reject",
    "Retry",
    "Service",
    "ServiceApp",
    "ServiceSettings",
    "configure_logging",
    "declared_grants",
    "installed_services",
    "load_service",
    "serve",
]
