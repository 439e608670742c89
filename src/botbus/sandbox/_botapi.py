"""The bot side: Telegram Bot API methods, answered with Telegram's envelope and texts."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from botbus.sandbox import _errors as err
from botbus.sandbox._entities import (
    finish_entities,
    parse_formatted,
    validate_entities,
)
from botbus.sandbox._errors import ApiError, bad_request, too_many_requests
from botbus.sandbox._media import image_size, photo_sizes
from botbus.sandbox._params import Params, Upload
from botbus.sandbox._state import (
    DEFAULT_UPDATE_TYPES,
    BotState,
    Chat,
    Json,
    StoredFile,
    StoredMessage,
    Webhook,
    now,
)

logger = logging.getLogger(__name__)

MAX_TEXT = 4096  # characters of a message text after entity parsing
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes
MAX_CALLBACK_ANSWER = 200
MAX_POLL_TIMEOUT = 50.0  # seconds; Telegram caps long polls too
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
SCOPE_TYPES = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
_LANGUAGE = re.compile(r"(|[a-z]{2})")
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")

Handler = Callable[[BotState, Params], Awaitable[Any]]


class BotApi:
    """Dispatches ``/bot<token>/<method>`` calls to their implementation."""

    def __init__(
        self,
        *,
        session: Callable[[], aiohttp.ClientSession],
        start_webhook: Callable[[BotState], None],
        stop_webhook: Callable[[BotState], Awaitable[None]],
        is_closing: Callable[[], bool],
    ) -> None:
        self._session = session
        self._start_webhook = start_webhook
        self._stop_webhook = stop_webhook
        self._is_closing = is_closing
        self._methods: dict[str, Handler] = {
            "getme": self.get_me,
            "logout": self.log_out,
            "close": self.close,
            "getupdates": self.get_updates,
            "setwebhook": self.set_webhook,
            "deletewebhook": self.delete_webhook,
            "getwebhookinfo": self.get_webhook_info,
            "sendmessage": self.send_message,
            "editmessagetext": self.edit_message_text,
            "editmessagereplymarkup": self.edit_message_reply_markup,
            "answercallbackquery": self.answer_callback_query,
            "sendphoto": self.send_photo,
            "getfile": self.get_file,
            "sendchataction": self.send_chat_action,
            "deletemessage": self.delete_message,
            "setmycommands": self.set_my_commands,
            "getmycommands": self.get_my_commands,
            "getchatmember": self.get_chat_member,
            "getchatadministrators": self.get_chat_administrators,
            "deletemycommands": self.delete_my_commands,
        }

    def knows(self, method: str) -> bool:
        """Whether ``method`` is implemented (Telegram matches names case-insensitively)."""
        return method.lower() in self._methods

    async def call(self, state: BotState, method: str, params: Params) -> Any:
        """Run ``method``; ApiError carries Telegram's refusal."""
        handler = self._methods.get(method.lower())
        if handler is None:
            raise ApiError(404, err.NOT_FOUND)
        await self._inject_fault(state, method, params)
        return await handler(state, params)

    @staticmethod
    async def _inject_fault(state: BotState, method: str, params: Params) -> None:
        for fault in state.faults:
            if fault.method.lower() != method.lower():
                continue
            if fault.chat_id is not None:
                try:
                    if params.chat_id() != fault.chat_id:
                        continue
                except ApiError:
                    continue
            fault.times -= 1
            if fault.times <= 0:
                state.faults.remove(fault)
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.error_code == 0:
                return  # a slow call, not a refused one
            raise ApiError(fault.error_code, fault.description, retry_after=fault.retry_after)

    # -- helpers ---------------------------------------------------------
    @staticmethod
    def _chat(state: BotState, params: Params, *, sending: bool = False) -> Chat:
        chat_id = params.chat_id()
        chat = state.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise bad_request("chat not found")
        if sending and chat.type == "private" and chat.id in state.blocked:
            raise ApiError(403, err.BLOCKED)
        return chat

    @staticmethod
    def _rate_limit(state: BotState, chat: Chat) -> None:
        retry_after = state.limiter.check(chat.id)
        if retry_after is not None:
            raise too_many_requests(retry_after)

    @staticmethod
    def _formatted(
        params: Params, text: str, mode_name: str, entities_name: str
    ) -> tuple[str, list[Json]]:
        raw_entities = params.json_(entities_name, error="can't parse entities JSON object")
        if raw_entities is not None:
            return text, validate_entities(raw_entities, text)
        plain, entities = parse_formatted(text, params.str_(mode_name))
        return plain, finish_entities(plain, entities)

    @staticmethod
    def _markup(params: Params) -> Json | None:
        """The reply_markup parameter; only inline keyboards show on the message."""
        markup = params.json_("reply_markup", error="can't parse reply keyboard markup JSON object")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            return None  # reply keyboards / force_reply are client-side only
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request("can't parse inline keyboard button: array of arrays expected")
        clean_rows: list[list[Json]] = []
        for row in rows:
            clean: list[Json] = []
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str):
                    raise bad_request(
                        'can\'t parse inline keyboard button: Field "text" must be of type String'
                    )
                if not button["text"]:
                    raise bad_request("BUTTON_TEXT_INVALID")
                actions = set(button) - {"text"}
                if not actions:
                    raise bad_request(
                        "can't parse inline keyboard button: "
                        "Text buttons are unallowed in the inline keyboard"
                    )
                if "callback_data" in button:
                    data = button["callback_data"]
                    if not isinstance(data, str) or not (
                        0 < len(data.encode("utf-8")) <= MAX_CALLBACK_DATA
                    ):
                        raise bad_request("BUTTON_DATA_INVALID")
                if "url" in button and not isinstance(button["url"], str):
                    raise bad_request("BUTTON_URL_INVALID")
                clean.append(dict(button))
            if clean:
                clean_rows.append(clean)
        return {"inline_keyboard": clean_rows} if clean_rows else None

    @staticmethod
    def _reply_to(state: BotState, params: Params, chat: Chat) -> StoredMessage | None:
        reply = params.json_("reply_parameters", error="can't parse reply parameters JSON object")
        allow_missing = params.bool_("allow_sending_without_reply")
        if reply is not None:
            if not isinstance(reply, dict):
                raise bad_request("can't parse reply parameters JSON object")
            message_id = Params(reply).int_("message_id", missing="message to be replied not found")
            allow_missing = bool(reply.get("allow_sending_without_reply", allow_missing))
            target_chat = chat
            if reply.get("chat_id") not in (None, ""):
                target_chat = BotApi._chat(state, Params(reply))
        else:
            message_id = params.int_("reply_to_message_id")
            target_chat = chat
            if message_id is None:
                return None
        assert message_id is not None
        message = state.messages.get((target_chat.id, message_id))
        if message is None and not allow_missing:
            raise bad_request("message to be replied not found")
        return message

    @staticmethod
    def _thread(params: Params, chat: Chat, reply_to: StoredMessage | None) -> int | None:
        """The forum topic to post in: ``message_thread_id``, else the replied message's."""
        thread = params.int_("message_thread_id")
        if thread is None:
            return reply_to.thread_id if reply_to is not None else None
        if not chat.is_forum or thread not in chat.topics:
            raise bad_request("message thread not found")
        return thread

    def _target_message(self, state: BotState, params: Params) -> StoredMessage:
        if params.has("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")
        if not params.has("chat_id") and not params.has("message_id"):
            raise bad_request("message identifier is not specified")
        chat = self._chat(state, params)
        message_id = params.int_("message_id", missing="message identifier is not specified")
        assert message_id is not None
        message = state.messages.get((chat.id, message_id))
        if message is None:
            raise bad_request("message to edit not found")
        if not message.from_bot:
            raise bad_request("message can't be edited")
        return message

    # -- identity --------------------------------------------------------
    async def get_me(self, state: BotState, params: Params) -> Json:
        """getMe: the bot's User object with its capabilities."""
        me = state.bot.to_json()
        me.update(
            {
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        )
        return me

    # -- members -----------------------------------------------------------
    async def get_chat_member(self, state: BotState, params: Params) -> Json:
        """getChatMember: the user's ChatMember in the chat (creator/administrator/member/left)."""
        chat = self._chat(state, params)
        user_id = params.int_("user_id", missing="invalid user_id specified")
        assert user_id is not None
        if user_id <= 0:
            raise bad_request("PARTICIPANT_ID_INVALID")
        if user_id == state.bot.id:
            return {"status": "member", "user": state.bot.to_json()}
        user = state.users.get(user_id)
        if user is None or (chat.type == "private" and user_id != chat.id):
            raise bad_request("user not found")
        return _chat_member(chat, user.to_json())

    async def get_chat_administrators(self, state: BotState, params: Params) -> list[Json]:
        """getChatAdministrators: the group's owner first, then its administrators."""
        chat = self._chat(state, params)
        if chat.type == "private":
            raise bad_request("there are no administrators in the private chat")
        ordered = sorted(chat.admins, key=lambda uid: (uid != chat.creator, uid))
        return [
            _chat_member(chat, state.users[uid].to_json()) for uid in ordered if uid in state.users
        ]

    async def log_out(self, state: BotState, params: Params) -> bool:
        """logOut: accepted and ignored (there is no cloud server to leave)."""
        return True

    async def close(self, state: BotState, params: Params) -> bool:
        """close: accepted and ignored."""
        return True

    # -- updates ---------------------------------------------------------
    async def get_updates(self, state: BotState, params: Params) -> list[Json]:
        """getUpdates: confirm by offset, then long-poll for up to ``timeout`` seconds."""
        if state.webhook is not None:
            raise ApiError(409, err.WEBHOOK_CONFLICT)
        offset = params.int_("offset") or 0
        limit = params.int_("limit")
        limit = 100 if limit is None else min(100, max(1, limit))
        timeout = float(params.int_("timeout") or 0)
        allowed = params.json_("allowed_updates", error="can't parse allowed_updates JSON array")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
                raise bad_request("can't parse allowed_updates JSON array")
            state.allowed_updates = frozenset(allowed) if allowed else DEFAULT_UPDATE_TYPES
        state.confirm(offset)
        # A newer poll ends any older one still waiting, as on Telegram.
        state.poll_generation += 1
        generation = state.poll_generation
        state.signal.fire()

        def ready() -> bool:
            return (
                bool(state.updates)
                or state.poll_generation != generation
                or state.webhook is not None
                or self._is_closing()
            )

        await state.signal.wait_for(ready, min(timeout, MAX_POLL_TIMEOUT))
        if state.poll_generation != generation:
            raise ApiError(409, err.POLL_CONFLICT)
        if state.webhook is not None:
            raise ApiError(409, err.WEBHOOK_CONFLICT)
        return list(state.updates)[:limit]

    async def set_webhook(self, state: BotState, params: Params) -> bool:
        """setWebhook: start delivering updates over HTTP POST (empty url removes it)."""
        url = params.str_("url", missing="bad webhook: Webhook URL must be specified") or ""
        if not url:
            await self.delete_webhook(state, params)
            return True
        if not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.str_("secret_token")
        if secret is not None and not _SECRET.fullmatch(secret):
            raise bad_request("bad webhook: secret token contains unallowed characters")
        max_connections = params.int_("max_connections") or 40
        if not 1 <= max_connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        allowed = params.json_("allowed_updates", error="can't parse allowed_updates JSON array")
        if isinstance(allowed, list):
            state.allowed_updates = frozenset(allowed) if allowed else DEFAULT_UPDATE_TYPES
        if params.bool_("drop_pending_updates"):
            state.updates.clear()
        await self._stop_webhook(state)
        state.webhook = Webhook(url=url, secret_token=secret, max_connections=max_connections)
        state.last_error_date = state.last_error_message = None
        state.signal.fire()  # a waiting getUpdates must now fail with 409
        self._start_webhook(state)
        return True

    async def delete_webhook(self, state: BotState, params: Params) -> bool:
        """deleteWebhook: back to getUpdates; optionally drop pending updates."""
        await self._stop_webhook(state)
        state.webhook = None
        if params.bool_("drop_pending_updates"):
            state.updates.clear()
        return True

    async def get_webhook_info(self, state: BotState, params: Params) -> Json:
        """getWebhookInfo: the webhook, its backlog and its last delivery error."""
        info: Json = {
            "url": state.webhook.url if state.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(state.updates),
        }
        if state.webhook is not None:
            info["max_connections"] = state.webhook.max_connections
            if state.allowed_updates != DEFAULT_UPDATE_TYPES:
                info["allowed_updates"] = sorted(state.allowed_updates)
        if state.last_error_date is not None:
            info["last_error_date"] = state.last_error_date
            info["last_error_message"] = state.last_error_message or ""
        return info

    # -- messages --------------------------------------------------------
    async def send_message(self, state: BotState, params: Params) -> Json:
        """sendMessage: validate like Telegram, store, and show it to the chat's readers."""
        chat = self._chat(state, params, sending=True)
        text = params.str_("text")
        if text is None or not text.strip():
            raise bad_request("message text is empty")
        plain, entities = self._formatted(params, text, "parse_mode", "entities")
        if not plain.strip():
            raise bad_request("message text is empty")
        if len(plain) > MAX_TEXT:
            raise bad_request("message is too long")
        markup = self._markup(params)
        reply_to = self._reply_to(state, params, chat)
        thread = self._thread(params, chat, reply_to)
        self._rate_limit(state, chat)
        message = state.new_message(
            chat,
            state.bot.to_json(),
            text=plain,
            entities=entities,
            reply_markup=markup,
            reply_to=reply_to,
            thread_id=thread,
        )
        body = message.to_json()
        state.add_event(chat.id, "message", message=body)
        return body

    async def edit_message_text(self, state: BotState, params: Params) -> Json:
        """editMessageText: refuses unchanged content like Telegram."""
        message = self._target_message(state, params)
        text = params.str_("text")
        if text is None or not text.strip():
            raise bad_request("message text is empty")
        if message.text is None:
            raise bad_request("there is no text in the message to edit")
        plain, entities = self._formatted(params, text, "parse_mode", "entities")
        if not plain.strip():
            raise bad_request("message text is empty")
        if len(plain) > MAX_TEXT:
            raise bad_request("message is too long")
        # Without reply_markup Telegram removes the inline keyboard.
        markup = self._markup(params)
        if (
            plain == message.text
            and entities == message.entities
            and markup == message.reply_markup
        ):
            raise bad_request(err.NOT_MODIFIED.removeprefix("Bad Request: "))
        message.text, message.entities, message.reply_markup = plain, entities, markup
        message.edit_date = now()
        body = message.to_json()
        state.add_event(message.chat.id, "edit", message=body)
        return body

    async def edit_message_reply_markup(self, state: BotState, params: Params) -> Json:
        """editMessageReplyMarkup: replace or (when absent) remove the inline keyboard."""
        message = self._target_message(state, params)
        markup = self._markup(params)
        if markup == message.reply_markup:
            raise bad_request(err.NOT_MODIFIED.removeprefix("Bad Request: "))
        message.reply_markup = markup
        message.edit_date = now()
        body = message.to_json()
        state.add_event(message.chat.id, "edit", message=body)
        return body

    async def answer_callback_query(self, state: BotState, params: Params) -> bool:
        """answerCallbackQuery: once per query; the answer shows in the message's chat."""
        query_id = params.str_("callback_query_id", missing="QUERY_ID_INVALID")
        query = state.callbacks.get(query_id or "")
        if query is None or query.answered:
            raise bad_request(err.QUERY_INVALID.removeprefix("Bad Request: "))
        text = params.str_("text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER:
            raise bad_request("MESSAGE_TOO_LONG")
        query.answered = True
        state.add_event(
            # An inline-mode message belongs to no chat the bot is in: show it privately.
            query.message.chat.id if query.message else query.user.id,
            "callback_answer",
            callback_query_id=query.id,
            message_id=query.message.message_id if query.message else None,
            user_id=query.user.id,
            text=text or "",
            show_alert=params.bool_("show_alert"),
            url=params.str_("url") or "",
        )
        return True

    async def send_photo(self, state: BotState, params: Params) -> Json:
        """sendPhoto: a multipart upload, a known file_id, or an HTTP URL."""
        chat = self._chat(state, params, sending=True)
        source = params.upload("photo")
        if source is None:
            raise bad_request("there is no photo in the request")
        stored = await self._photo_file(state, source)
        caption = params.str_("caption")
        caption_entities: list[Json] = []
        if caption:
            caption, caption_entities = self._formatted(
                params, caption, "parse_mode", "caption_entities"
            )
            if len(caption) > MAX_CAPTION:
                raise bad_request("message caption is too long")
        markup = self._markup(params)
        reply_to = self._reply_to(state, params, chat)
        thread = self._thread(params, chat, reply_to)
        self._rate_limit(state, chat)
        message = state.new_message(
            chat,
            state.bot.to_json(),
            photo=photo_sizes(stored),
            caption=caption or None,
            caption_entities=caption_entities,
            reply_markup=markup,
            reply_to=reply_to,
            thread_id=thread,
        )
        body = message.to_json()
        state.add_event(chat.id, "message", message=body)
        return body

    async def _photo_file(self, state: BotState, source: Upload | str) -> StoredFile:
        if isinstance(source, str):
            if source in state.files:
                return state.files[source]
            if not source.startswith(("http://", "https://")):
                raise bad_request("wrong file identifier/HTTP URL specified")
            data = await self._fetch(source)
        else:
            data = source.data
        size = image_size(data)
        if size is None:
            raise bad_request("IMAGE_PROCESS_FAILED")
        width, height, content_type = size
        stored = state.store_file(data, content_type, width=width, height=height)
        state.files[stored.file_id + "_s"] = stored  # the thumbnail's id, see photo_sizes
        return stored

    async def _fetch(self, url: str) -> bytes:
        try:
            async with self._session().get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    raise bad_request("failed to get HTTP URL content")
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            raise bad_request("failed to get HTTP URL content") from None

    async def get_file(self, state: BotState, params: Params) -> Json:
        """getFile: a File object whose file_path is served under /file/bot<token>/."""
        file_id = params.str_("file_id", missing="file_id not specified") or ""
        stored = state.files.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": f"photos/{stored.file_id}",
        }

    async def send_chat_action(self, state: BotState, params: Params) -> bool:
        """sendChatAction: shown to readers as a ``chat_action`` event."""
        chat = self._chat(state, params, sending=True)
        action = params.str_("action", missing="wrong parameter action in request")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        thread = self._thread(params, chat, None)
        state.add_event(chat.id, "chat_action", action=action, message_thread_id=thread)
        return True

    async def delete_message(self, state: BotState, params: Params) -> bool:
        """deleteMessage: removes a message from the chat."""
        chat = self._chat(state, params)
        message_id = params.int_("message_id", missing="message identifier is not specified")
        assert message_id is not None
        message = state.messages.get((chat.id, message_id))
        if message is None:
            raise bad_request("message to delete not found")
        if not message.from_bot and chat.type != "private":
            raise bad_request("message can't be deleted")
        del state.messages[(chat.id, message_id)]
        state.add_event(chat.id, "delete", message_id=message_id)
        return True

    # -- commands --------------------------------------------------------
    def _scope_key(self, state: BotState, params: Params) -> tuple[str, str]:
        scope = params.json_("scope", error="can't parse BotCommandScope JSON object")
        if scope is None:
            scope = {"type": "default"}
        if not isinstance(scope, dict) or scope.get("type") not in SCOPE_TYPES:
            raise bad_request("wrong bot command scope type specified")
        language = params.str_("language_code") or ""
        if not _LANGUAGE.fullmatch(language):
            raise bad_request("invalid language code specified")
        kind = str(scope["type"])
        key = kind
        if kind in ("chat", "chat_administrators", "chat_member"):
            chat = self._chat(state, Params(scope))
            key = f"{kind}:{chat.id}"
            if kind == "chat_member":
                user_id = Params(scope).int_("user_id", missing="user not found")
                if user_id not in chat.members:
                    raise bad_request("user not found")
                key = f"{key}:{user_id}"
        return key, language

    async def set_my_commands(self, state: BotState, params: Params) -> bool:
        """setMyCommands: the menu for one scope and language."""
        commands = params.json_("commands", error="can't parse commands JSON object")
        if commands is None or not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("too many commands specified")
        clean: list[Json] = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand JSON object")
            name = command.get("command")
            description = command.get("description")
            if not isinstance(name, str) or not _COMMAND.fullmatch(name.lower()):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not description.strip():
                raise bad_request("command description is empty")
            if len(description) > 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            clean.append({"command": name.lower(), "description": description})
        key = self._scope_key(state, params)
        if clean:
            state.commands[key] = clean
        else:
            state.commands.pop(key, None)
        return True

    async def get_my_commands(self, state: BotState, params: Params) -> list[Json]:
        """getMyCommands: exactly the list set for this scope and language."""
        return list(state.commands.get(self._scope_key(state, params), []))

    async def delete_my_commands(self, state: BotState, params: Params) -> bool:
        """deleteMyCommands: forget the list of this scope and language."""
        state.commands.pop(self._scope_key(state, params), None)
        return True


# Rights of a sandbox group administrator: a full admin who is not anonymous.
_ADMIN_RIGHTS: Json = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": True,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
    "can_pin_messages": True,
}


def _chat_member(chat: Chat, user: Json) -> Json:
    """The ChatMember object of ``user`` in ``chat``, as Telegram shapes it per status."""
    user_id = user["id"]
    if chat.type == "private":
        return {"status": "member", "user": user}
    if user_id == chat.creator:
        return {"status": "creator", "user": user, "is_anonymous": False}
    if user_id in chat.admins:
        return {"status": "administrator", "user": user, **_ADMIN_RIGHTS}
    if user_id in chat.members:
        return {"status": "member", "user": user}
    return {"status": "left", "user": user}
