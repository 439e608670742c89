"""The gateway: the only process holding the bot token.

Telegram updates come in (long polling, or a webhook), are normalised into
:mod:`botbus.models` and published durably to JetStream; services' outbound
actions are relayed back to Telegram, each once. See ``docs/gateway.md``.
"""

from __future__ import annotations

from botbus.gateway.app import Gateway
from botbus.gateway.scheduler import Budget, OutboundScheduler
from botbus.gateway.sender import OutboundJob, Outcome, Sender

__all__ = ["Budget", "Gateway", "OutboundJob", "OutboundScheduler", "Outcome", "Sender"]
