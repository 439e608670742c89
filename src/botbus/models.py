"""Every payload on the bus, as a frozen pydantic v2 model.

Publisher and subscriber share these classes, so the wire format is defined
once. JSON is the encoding (:func:`encode` / :func:`decode_inbound` /
:func:`decode_action`). Write strictly, read tolerantly: building a model in
code refuses a field it does not know (a typo never reaches the bus), while
the ``decode_*`` functions ignore fields they do not know and accept any
``schema_version``, so a newer gateway can add a field its older services do
not read yet, and the reverse: parts of the bus upgrade one at a time. A
change that older readers would misread needs a new subject, not a new field.

Inbound (gateway -> services): :class:`InboundMessage`, :class:`InboundCommand`,
:class:`InboundCallback`, discriminated by ``kind`` (:data:`Inbound`).

Outbound (services -> gateway): :class:`SendText`, :class:`EditText`,
:class:`AnswerCallback`, :class:`SendPhoto`, :class:`SendChatAction`,
:class:`DeleteMessage`, discriminated by ``kind`` (:data:`Action`).

Events: :class:`ForgetUser`, :class:`DeliveryEvent`, :class:`DeadLetter`,
:class:`Alert`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    Base64Bytes,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from botbus.errors import PayloadError

SCHEMA_VERSION: Literal[1] = 1

# Telegram's own limits, enforced where the data is built.
MAX_CALLBACK_DATA_BYTES = 64
MAX_MESSAGE_TEXT = 4096  # characters, after entity parsing
MAX_CAPTION = 1024
MAX_INBOUND_TEXT = 4096

Priority = Literal["interactive", "bulk"]
ChatType = Literal["private", "group", "supergroup", "channel"]
ParseMode = Literal["HTML", "MarkdownV2"]


def _now() -> datetime:
    return datetime.now(UTC)


# Validation context of the decode_* functions: unknown fields are dropped, not refused.
_TOLERANT = {"tolerant": True}


class _Strict(BaseModel):
    """Frozen; refuses unknown fields except when decoded from the bus (see the module)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_fields(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and not (info.context or {}).get("tolerant"):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(unknown)} for {cls.__name__}")
        return data


class BusModel(_Strict):
    """Base of every bus payload: frozen, with the schema version it was written in."""

    # Written as 1; any later version is read (its extra fields are ignored).
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)


class Part(_Strict):
    """A value object nested inside a bus payload."""


# -- people and places ------------------------------------------------------


class User(Part):
    """Who wrote: Telegram's user, platform-neutral."""

    id: int
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False

    @property
    def display_name(self) -> str:
        """A name to show in replies."""
        full = " ".join(p for p in (self.first_name, self.last_name) if p)
        return full or (f"@{self.username}" if self.username else str(self.id))


class Chat(Part):
    """Where it was written."""

    id: int
    type: ChatType = "private"
    title: str | None = None

    @property
    def is_group(self) -> bool:
        """True for groups and supergroups."""
        return self.type in ("group", "supergroup")


# -- inbound -----------------------------------------------------------------


class InboundBase(BusModel):
    """Fields common to everything a user does.

    ``correlation_id`` is ``"<bot_id>:<update_id>"``: unique per bot, used as
    the JetStream message id (dedupe) and echoed by every action answering it.
    ``language`` is the user's preferred language as the gateway resolved it
    (``/language`` setting, else language_code, else "en").
    ``user`` is who wrote; for a message sent on behalf of a chat (an
    anonymous group admin, a member posting as a channel) that chat, with its
    negative id and its title as ``first_name``.
    ``is_admin``: the user is one of the *bot's* admins (``BOTBUS_ADMIN_IDS``).
    ``chat_admin``: the user administers *this chat* — always True in a private
    chat; in a group, Telegram's owner/administrator status as the gateway read
    it with getChatAdministrators (cached for about a minute). The gateway
    resolves it for commands and callbacks only: on a plain group message it is
    False, so do not rely on it there. An admin writing anonymously (as the
    group) is a chat admin.
    """

    correlation_id: str = Field(min_length=1, max_length=64)
    bot_id: int
    update_id: int
    chat: Chat
    user: User
    # A language code the gateway has texts for ("en", "es", ... one file each).
    language: str = Field(default="en", pattern=r"^[a-z]{2,3}$")
    date: datetime = Field(default_factory=_now)
    is_admin: bool = False  # user id is in the gateway's admin list
    chat_admin: bool = False  # the user administers this chat (see the class docstring)
    message_thread_id: int | None = None  # the forum topic it came from; replies go there


class InboundMessage(InboundBase):
    """A plain text message, fanned out to every listening service."""

    kind: Literal["message"] = "message"
    message_id: int
    text: str = Field(max_length=MAX_INBOUND_TEXT)
    edited: bool = False
    reply_to_message_id: int | None = None


class InboundCommand(InboundBase):
    """``/command args``, routed to the service owning ``command``."""

    kind: Literal["command"] = "command"
    message_id: int
    service: str
    command: str
    args: str = Field(default="", max_length=MAX_INBOUND_TEXT)

    @property
    def argv(self) -> list[str]:
        """The arguments split on whitespace."""
        return self.args.split()


class InboundCallback(InboundBase):
    """An inline-button press; ``data`` is the part after ``"<service>:"``."""

    kind: Literal["callback"] = "callback"
    callback_query_id: str
    message_id: int | None = None  # None for buttons on inline-mode messages
    service: str
    data: str = Field(max_length=MAX_CALLBACK_DATA_BYTES)


Inbound = Annotated[InboundMessage | InboundCommand | InboundCallback, Field(discriminator="kind")]

# -- outbound ----------------------------------------------------------------


class InlineButton(Part):
    """One inline-keyboard button: either callback data or a URL."""

    text: str = Field(min_length=1, max_length=64)
    callback_data: str | None = None
    url: str | None = None

    @field_validator("callback_data")
    @classmethod
    def _callback_fits(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value.encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise ValueError(
                f"callback_data must be 1-{MAX_CALLBACK_DATA_BYTES} bytes in UTF-8, "
                f"got {len(value.encode())}"
            )
        return value


class InlineKeyboard(Part):
    """Rows of inline buttons under a message."""

    rows: list[list[InlineButton]] = Field(default_factory=list)


class ActionBase(BusModel):
    """Fields common to every outbound action.

    ``correlation_id`` is the inbound it answers (None for unsolicited traffic
    such as alerts). ``idempotency_key`` makes a redelivered action a no-op at
    the gateway. ``service`` is the owner, told about permanent refusals.
    """

    service: str
    chat_id: int
    idempotency_key: str = Field(min_length=1, max_length=128)
    correlation_id: str | None = None
    priority: Priority = "interactive"


class SendText(ActionBase):
    """sendMessage. Texts longer than 4096 characters are split by the gateway."""

    kind: Literal["send_text"] = "send_text"
    text: str = Field(min_length=1, max_length=64 * MAX_MESSAGE_TEXT)
    parse_mode: ParseMode | None = None
    keyboard: InlineKeyboard | None = None
    reply_to_message_id: int | None = None
    message_thread_id: int | None = None  # a forum topic; set only in forum supergroups
    disable_link_preview: bool = True
    # Ask for a DeliveryEvent "sent" carrying the new message's id (e.g. a game board
    # the service will edit later without a button press telling it the id).
    receipt: bool = False


class EditText(ActionBase):
    """editMessageText, optionally replacing the keyboard."""

    kind: Literal["edit_text"] = "edit_text"
    message_id: int
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_TEXT)
    parse_mode: ParseMode | None = None
    keyboard: InlineKeyboard | None = None


class AnswerCallback(ActionBase):
    """answerCallbackQuery: stops the spinner, optionally with a notice."""

    kind: Literal["answer_callback"] = "answer_callback"
    callback_query_id: str
    text: str | None = Field(default=None, max_length=200)
    show_alert: bool = False


class SendPhoto(ActionBase):
    """sendPhoto with the image bytes (base64 in JSON)."""

    kind: Literal["send_photo"] = "send_photo"
    photo: Base64Bytes
    filename: str = "image.png"
    caption: str | None = Field(default=None, max_length=MAX_CAPTION)
    parse_mode: ParseMode | None = None
    message_thread_id: int | None = None


class SendChatAction(ActionBase):
    """sendChatAction ("typing", "upload_photo", ...)."""

    kind: Literal["chat_action"] = "chat_action"
    action: Literal["typing", "upload_photo", "upload_document", "find_location"] = "typing"
    message_thread_id: int | None = None


class DeleteMessage(ActionBase):
    """deleteMessage."""

    kind: Literal["delete"] = "delete"
    message_id: int


Action = Annotated[
    SendText | EditText | AnswerCallback | SendPhoto | SendChatAction | DeleteMessage,
    Field(discriminator="kind"),
]

# -- events ------------------------------------------------------------------


class ForgetUser(BusModel):
    """``/forgetme``: every service storing data about ``user_id`` deletes it."""

    kind: Literal["forget"] = "forget"
    user_id: int
    chat_id: int | None = None
    correlation_id: str
    date: datetime = Field(default_factory=_now)


class DeliveryEvent(BusModel):
    """Telegram refused an action for good (blocked bot, chat gone, ...), or, for a
    ``SendText`` that asked for a ``receipt``, accepted it: ``status="sent"`` with
    the ``message_id`` of the (last) message it became."""

    kind: Literal["delivery"] = "delivery"
    service: str
    chat_id: int
    idempotency_key: str
    correlation_id: str | None = None
    status: Literal["refused", "sent"] = "refused"
    error_code: int = 0
    description: str = ""
    message_id: int | None = None
    date: datetime = Field(default_factory=_now)


class DeadLetter(BusModel):
    """A message a service gave up on after its bounded deliveries."""

    kind: Literal["dead_letter"] = "dead_letter"
    service: str
    subject: str
    deliveries: int
    error: str
    payload: str  # the raw payload, decoded as UTF-8 with replacement
    correlation_id: str | None = None
    date: datetime = Field(default_factory=_now)


class Alert(BusModel):
    """An alert published to a channel by another program."""

    title: str = Field(min_length=1, max_length=256)
    text: str = Field(default="", max_length=3000)
    url: str | None = Field(default=None, max_length=2048)
    severity: Literal["info", "warning", "critical"] = "info"
    dedupe_key: str | None = Field(default=None, max_length=128)


class OutboundStatus(BusModel):
    """The gateway's outbound scheduler right now: its reply on ``GATEWAY_STATUS``."""

    queued_interactive: int  # jobs waiting, interactive lane
    queued_bulk: int  # jobs waiting, bulk lane
    in_flight: int
    sent_total: int
    sends_per_second: float  # over the last few seconds
    budget_per_second: float
    rate_limited_total: int  # 429 answers from Telegram
    retries_total: int
    permanent_failures_total: int  # refused for good (blocked, chat not found, ...)
    gave_up_total: int
    paused_chats: int  # chats held back by a 429 right now


Event = Annotated[ForgetUser | DeliveryEvent, Field(discriminator="kind")]

# -- encoding ----------------------------------------------------------------

_inbound_adapter: TypeAdapter[InboundMessage | InboundCommand | InboundCallback] = TypeAdapter(
    Inbound
)
_action_adapter: TypeAdapter[
    SendText | EditText | AnswerCallback | SendPhoto | SendChatAction | DeleteMessage
] = TypeAdapter(Action)
_event_adapter: TypeAdapter[ForgetUser | DeliveryEvent] = TypeAdapter(Event)

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    """The JSON bytes of a bus payload."""
    return model.model_dump_json(exclude_none=False).encode()


def _payload_error(exc: ValidationError, subject: str) -> PayloadError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    where = f" on {subject}" if subject else ""
    if first["type"] == "json_invalid":
        return PayloadError(f"invalid payload{where}: not valid JSON", field="", subject=subject)
    return PayloadError(
        f"invalid payload{where}: field {field!r}: {first['msg']}", field=field, subject=subject
    )


def _decode(adapter: TypeAdapter[Any], data: bytes | str, subject: str) -> Any:
    try:
        return adapter.validate_json(data, context=_TOLERANT)
    except ValidationError as exc:
        raise _payload_error(exc, subject) from exc


def decode_inbound(
    data: bytes | str, subject: str = ""
) -> InboundMessage | InboundCommand | InboundCallback:
    """Decode an inbound payload; :class:`PayloadError` names the bad field."""
    result: InboundMessage | InboundCommand | InboundCallback = _decode(
        _inbound_adapter, data, subject
    )
    return result


def decode_action(
    data: bytes | str, subject: str = ""
) -> SendText | EditText | AnswerCallback | SendPhoto | SendChatAction | DeleteMessage:
    """Decode an outbound action; :class:`PayloadError` names the bad field."""
    result: SendText | EditText | AnswerCallback | SendPhoto | SendChatAction | DeleteMessage = (
        _decode(_action_adapter, data, subject)
    )
    return result


def decode_event(data: bytes | str, subject: str = "") -> ForgetUser | DeliveryEvent:
    """Decode an event payload; :class:`PayloadError` names the bad field."""
    result: ForgetUser | DeliveryEvent = _decode(_event_adapter, data, subject)
    return result


def decode_as(model: type[M], data: bytes | str, subject: str = "") -> M:
    """Decode ``data`` as one specific model (tolerantly, as every ``decode_*``)."""
    try:
        return model.model_validate_json(data, context=_TOLERANT)
    except ValidationError as exc:
        raise _payload_error(exc, subject) from exc
