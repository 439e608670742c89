"""The per-message :class:`Context` handed to every handler."""

from __future__ import annotations

import base64
import logging
from collections.abc import MutableMapping, Sequence
from functools import cache
from typing import Any, Generic, Literal, cast

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError
from typing_extensions import TypeVar

from botbus.i18n import Catalog
from botbus.models import (
    MAX_CALLBACK_DATA_BYTES,
    AnswerCallback,
    DeleteMessage,
    DeliveryEvent,
    EditText,
    ForgetUser,
    InboundCallback,
    InboundCommand,
    InboundMessage,
    InlineButton,
    InlineKeyboard,
    ParseMode,
    Priority,
    SendChatAction,
    SendPhoto,
    SendText,
)
from botbus.service._host import App
from botbus.settings import Settings

Inbound = InboundMessage | InboundCommand | InboundCallback
Handled = Inbound | ForgetUser | DeliveryEvent
KeyboardLike = InlineKeyboard | Sequence[Sequence[InlineButton]] | None
ChatActionName = Literal["typing", "upload_photo", "upload_document", "find_location"]

StateT = TypeVar("StateT", default=Any)
"""The type of what the service's lifespans yield (``ctx.state``)."""


@cache
def sdk_texts() -> Catalog:
    """The SDK's own catalogue (``botbus/service/locales``), read once."""
    return Catalog.load("botbus.service")


class CorrelationLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that stamps every record with the correlation id."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge our ``extra`` fields into the record."""
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def _keyboard(keyboard: KeyboardLike) -> InlineKeyboard | None:
    if keyboard is None or isinstance(keyboard, InlineKeyboard):
        return keyboard
    return InlineKeyboard(rows=[list(row) for row in keyboard])


class Context(Generic[StateT]):
    """Everything a handler needs to answer one message.

    Each action it publishes gets the idempotency key
    ``<service>:<correlation id>:<n>`` (n counts this handler's actions), so a
    redelivered message yields the same keys and JetStream's dedupe window
    (and the gateway) send each action once.

    ``StateT`` is the type of :attr:`state`, what the service's lifespans
    yielded: annotate handlers with ``ctx: Context[MyState]``.
    """

    def __init__(
        self,
        app: App,
        inbound: Any,
        *,
        key_base: str,
        deliveries: int,
        subject: str = "",
        sequence: int = 0,
    ) -> None:
        self._app = app
        self.inbound: Any = inbound
        """The message being handled (a bus model; see the handler's second argument)."""
        self.deliveries = deliveries
        """How many times this message has been delivered (1 = first try)."""
        self.subject = subject
        """The subject the message was published on (e.g. ``alerts.news``)."""
        self.sequence = sequence
        """The message's sequence number in its stream."""
        self._key_base = key_base
        self._seq = 0
        self.answered = False
        """True once the button press being handled was answered (answerCallbackQuery)."""
        self.log = CorrelationLogger(
            logging.getLogger(f"services.{app.service_name}"),
            {"correlation_id": self.correlation_id, "service": app.service_name},
        )
        """A logger whose records carry the correlation id."""

    # -- what we are answering -------------------------------------------------

    @property
    def app(self) -> App:
        """The running service instance."""
        return self._app

    @property
    def state(self) -> StateT:
        """What the service's lifespans yielded for this instance (see ``Service.lifespan``)."""
        return cast(StateT, self._app.state)

    @property
    def service(self) -> str:
        """The service's name."""
        return self._app.service_name

    @property
    def correlation_id(self) -> str | None:
        """The correlation id of the inbound (None for events without one)."""
        return getattr(self.inbound, "correlation_id", None)

    @property
    def language(self) -> str:
        """The user's language ("en" for events)."""
        if isinstance(self.inbound, InboundMessage | InboundCommand | InboundCallback):
            return self.inbound.language
        return "en"

    @property
    def chat_id(self) -> int:
        """The chat of the inbound; events without a chat raise ``ValueError``."""
        if isinstance(self.inbound, InboundMessage | InboundCommand | InboundCallback):
            return self.inbound.chat.id
        if isinstance(self.inbound, ForgetUser | DeliveryEvent) and self.inbound.chat_id:
            return self.inbound.chat_id
        raise ValueError("this event has no chat to answer; use ctx.send(chat_id, ...)")

    @property
    def nc(self) -> Client:
        """The NATS connection."""
        return self._app.nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        return self._app.js

    @property
    def settings(self) -> Settings:
        """The settings the service started with."""
        return self._app.settings

    def t(
        self,
        msg_id: str | None = None,
        /,
        *,
        en: str | None = None,
        es: str | None = None,
        **values: object,
    ) -> str:
        """The text in the user's language.

        ``ctx.t("usage", n=3)`` reads message ``usage`` from the service's
        catalogue (``locales/<language>.toml`` in its package, see
        :mod:`botbus.i18n`), English when the user's language has no file or
        no such message. ``ctx.t(en=..., es=...)`` picks one of two inline
        texts: the older way, for services without a catalogue.
        """
        if msg_id is not None:
            catalog = self._app.catalog
            if catalog is None:
                raise RuntimeError(
                    f"ctx.t({msg_id!r}): service {self.service} has no message catalogue; "
                    "declare Service(..., locales=__package__) and add locales/en.toml"
                )
            return catalog.text(self.language, msg_id, **values)
        if en is None:
            raise TypeError("ctx.t() needs a message id, or en= (and es=) texts")
        return es if self.language == "es" and es is not None else en

    def sdk_text(self, msg_id: str, /, **values: object) -> str:
        """A text of the SDK's own catalogue (refusals, "something went wrong")."""
        return sdk_texts().text(self.language, msg_id, **values)

    async def kv(self, suffix: str = "") -> KeyValue:
        """The service's own KV bucket ``svc_<name>[_<suffix>]`` (created on demand)."""
        return await self._app.kv(suffix)

    def button(self, label: str, data: str) -> InlineButton:
        """An inline button whose presses come back to this service's ``on_callback``."""
        callback_data = f"{self.service}:{data}"
        size = len(callback_data.encode())
        if size > MAX_CALLBACK_DATA_BYTES:
            raise ValueError(
                f"callback data {callback_data!r} is {size} bytes; Telegram allows "
                f"{MAX_CALLBACK_DATA_BYTES}: shorten the data passed to ctx.button()"
            )
        try:
            return InlineButton(text=label, callback_data=callback_data)
        except ValidationError as exc:
            raise ValueError(f"invalid button {label!r}: {exc.errors()[0]['msg']}") from exc

    # -- actions ----------------------------------------------------------------

    def _next_key(self) -> str:
        self._seq += 1
        return f"{self._key_base}:{self._seq}"

    def _thread(self, chat_id: int) -> int | None:
        """The forum topic the inbound came from, for an answer to that same chat."""
        inbound = self.inbound
        if not isinstance(inbound, InboundMessage | InboundCommand | InboundCallback):
            return None
        return inbound.message_thread_id if inbound.chat.id == chat_id else None

    def _common(self, chat_id: int, priority: Priority, key: str | None = None) -> dict[str, Any]:
        return {
            "service": self.service,
            "chat_id": chat_id,
            "idempotency_key": f"{self.service}:{key}" if key else self._next_key(),
            "correlation_id": self.correlation_id,
            "priority": priority,
        }

    async def reply(
        self,
        text: str,
        *,
        keyboard: KeyboardLike = None,
        parse_mode: ParseMode | None = None,
        priority: Priority = "interactive",
        receipt: bool = False,
    ) -> SendText:
        """Send ``text`` to the inbound's chat (in groups, as a reply to the message).

        ``receipt``: once Telegram accepted it, the service's ``on_delivery`` handler
        gets a ``DeliveryEvent`` with ``status="sent"`` and the new ``message_id``.
        """
        reply_to = None
        inbound = self.inbound
        if isinstance(inbound, InboundMessage | InboundCommand) and inbound.chat.is_group:
            reply_to = inbound.message_id
        action = SendText(
            **self._common(self.chat_id, priority),
            text=text,
            parse_mode=parse_mode,
            keyboard=_keyboard(keyboard),
            reply_to_message_id=reply_to,
            message_thread_id=self._thread(self.chat_id),
            receipt=receipt,
        )
        await self._app.publish(action)
        return action

    async def send(
        self,
        chat_id: int,
        text: str,
        *,
        keyboard: KeyboardLike = None,
        parse_mode: ParseMode | None = None,
        priority: Priority = "bulk",
        key: str | None = None,
        message_thread_id: int | None = None,
    ) -> SendText:
        """Send an unsolicited message (alerts...); ``key`` overrides the idempotency key.

        ``message_thread_id``: the forum topic to post in (default: the inbound's,
        when ``chat_id`` is its chat).
        """
        action = SendText(
            **self._common(chat_id, priority, key),
            text=text,
            parse_mode=parse_mode,
            keyboard=_keyboard(keyboard),
            message_thread_id=message_thread_id or self._thread(chat_id),
        )
        await self._app.publish(action)
        return action

    async def edit(
        self,
        message_id: int,
        text: str,
        *,
        keyboard: KeyboardLike = None,
        parse_mode: ParseMode | None = None,
        chat_id: int | None = None,
    ) -> EditText:
        """Replace the text (and keyboard) of one of the bot's messages."""
        action = EditText(
            **self._common(chat_id if chat_id is not None else self.chat_id, "interactive"),
            message_id=message_id,
            text=text,
            parse_mode=parse_mode,
            keyboard=_keyboard(keyboard),
        )
        await self._app.publish(action)
        return action

    async def answer_callback(
        self, text: str | None = None, *, show_alert: bool = False
    ) -> AnswerCallback:
        """Stop the button's spinner, optionally showing ``text``.

        A press is answered once: if the handler does not answer it, the SDK
        does when the handler is done (also when it failed or refused).
        """
        if not isinstance(self.inbound, InboundCallback):
            raise TypeError("answer_callback() is only valid in an on_callback handler")
        if self.answered:
            raise RuntimeError("this button press was already answered; Telegram allows one answer")
        action = AnswerCallback(
            **self._common(self.chat_id, "interactive"),
            callback_query_id=self.inbound.callback_query_id,
            text=text,
            show_alert=show_alert,
        )
        await self._app.publish(action)
        self.answered = True
        return action

    async def send_photo(
        self,
        png: bytes,
        *,
        caption: str | None = None,
        filename: str = "image.png",
        chat_id: int | None = None,
        priority: Priority = "interactive",
    ) -> SendPhoto:
        """Send an image (PNG bytes) to the inbound's chat."""
        action = SendPhoto.model_validate(
            {
                **self._common(chat_id if chat_id is not None else self.chat_id, priority),
                # SendPhoto's field is base64 on the wire; validate from the encoded form.
                "photo": base64.b64encode(png),
                "caption": caption,
                "filename": filename,
                "message_thread_id": self._thread(chat_id if chat_id is not None else self.chat_id),
            }
        )
        await self._app.publish(action)
        return action

    async def chat_action(self, action: ChatActionName = "typing") -> SendChatAction:
        """Show "typing..." (or another activity) in the inbound's chat."""
        model = SendChatAction(
            **self._common(self.chat_id, "interactive"),
            action=action,
            message_thread_id=self._thread(self.chat_id),
        )
        await self._app.publish(model)
        return model

    async def delete(self, message_id: int, *, chat_id: int | None = None) -> DeleteMessage:
        """Delete one of the bot's messages."""
        action = DeleteMessage(
            **self._common(chat_id if chat_id is not None else self.chat_id, "interactive"),
            message_id=message_id,
        )
        await self._app.publish(action)
        return action
