"""What a handler, a hook or a lifespan sees of the running instance: the :class:`App` protocol.

:class:`~botbus.service.ServiceApp` implements it. The declaration
(``_declare``) and the per-message context (``_context``) depend on this
protocol rather than on ``ServiceApp`` itself, so the SDK's modules import
each other in one direction only.
"""

from __future__ import annotations

from typing import Any, Protocol

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from botbus.i18n import Catalog
from botbus.models import Action
from botbus.settings import Settings


class App(Protocol):
    """A running instance of a service."""

    @property
    def instance_id(self) -> str:
        """Unique id of this instance (micro id, logs)."""

    @property
    def service_name(self) -> str:
        """The service's name."""

    @property
    def settings(self) -> Settings:
        """The settings the instance started with."""

    @property
    def nc(self) -> Client:
        """The NATS connection."""

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""

    @property
    def catalog(self) -> Catalog | None:
        """The service's message catalogue (``ctx.t(id)``), if it declared ``locales``."""

    @property
    def state(self) -> Any:
        """What the service's lifespans yielded (``None`` without one)."""

    async def kv(self, suffix: str = "") -> KeyValue:
        """The service's KV bucket ``svc_<name>[_<suffix>]``, provisioned on first use."""

    def dedupe_id(self, key: str) -> str:
        """The ``Nats-Msg-Id`` to publish an outbound action with idempotency key ``key``
        under (what :meth:`publish` uses; for services that publish actions themselves)."""

    async def publish(self, action: Action) -> None:
        """Store an outbound action in JetStream (deduped by its idempotency key)."""
