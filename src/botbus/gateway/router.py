"""Decide where a parsed update goes, and what the gateway answers itself.

The result of routing one update is a list of :class:`Publication` — bus
messages, each with its JetStream message id — that the ingest publishes
before confirming the update to Telegram. The gateway's own answers (help,
"unknown command", "unavailable", "slow down") are outbound actions on
``botbus.out.gateway``, so they are as durable and deduplicated as any
service's reply.

``chat_admin`` on an inbound is True in private chats; in groups it is read
from Telegram (:class:`~botbus.gateway.chatadmins.ChatAdmins`) only for
commands and callbacks that reach a service — the actions a group admin may
take — never for plain messages, which would cost a Bot API call each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from botbus import subjects
from botbus.gateway.chatadmins import ChatAdmins
from botbus.gateway.normalize import ParsedUpdate
from botbus.gateway.registry import Registry
from botbus.gateway.texts import Language, languages, pick_language, text
from botbus.gateway.users import FloodControl, LanguageStore
from botbus.models import (
    AnswerCallback,
    BusModel,
    ForgetUser,
    InboundCallback,
    InboundCommand,
    InboundMessage,
    SendText,
    encode,
)

log = logging.getLogger(__name__)

GATEWAY_SERVICE = "gateway"  # the name the gateway's own actions carry

RouteKind = Literal[
    "command", "message", "callback", "builtin", "unknown", "flood_warned", "flood_dropped"
]


@dataclass(frozen=True)
class Publication:
    """One JetStream publish: ``msg_id`` makes a replay a no-op."""

    subject: str
    payload: bytes
    msg_id: str


@dataclass
class Route:
    """What routing decided for one update."""

    kind: RouteKind
    publications: list[Publication] = field(default_factory=list)


class Router:
    """Turns parsed updates into publications, handling built-in commands."""

    def __init__(
        self,
        registry: Registry,
        languages: LanguageStore,
        flood: FloodControl,
        *,
        bot_id: int,
        admin_ids: frozenset[int] = frozenset(),
        chat_admins: ChatAdmins | None = None,
    ) -> None:
        self.registry = registry
        self.chat_admins = chat_admins  # None: group users are never chat admins
        self.languages = languages
        self.flood = flood
        self.bot_id = bot_id
        self.admin_ids = admin_ids

    def correlation_id(self, update_id: int) -> str:
        """``"<bot_id>:<update_id>"``, the update's id on the bus."""
        return f"{self.bot_id}:{update_id}"

    async def route(self, update: ParsedUpdate) -> Route:
        """Route one update (never raises for user input)."""
        corr = self.correlation_id(update.update_id)
        language = pick_language(
            await self.languages.get(update.user.id), update.user.language_code
        )
        verdict = self.flood.check(update.user.id)
        if verdict != "pass" and update.kind == "callback":
            # A skipped press is still answered, or its button spins until Telegram gives up.
            notice = text("slow_down", language) if verdict == "warn" else None
            kind: RouteKind = "flood_warned" if verdict == "warn" else "flood_dropped"
            return Route(kind, [self._answer(update, corr, notice)])
        if verdict == "drop":
            return Route("flood_dropped")
        if verdict == "warn":
            return Route("flood_warned", [self._say(update, corr, text("slow_down", language))])
        base = {
            "correlation_id": corr,
            "bot_id": self.bot_id,
            "update_id": update.update_id,
            "chat": update.chat,
            "user": update.user,
            "language": language,
            "is_admin": update.user.id in self.admin_ids,
            # Private chats need no lookup; groups are resolved below, only where it matters.
            "chat_admin": update.chat.type == "private" or update.as_chat_admin,
            "message_thread_id": update.thread_id,
        }
        if update.kind == "message":
            inbound = InboundMessage(
                **base,
                message_id=update.message_id or 0,
                text=update.text,
                edited=update.edited,
                reply_to_message_id=update.reply_to_message_id,
            )
            return Route("message", [_publish(subjects.INBOUND_MESSAGES, inbound, corr)])
        if update.kind == "callback":
            return await self._callback(update, corr, language, base)
        return await self._command(update, corr, language, base)

    async def _chat_admin(self, update: ParsedUpdate) -> bool:
        if update.chat.type == "private" or update.as_chat_admin:
            return True  # an anonymous admin writes as the group: Telegram vouches for it
        if self.chat_admins is None:
            return False
        return await self.chat_admins.is_admin(update.chat, update.user.id)

    async def _callback(
        self, update: ParsedUpdate, corr: str, language: Language, base: dict[str, object]
    ) -> Route:
        service, sep, rest = update.data.partition(":")
        if not sep or not subjects.is_valid_name(service) or not self.registry.knows(service):
            log.info("callback %s names no known service (%r)", corr, update.data[:64])
            return Route("unknown", [self._answer(update, corr, text("button_gone", language))])
        base["chat_admin"] = await self._chat_admin(update)
        inbound = InboundCallback(
            **base,
            callback_query_id=update.callback_query_id,
            message_id=update.message_id,
            service=service,
            data=rest,
        )
        return Route("callback", [_publish(subjects.inbound_callback(service), inbound, corr)])

    async def _command(
        self, update: ParsedUpdate, corr: str, language: Language, base: dict[str, object]
    ) -> Route:
        name = update.command
        if name in subjects.BUILTIN_COMMANDS:
            return await self._builtin(update, corr, language)
        owner = self.registry.owner(name) if subjects.is_valid_name(name) else None
        if owner is None:
            if update.chat.is_group and not update.addressed:
                # A bare /cmd in a group is often meant for another bot there.
                return Route("unknown")
            reply = text("unknown_command", language, command=name)
            return Route("unknown", [self._say(update, corr, reply)])
        service, spec = owner
        if spec.admin_only and update.user.id not in self.admin_ids:
            return Route("unknown", [self._say(update, corr, self._not_admin(update, language))])
        base["chat_admin"] = await self._chat_admin(update)
        inbound = InboundCommand(
            **base,
            message_id=update.message_id or 0,
            service=service,
            command=name,
            args=update.args,
        )
        route = Route("command", [_publish(subjects.inbound_command(service, name), inbound, corr)])
        if not self.registry.is_live(service):
            # The command waits in JetStream for the service; tell the user why it is slow.
            notice = text("unavailable", language, service=service)
            route.publications.append(self._say(update, corr, notice))
        return route

    async def _builtin(self, update: ParsedUpdate, corr: str, language: Language) -> Route:
        name = update.command
        if name == "language":
            choice = update.args.strip().lower()
            if choice in languages():
                chosen: Language = choice
                await self.languages.set(update.user.id, chosen)
                return Route("builtin", [self._say(update, corr, text("language_set", chosen))])
            usage = text("language_usage", language, current=language)
            return Route("builtin", [self._say(update, corr, usage)])
        if name == "forgetme":
            await self.languages.forget(update.user.id)
            event = ForgetUser(user_id=update.user.id, chat_id=update.chat.id, correlation_id=corr)
            return Route(
                "builtin",
                [
                    _publish(subjects.EVENT_FORGET, event, f"forget:{corr}"),
                    self._say(update, corr, text("forgotten", language)),
                ],
            )
        body = self.help_text(language, is_admin=update.user.id in self.admin_ids)
        if name == "start":
            body = text("welcome", language, name=update.user.display_name) + "\n\n" + body
        return Route("builtin", [self._say(update, corr, body)])

    def help_text(self, language: Language, *, is_admin: bool) -> str:
        """The /help list: live services' commands, then the built-ins."""
        lines = [text("help_header", language)]
        commands = [
            (service, spec)
            for service, spec in self.registry.live_commands()
            if is_admin or not spec.admin_only
        ]
        for _, spec in commands:
            admin = f" {text('help_admin', language)}" if spec.admin_only else ""
            lines.append(f"/{spec.command} - {spec.describe(language)}{admin}")
        if not commands:
            lines.append(text("help_none", language))
        lines.append("")
        lines.append(text("help_builtin", language))
        return "\n".join(lines)

    def _answer(self, update: ParsedUpdate, corr: str, notice: str | None) -> Publication:
        """Answer a button press at the gateway (stops its spinner, shows ``notice``)."""
        answer = AnswerCallback(
            service=GATEWAY_SERVICE,
            chat_id=update.chat.id,
            idempotency_key=f"gw:{corr}",
            correlation_id=corr,
            callback_query_id=update.callback_query_id,
            text=notice,
        )
        return _publish_action(answer)

    def _not_admin(self, update: ParsedUpdate, language: Language) -> str:
        """The refusal of a bot-admin command, saying how to become a bot admin."""
        if update.as_chat_admin:
            return text("admin_only_anonymous", language, command=update.command)
        return text("admin_only", language, command=update.command, user_id=update.user.id)

    def _say(self, update: ParsedUpdate, corr: str, body: str) -> Publication:
        # In a group, answer the message itself (in its forum topic, if any).
        reply = SendText(
            service=GATEWAY_SERVICE,
            chat_id=update.chat.id,
            idempotency_key=f"gw:{corr}",
            correlation_id=corr,
            text=body,
            reply_to_message_id=update.message_id if update.chat.is_group else None,
            message_thread_id=update.thread_id,
        )
        return _publish_action(reply)


def _publish_action(action: AnswerCallback | SendText) -> Publication:
    return _publish(subjects.outbound(action.service, action.priority), action)


def _publish(subject: str, model: BusModel, msg_id: str | None = None) -> Publication:
    key = msg_id if msg_id is not None else getattr(model, "idempotency_key", "")
    return Publication(subject, encode(model), str(key))
