"""The :class:`Service` declaration: name, commands, handlers, lifespans, streams.

A ``Service`` only describes; :class:`~botbus.service.ServiceApp` runs it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from nats.js.api import DeliverPolicy
from pydantic import BaseModel

from botbus import subjects
from botbus.auth import Grants, check_service_name
from botbus.errors import ConfigError
from botbus.i18n import Catalog
from botbus.models import (
    DeliveryEvent,
    ForgetUser,
    InboundCallback,
    InboundCommand,
    InboundMessage,
)
from botbus.provision import StreamRequest, stream_request
from botbus.service._context import Context
from botbus.service._host import App
from botbus.service._lifespan import LifespanFunction
from botbus.service._micro import META_COMMANDS, META_LISTENS
from botbus.service._outcomes import HandlerResult
from botbus.subjects import service_bucket

if TYPE_CHECKING:
    from botbus.settings import Settings

# A handler returns an outcome (Ack, Retry, Reject, Refuse), a text (sent as
# the reply), or None (done).
CommandHandler = Callable[[Context[Any], InboundCommand], Awaitable[HandlerResult]]
MessageHandler = Callable[[Context[Any], InboundMessage], Awaitable[HandlerResult]]
CallbackHandler = Callable[[Context[Any], InboundCallback], Awaitable[HandlerResult]]
ForgetHandler = Callable[[Context[Any], ForgetUser], Awaitable[HandlerResult]]
DeliveryHandler = Callable[[Context[Any], DeliveryEvent], Awaitable[HandlerResult]]
LifecycleHook = Callable[[App], Awaitable[None]]
M = TypeVar("M", bound=BaseModel)
L = TypeVar("L", bound=LifespanFunction)
ConsumeHandler = Callable[[Context[Any], M], Awaitable[HandlerResult]]

_SUFFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,31}\Z")
DEFAULT_MAX_DELIVERIES = 5  # attempts before a message is dead-lettered
DEFAULT_RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0)  # seconds before attempt 2, 3, 4, 5...
DEFAULT_CONCURRENCY = 8  # messages handled at once per instance
DEFAULT_ACK_WAIT = 30.0  # seconds before the server redelivers an unacked message


@dataclass(frozen=True)
class Command:
    """A command a service owns, with its help text in each language."""

    name: str
    description: dict[str, str]
    admin_only: bool
    handler: CommandHandler

    def advertised(self) -> dict[str, Any]:
        """The entry of this command in the ``botbus.commands`` metadata."""
        return {
            "command": self.name,
            "description": self.description,
            "admin_only": self.admin_only,
        }


@dataclass(frozen=True)
class OwnStream:
    """A stream the service owns (``service.stream``): provisioned at start-up."""

    name: str
    """``svc_<service>`` or ``svc_<service>_<suffix>``."""
    suffix: str
    request: StreamRequest
    """What the SDK asks the provisioner for (subjects, limits, schedules...)."""

    @property
    def subjects(self) -> tuple[str, ...]:
        """The stream's subjects, all under ``<service>.``."""
        return tuple(self.request.subjects)


@dataclass(frozen=True)
class Consumer:
    """A stream the service consumes with ``@service.consume``: where, as what, by whom."""

    name: str
    """The micro endpoint its statistics are reported under (the handler's name)."""
    stream: str
    subject: str
    model: type[BaseModel]
    durable: str
    handler: ConsumeHandler[Any]
    deliver_policy: DeliverPolicy
    ack_wait: float | None
    max_batch: int | None


class Service:
    """A botbus service: declare commands and handlers, then :meth:`run`.

    ``max_deliveries`` bounds the attempts of a failing message (then it is
    dead-lettered and the user told); ``retry_delays`` are the pauses before
    each retry (the last repeats); ``concurrency`` is how many messages one
    instance handles at once; ``ack_wait`` how long the server waits before
    redelivering a message whose instance went silent (handlers running
    longer are kept alive with in-progress acks). ``locales`` names the
    package whose ``locales/<language>.toml`` files hold the service's texts
    (``ctx.t("id")``); pass ``__package__``. ``grants`` is what its identity
    needs beyond its own name and declared streams (:class:`botbus.auth.Grants`,
    e.g. publishing into another service's subjects).
    """

    def __init__(
        self,
        name: str,
        version: str,
        description: dict[str, str] | None = None,
        *,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
        concurrency: int = DEFAULT_CONCURRENCY,
        ack_wait: float = DEFAULT_ACK_WAIT,
        locales: str | None = None,
        grants: Grants | None = None,
    ) -> None:
        try:
            check_service_name(name)  # one token, no "_", not a name botbus reserves
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if max_deliveries < 1 or concurrency < 1 or ack_wait <= 0:
            raise ValueError("max_deliveries and concurrency must be >= 1, ack_wait > 0")
        self.name = name
        self.version = version
        self.max_deliveries = max_deliveries
        self.retry_delays = retry_delays or (0.0,)
        self.concurrency = concurrency
        self.ack_wait = ack_wait
        self.locales = locales
        self._catalog: Catalog | None = None
        self.description = dict(description) if description else self._translations("description")
        if "en" not in self.description:
            raise ValueError("the service description needs at least an English text ('en')")
        self._grants = grants or Grants()
        self.commands: dict[str, Command] = {}
        self.message_handler: MessageHandler | None = None
        self.callback_handler: CallbackHandler | None = None
        self.forget_handler: ForgetHandler | None = None
        self.delivery_handler: DeliveryHandler | None = None
        self.consumers: list[Consumer] = []
        self.streams: list[OwnStream] = []
        self.lifespans: list[LifespanFunction] = []
        self.startup_hooks: list[LifecycleHook] = []
        self.shutdown_hooks: list[LifecycleHook] = []

    @property
    def grants(self) -> Grants:
        """What its identity must allow beyond its name: declared grants, plus the
        suffixes of its streams and buckets (written into its credentials when issued)."""
        suffixes = tuple(s.suffix for s in self.streams if s.suffix)
        return self._grants.merged(Grants(resources=suffixes, listens=self.listens))

    # -- declaration --------------------------------------------------------------

    def command(
        self,
        name: str,
        *,
        en: str | None = None,
        es: str | None = None,
        admin_only: bool = False,
    ) -> Callable[[CommandHandler], CommandHandler]:
        """Register ``/name``; help text: ``en``/``es``, else the catalogue's ``cmd_<name>``."""
        if not subjects.is_valid_name(name):
            raise ValueError(f"invalid command name {name!r}: use lowercase letters, digits, '_'")
        if name in subjects.BUILTIN_COMMANDS:
            raise ValueError(
                f"command /{name} is built into the gateway and cannot be a service's; "
                "choose another name"
            )
        if name in self.commands:
            raise ValueError(f"command /{name} is registered twice in service {self.name}")

        description = {"en": en, "es": es or en} if en else self._translations(f"cmd_{name}")

        def register(handler: CommandHandler) -> CommandHandler:
            self.commands[name] = Command(name, description, admin_only, handler)
            return handler

        return register

    def on_message(self, handler: MessageHandler) -> MessageHandler:
        """Receive every plain message (this service joins the fan-out)."""
        self.message_handler = handler
        return handler

    def on_callback(self, handler: CallbackHandler) -> CallbackHandler:
        """Receive presses of buttons made with ``ctx.button``."""
        self.callback_handler = handler
        return handler

    def on_forget(self, handler: ForgetHandler) -> ForgetHandler:
        """Receive ``/forgetme`` events: delete what the service stores about the user."""
        self.forget_handler = handler
        return handler

    def on_delivery(self, handler: DeliveryHandler) -> DeliveryHandler:
        """Receive permanent delivery refusals of this service's actions, and the
        receipts (``status="sent"``) of replies sent with ``receipt=True``."""
        self.delivery_handler = handler
        return handler

    def stream(self, suffix: str = "", *, subjects: list[str], **options: Any) -> str:
        """Declare a stream this service owns; return its name, ``svc_<name>[_<suffix>]``.

        Its subjects must lie under ``<name>.``: a service owns the subjects
        ``<name>.>`` and the streams and buckets named ``svc_<name>...``, and
        nothing else (issued credentials confine it to exactly that). At
        start-up the SDK asks the core's provisioner (:mod:`botbus.provision`,
        run by the gateway) to create the stream (file storage, replicated on
        a cluster) or bring its limits up to date; ``options`` are the
        ``StreamConfig`` fields it accepts (``max_age``, ``max_bytes``,
        ``max_msgs``, ``max_msgs_per_subject``, ``max_msg_size``, ``discard``,
        ``retention``, ``storage``, ``duplicate_window``, ``allow_msg_ttl``,
        ``allow_msg_schedules``, ``description``); any other raises ``ValueError``.
        """
        if suffix and not _SUFFIX_RE.match(suffix):
            raise ValueError(f"invalid stream suffix {suffix!r}: use lowercase letters and digits")
        name = service_bucket(self.name, suffix)
        for subject in subjects:
            if subject.split(".")[0] != self.name or subject == self.name:
                raise ValueError(
                    f"stream {name}: subject {subject!r} is not under {self.name}.> "
                    f"(service {self.name} owns only the subjects {self.name}.>)"
                )
        if any(s.name == name for s in self.streams):
            raise ValueError(f"stream {name} is declared twice in service {self.name}")
        options.setdefault("description", f"{self.name}: {suffix or 'main'} stream")
        self.streams.append(OwnStream(name, suffix, stream_request(name, subjects, **options)))
        return name

    def consume(
        self,
        *,
        stream: str,
        subject: str,
        model: type[M],
        durable: str | None = None,
        deliver: Literal["new", "all"] = "all",
        ack_wait: float | None = None,
        max_batch: int | None = None,
    ) -> Callable[[ConsumeHandler[M]], ConsumeHandler[M]]:
        """Handle every message on ``subject`` of ``stream``, decoded as ``model``.

        The messages get what commands get: a durable consumer shared by the
        service's instances (``durable``, by default ``<service>_<handler>``),
        explicit acks, the handler's outcome (``Ack``, ``Retry``, ``Reject``;
        an exception retries), dead letters after ``max_deliveries`` and
        statistics under the handler's name. ``deliver="all"`` starts a new
        consumer at the stream's first message, ``"new"`` at the next one;
        ``ack_wait`` (seconds) and ``max_batch`` override the service's for
        handlers that run long or should hold few messages at once.
        """

        def register(handler: ConsumeHandler[M]) -> ConsumeHandler[M]:
            endpoint = handler.__name__
            name = durable or f"{self.name}_{endpoint}"
            if not subjects.is_valid_name(name):
                raise ValueError(
                    f"invalid consumer name {name!r}: pass durable= with lowercase letters, "
                    "digits and '_'"
                )
            if any(c.durable == name or c.name == endpoint for c in self.consumers):
                raise ValueError(f"{endpoint} / {name} is consumed twice in service {self.name}")
            self.consumers.append(
                Consumer(
                    name=endpoint,
                    stream=stream,
                    subject=subject,
                    model=model,
                    durable=name,
                    handler=handler,
                    deliver_policy=DeliverPolicy.ALL if deliver == "all" else DeliverPolicy.NEW,
                    ack_wait=ack_wait,
                    max_batch=max_batch,
                )
            )
            return handler

        return register

    def lifespan(self, function: L) -> L:
        """Declare per-instance state: an async generator taking the app, yielding once.

        ::

            @service.lifespan
            async def index(app: App) -> AsyncIterator[SearchState]:
                state = SearchState(await open_index(app.settings))
                try:
                    yield state          # handlers read it as ctx.state
                finally:
                    await state.close()

        Lifespans are entered in declaration order when an instance starts
        (after connecting, before consuming) and exited in reverse when it
        stops, after in-flight work finished; if one fails to start, the
        ones before it are exited before the instance gives up.
        """
        self.lifespans.append(function)
        return function

    def on_startup(self, hook: LifecycleHook) -> LifecycleHook:
        """Run ``hook(app)`` once per instance after connecting, before consuming."""
        self.startup_hooks.append(hook)
        return hook

    def on_shutdown(self, hook: LifecycleHook) -> LifecycleHook:
        """Run ``hook(app)`` once per instance after in-flight work finished."""
        self.shutdown_hooks.append(hook)
        return hook

    @property
    def catalog(self) -> Catalog | None:
        """The message catalogue in ``<locales>/locales/*.toml`` (read on first use)."""
        if self._catalog is None and self.locales is not None:
            self._catalog = Catalog.load(self.locales)
        return self._catalog

    def _translations(self, msg_id: str) -> dict[str, str]:
        """``msg_id`` in every language of the catalogue (help texts, description)."""
        catalog = self.catalog
        if catalog is None:
            raise ValueError(
                f"service {self.name}: give the {msg_id} text (en=...), or a catalogue "
                "(locales=__package__) holding it"
            )
        return {lang: catalog.text(lang, msg_id) for lang in catalog.languages}

    # -- introspection --------------------------------------------------------------

    @property
    def listens(self) -> bool:
        """True if the service receives every plain message."""
        return self.message_handler is not None

    def metadata(self) -> dict[str, str]:
        """The service-level micro metadata the gateway reads."""
        return {
            META_COMMANDS: json.dumps(
                [c.advertised() for c in self.commands.values()], ensure_ascii=False
            ),
            META_LISTENS: "true" if self.listens else "false",
        }

    def retry_delay(self, deliveries: int) -> float:
        """Seconds to wait before retrying a message that failed on attempt ``deliveries``."""
        return self.retry_delays[min(deliveries, len(self.retry_delays)) - 1]

    # -- running --------------------------------------------------------------------

    def run(self, settings: Settings | None = None) -> None:
        """Run this service until SIGTERM/SIGINT, then exit (0 after a clean drain)."""
        # Imported here, not at the top: the runner builds on this declaration.
        from botbus.service._runner import main

        main(self, settings)
