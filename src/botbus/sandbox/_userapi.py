"""The user side: what a person, a test or a benchmark does to a sandboxed bot.

Routes live under ``/sandbox``; see docs/sandbox.md for the reference.
Refusals are ``{"ok": false, "error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web

from botbus.sandbox._entities import finish_entities
from botbus.sandbox._errors import UserApiError
from botbus.sandbox._limits import Limits
from botbus.sandbox._media import emoji_sticker, image_size, photo_sizes
from botbus.sandbox._state import (
    BotState,
    CallbackQuery,
    Chat,
    Json,
    SandboxBot,
    StoredFile,
    StoredMessage,
    User,
    now,
)

MAX_EVENTS_TIMEOUT = 60.0  # seconds a reader may long-poll for bot events
# Telegram's sender of messages an admin writes anonymously, as the group.
ANONYMOUS_ADMIN: Json = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
STREAM_KEEPALIVE = 15.0  # seconds between comments on a quiet event stream
MAX_USER_TEXT = 4096
MAX_USER_CAPTION = 1024
MAX_USER_FILE = 20 * 2**20  # bytes; Telegram lets bots download files up to 20 MB


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _body(request: web.Request) -> Json:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise UserApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise UserApiError(400, "the request body must be a JSON object")
    return body


def _int(body: Json, name: str, *, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or value is None:
        raise UserApiError(400, f"{name!r} is required and must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserApiError(400, f"{name!r} must be an integer, got {value!r}") from None


def _user_spec(value: object, lang: str) -> Json:
    """Turn ``1001`` or ``{"id": 1001, ...}`` into a full user description."""
    if isinstance(value, bool):
        raise UserApiError(400, "'user' must be an integer id or an object with an 'id'")
    if isinstance(value, int):
        # No first_name: a user known by name keeps it; a new one becomes "User <id>".
        return {"id": value, "language_code": lang}
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return _user_spec(int(value), lang)
    if isinstance(value, dict) and isinstance(value.get("id"), int) and value["id"] > 0:
        spec = dict(value)
        spec.setdefault("language_code", lang)
        return spec
    raise UserApiError(400, "'user' must be a positive integer id or an object with an 'id'")


class UserApi:
    """Handlers of the ``/sandbox`` routes."""

    def __init__(
        self,
        *,
        limits: Limits,
        bots_by_id: dict[int, BotState],
        add_bot: Callable[..., SandboxBot],
        is_closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self._limits = limits
        self._bots = bots_by_id
        self._add_bot = add_bot
        self._closing = is_closing

    def routes(self) -> list[web.RouteDef]:
        """The route table."""
        b = "/sandbox/bots/{bot_id}"
        return [
            web.get("/sandbox/bots", self.list_bots),
            web.post("/sandbox/bots", self.create_bot),
            web.get("/sandbox/limits", self.get_limits),
            web.put("/sandbox/limits", self.set_limits),
            web.post("/sandbox/limits", self.set_limits),
            web.post(f"{b}/messages", self.send),
            web.patch(b + "/chats/{chat_id}/messages/{message_id}", self.edit),
            web.post(f"{b}/files", self.upload),
            web.post(f"{b}/groups", self.create_group),
            web.post(b + "/chats/{chat_id}/members", self.join),
            web.post(b + "/chats/{chat_id}/admins", self.promote),
            web.delete(b + "/chats/{chat_id}/admins/{user_id}", self.demote),
            web.post(f"{b}/callbacks", self.press),
            web.post(f"{b}/blocks", self.block),
            web.delete(b + "/blocks/{user_id}", self.unblock),
            web.get(f"{b}/chats", self.list_chats),
            web.get(f"{b}/stream", self.stream),
            web.get(b + "/chats/{chat_id}/events", self.events),
            web.get(b + "/files/{file_id}", self.file),
            web.post(f"{b}/faults", self.add_fault),
            web.get(f"{b}/stats", self.stats),
            web.get(f"{b}/commands", self.commands),
        ]

    def _state(self, request: web.Request) -> BotState:
        raw = request.match_info["bot_id"]
        try:
            bot_id = int(raw)
        except ValueError:
            raise UserApiError(400, f"bot id must be an integer, got {raw!r}") from None
        state = self._bots.get(bot_id)
        if state is None:
            known = ", ".join(str(i) for i in self._bots) or "none"
            raise UserApiError(404, f"no bot with id {bot_id} (known bots: {known})")
        return state

    @staticmethod
    def _group(state: BotState, chat_id: int) -> Chat:
        chat = state.chats.get(chat_id)
        if chat is None or chat.type == "private":
            raise UserApiError(404, f"no group {chat_id}; create it first (POST .../groups)")
        return chat

    # -- bots and limits -------------------------------------------------
    async def list_bots(self, request: web.Request) -> web.Response:
        """GET /sandbox/bots: every registered bot."""
        token = not from_browser(request)  # the web chat never sees a bot token
        return _json_response([_bot_json(s.bot, token=token) for s in self._bots.values()])

    async def create_bot(self, request: web.Request) -> web.Response:
        """POST /sandbox/bots: register a bot; body {username?, token?, first_name?}."""
        body = await _body(request)
        kwargs: dict[str, str] = {}
        for name in ("username", "first_name"):
            if name in body:
                if not isinstance(body[name], str) or not body[name]:
                    raise UserApiError(400, f"{name!r} must be a non-empty string")
                kwargs[name] = body[name]
        token = body.get("token")
        if token is not None and not isinstance(token, str):
            raise UserApiError(400, "'token' must be a string like '123456:ABC...'")
        try:
            bot = self._add_bot(token, **kwargs)
        except ValueError as exc:
            raise UserApiError(400, str(exc)) from None
        return _json_response(_bot_json(bot, token=not from_browser(request)), status=201)

    async def get_limits(self, request: web.Request) -> web.Response:
        """GET /sandbox/limits: the flood limits in force."""
        return _json_response(vars(self._limits))

    async def set_limits(self, request: web.Request) -> web.Response:
        """PUT /sandbox/limits: change some flood limits."""
        body = await _body(request)
        try:
            self._limits.update(**body)
        except ValueError as exc:
            raise UserApiError(400, str(exc)) from None
        return _json_response(vars(self._limits))

    # -- what users do ---------------------------------------------------
    def _author_and_chat(self, state: BotState, body: Json) -> tuple[User, Chat]:
        """Who writes (``user``, ``lang``) and where (``chat_id``, default: private)."""
        lang = str(body.get("lang") or "en")
        user = state.user(_user_spec(body.get("user", 1001), lang))
        chat_id = _int(body, "chat_id", default=user.id)
        if chat_id == user.id:
            if user.id in state.blocked:
                raise UserApiError(409, f"user {user.id} has blocked the bot; unblock it first")
            return user, state.private_chat(user)
        if chat_id > 0:
            raise UserApiError(
                400, f"chat_id {chat_id} is another user's private chat; use a group id (< 0)"
            )
        chat = self._group(state, chat_id)
        if user.id not in chat.members:
            raise UserApiError(
                403, f"user {user.id} is not a member of group {chat_id}; join it first"
            )
        return user, chat

    async def send(self, request: web.Request) -> web.Response:
        """POST .../messages: a user writes text, or sends a photo, document, location, sticker.

        Exactly one of ``text``, ``photo`` (file_id of an upload), ``document``
        (file_id), ``location`` ({latitude, longitude}) or ``sticker`` (an
        emoji, or the file_id of an uploaded image); ``caption`` goes with a
        photo or a document; ``reply_to`` makes it a reply.
        """
        state = self._state(request)
        body = await _body(request)
        kinds = [k for k in ("text", "photo", "document", "location", "sticker") if k in body]
        if len(kinds) != 1:
            raise UserApiError(
                400, "give exactly one of 'text', 'photo', 'document', 'location' or 'sticker'"
            )
        user, chat = self._author_and_chat(state, body)
        content = _content(state, kinds[0], body)
        reply_to = None
        if body.get("reply_to") is not None:
            reply_to = state.messages.get((chat.id, _int(body, "reply_to")))
            if reply_to is None:
                raise UserApiError(404, f"no message {body['reply_to']} in chat {chat.id}")
        thread = reply_to.thread_id if reply_to is not None else None
        if body.get("thread_id") is not None:
            if not chat.is_forum:
                raise UserApiError(400, f"chat {chat.id} is not a forum; it has no topics")
            thread = _int(body, "thread_id")
            chat.topics.add(thread)
        sender, sender_chat = user.to_json(), None
        if body.get("as_group"):
            # "Remain anonymous": an admin writes as the group, from GroupAnonymousBot.
            if user.id not in chat.admins:
                raise UserApiError(403, f"user {user.id} is not an admin of group {chat.id}")
            sender, sender_chat = dict(ANONYMOUS_ADMIN), chat.to_json()
        message = state.new_message(
            chat,
            sender,
            reply_to=reply_to,
            thread_id=thread,
            sender_chat=sender_chat,
            **content,
        )
        update_id = state.add_update("message", message.to_json())
        event = state.add_event(chat.id, "user_message", message=message.to_json())
        return _json_response(
            {
                "update_id": update_id,
                "message_id": message.message_id,
                "chat_id": chat.id,
                "seq": event["seq"],  # the bot's answers come after this in the chat's events
            }
        )

    async def edit(self, request: web.Request) -> web.Response:
        """PATCH .../chats/{chat_id}/messages/{message_id} {text|caption, user}: edit one's own."""
        state = self._state(request)
        match = dict(request.match_info)
        chat_id, message_id = _int(match, "chat_id"), _int(match, "message_id")
        body = await _body(request)
        lang = str(body.get("lang") or "en")
        user = state.user(_user_spec(body.get("user", 1001), lang))
        message = state.messages.get((chat_id, message_id))
        if message is None:
            raise UserApiError(404, f"no message {message_id} in chat {chat_id}")
        if message.sender.get("id") != user.id:
            raise UserApiError(403, f"message {message_id} is not user {user.id}'s to edit")
        if message.text is not None:
            text = _text(body, "text")
            if text == message.text:
                raise UserApiError(409, "the new text is the same as the old one")
            message.text, message.entities = text, finish_entities(text, [])
        elif message.photo is not None or message.document is not None:
            caption = _text(body, "caption", limit=MAX_USER_CAPTION)
            message.caption, message.caption_entities = caption, finish_entities(caption, [])
        else:
            raise UserApiError(409, "only a text or a caption can be edited")
        message.edit_date = now()
        body_json = message.to_json()
        update_id = state.add_update("edited_message", body_json)
        event = state.add_event(chat_id, "user_edit", message=body_json)
        return _json_response(
            {
                "update_id": update_id,
                "message_id": message_id,
                "chat_id": chat_id,
                "seq": event["seq"],
            }
        )

    async def upload(self, request: web.Request) -> web.Response:
        """POST .../files (multipart, part ``file``): keep a user's file; returns its file_id."""
        state = self._state(request)
        if request.content_type != "multipart/form-data":
            raise UserApiError(400, "upload a file as multipart/form-data with a part named 'file'")
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                data = bytes(await part.read(decode=False))
                if not data:
                    raise UserApiError(400, "the uploaded file is empty")
                if len(data) > MAX_USER_FILE:
                    raise UserApiError(413, f"files are limited to {MAX_USER_FILE} bytes here")
                name = part.filename or "file"
                content_type = part.headers.get("Content-Type") or "application/octet-stream"
                size = image_size(data)
                width, height = (size[0], size[1]) if size else (0, 0)
                if size:
                    content_type = size[2]
                stored = state.store_file(
                    data, content_type, width=width, height=height, file_name=name, prefix="BQAC"
                )
                return _json_response(_file_json(stored), status=201)
        raise UserApiError(400, "no part named 'file' in the upload")

    async def create_group(self, request: web.Request) -> web.Response:
        """POST .../groups: a group (negative id) with the bot, admins and members."""
        state = self._state(request)
        body = await _body(request)
        chat_id = _int(body, "chat_id")
        if chat_id >= 0:
            raise UserApiError(400, "group chat_id must be negative, like Telegram's")
        title = body.get("title")
        if not isinstance(title, str) or not title:
            raise UserApiError(400, "'title' must be a non-empty string")
        admins = [state.user(_user_spec(u, "en")) for u in body.get("admins") or []]
        members = [state.user(_user_spec(u, "en")) for u in body.get("members") or []]
        chat = state.chats.get(chat_id)
        if chat is None:
            chat_type = "supergroup" if str(chat_id).startswith("-100") else "group"
            chat = Chat(id=chat_id, type=chat_type, title=title)
            state.chats[chat_id] = chat
        if body.get("forum"):
            if chat.type != "supergroup":
                raise UserApiError(400, "only supergroups (ids starting -100) can be forums")
            chat.is_forum = True
        chat.title = title
        if chat.creator is None and admins:
            chat.creator = admins[0].id  # Telegram groups have one owner: the first admin
        chat.admins |= {u.id for u in admins}
        chat.members |= {u.id for u in admins} | {u.id for u in members}
        _chat_changed(state, chat)
        return _json_response(_chat_json(chat), status=201)

    async def join(self, request: web.Request) -> web.Response:
        """POST .../chats/{chat_id}/members: a user joins; the bot gets new_chat_members."""
        state = self._state(request)
        chat = self._group(state, _int(dict(request.match_info), "chat_id"))
        body = await _body(request)
        user = state.user(_user_spec(body.get("user"), str(body.get("lang") or "en")))
        chat.members.add(user.id)
        message = state.new_message(chat, user.to_json(), new_chat_members=[user.to_json()])
        update_id = state.add_update("message", message.to_json())
        state.add_event(chat.id, "user_message", message=message.to_json())
        _chat_changed(state, chat)
        return _json_response(
            {"update_id": update_id, "message_id": message.message_id, "chat_id": chat.id}
        )

    async def promote(self, request: web.Request) -> web.Response:
        """POST .../chats/{chat_id}/admins {user_id}: a member becomes a group administrator."""
        state = self._state(request)
        chat = self._group(state, _int(dict(request.match_info), "chat_id"))
        user_id = _int(await _body(request), "user_id")
        if user_id not in chat.members:
            raise UserApiError(
                409, f"user {user_id} is not a member of group {chat.id}; add them first (join)"
            )
        chat.admins.add(user_id)
        _chat_changed(state, chat)
        return _json_response(_chat_json(chat))

    async def demote(self, request: web.Request) -> web.Response:
        """DELETE .../chats/{chat_id}/admins/{user_id}: an administrator becomes a member."""
        state = self._state(request)
        match = dict(request.match_info)
        chat = self._group(state, _int(match, "chat_id"))
        user_id = _int(match, "user_id")
        if user_id == chat.creator:
            raise UserApiError(
                409, f"user {user_id} owns group {chat.id}; an owner cannot be demoted"
            )
        if user_id not in chat.admins:
            raise UserApiError(404, f"user {user_id} is not an administrator of group {chat.id}")
        chat.admins.discard(user_id)
        _chat_changed(state, chat)
        return _json_response(_chat_json(chat))

    async def press(self, request: web.Request) -> web.Response:
        """POST .../callbacks: press a button (by ``label`` or ``data``) of a bot message.

        With ``inline: true`` and ``data``, the button is under an inline-mode
        message: the query has an ``inline_message_id`` and no ``message``.
        """
        state = self._state(request)
        body = await _body(request)
        if body.get("inline"):
            return self._press_inline(state, body)
        chat_id = _int(body, "chat_id")
        message_id = _int(body, "message_id")
        lang = str(body.get("lang") or "en")
        user = state.user(_user_spec(body.get("user", 1001), lang))
        message = state.messages.get((chat_id, message_id))
        if message is None:
            raise UserApiError(404, f"no message {message_id} in chat {chat_id}")
        if chat_id > 0 and chat_id != user.id:
            raise UserApiError(403, f"user {user.id} cannot see private chat {chat_id}")
        data = body.get("data")
        label = body.get("label")
        if data is None:
            data = _button_data(message.reply_markup, label)
        elif not isinstance(data, str):
            raise UserApiError(400, "'data' must be a string")
        where = {
            "message": message.to_json(),
            "chat_instance": _chat_instance(state.bot.id, chat_id),
        }
        return _queue_press(state, user, message, data, where)

    @staticmethod
    def _press_inline(state: BotState, body: Json) -> web.Response:
        data = body.get("data")
        if not isinstance(data, str) or not data:
            raise UserApiError(400, "an inline button press needs its 'data'")
        user = state.user(_user_spec(body.get("user", 1001), str(body.get("lang") or "en")))
        where = {
            "inline_message_id": secrets.token_urlsafe(18),
            "chat_instance": _chat_instance(state.bot.id, user.id),
        }
        return _queue_press(state, user, None, data, where)

    async def block(self, request: web.Request) -> web.Response:
        """POST .../blocks {user_id}: the user blocks the bot (my_chat_member 'kicked')."""
        state = self._state(request)
        body = await _body(request)
        user = state.user(_user_spec(_int(body, "user_id"), "en"))
        return _json_response(self._set_blocked(state, user, blocked=True))

    async def unblock(self, request: web.Request) -> web.Response:
        """DELETE .../blocks/{user_id}: the user unblocks (restarts) the bot."""
        state = self._state(request)
        user = state.user(_user_spec(_int(dict(request.match_info), "user_id"), "en"))
        return _json_response(self._set_blocked(state, user, blocked=False))

    @staticmethod
    def _set_blocked(state: BotState, user: User, *, blocked: bool) -> Json:
        was_blocked = user.id in state.blocked
        if blocked == was_blocked:
            return {"update_id": None, "blocked": blocked}
        if blocked:
            state.blocked.add(user.id)
        else:
            state.blocked.discard(user.id)
        chat = state.private_chat(user)
        _chat_changed(state, chat)
        statuses = ("member", "kicked") if blocked else ("kicked", "member")
        old: Json = {"user": state.bot.to_json(), "status": statuses[0]}
        new: Json = {"user": state.bot.to_json(), "status": statuses[1]}
        if new["status"] == "kicked":
            new["until_date"] = 0
        if old["status"] == "kicked":
            old["until_date"] = 0
        update_id = state.add_update(
            "my_chat_member",
            {
                "chat": chat.to_json(),
                "from": user.to_json(),
                "date": now(),
                "old_chat_member": old,
                "new_chat_member": new,
            },
        )
        return {"update_id": update_id, "blocked": blocked}

    # -- what users read -------------------------------------------------
    async def list_chats(self, request: web.Request) -> web.Response:
        """GET .../chats[?user_id=ID]: every chat the bot is in (that user's, when given)."""
        state = self._state(request)
        chats = list(state.chats.values())
        if "user_id" in request.query:
            user_id = _int(dict(request.query), "user_id")
            chats = [c for c in chats if _sees(c, user_id)]
        return _json_response([_chat_json(c, state) for c in chats])

    def _stream_ready(self, state: BotState, after: int) -> bool:
        return (bool(state.events) and state.events[-1]["seq"] > after) or self._closing()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """GET .../stream?user_id=ID&after=SEQ: Server-Sent Events of every chat ``user_id`` sees.

        Both sides' events (the bot's ``message``/``edit``/... and the users'
        ``user_message``/``user_edit``/``chat``), history first, then live,
        until the client goes away. The web chat reads this.
        """
        state = self._state(request)
        query = dict(request.query)
        user_id = _int(query, "user_id")
        after = _int(query, "after", default=0)
        if "Last-Event-ID" in request.headers:  # the browser reconnects where it left off
            after = _int({"id": request.headers["Last-Event-ID"]}, "id")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the page was closed: nothing to do
            await self._stream_events(response, state, user_id, after)
        return response

    async def _stream_events(
        self, response: web.StreamResponse, state: BotState, user_id: int, after: int
    ) -> None:
        while not self._closing():
            events = [
                e
                for e in state.events
                if e["seq"] > after and _sees(state.chats.get(e["chat_id"]), user_id)
            ]
            if state.events:
                after = max(after, state.events[-1]["seq"])
            for event in events:
                line = json.dumps(event, ensure_ascii=False)
                await response.write(f"id: {event['seq']}\ndata: {line}\n\n".encode())
            if not events:
                await response.write(b": keep-alive\n\n")  # finds a gone client
            await state.signal.wait_for(
                functools.partial(self._stream_ready, state, after), STREAM_KEEPALIVE
            )

    async def events(self, request: web.Request) -> web.Response:
        """GET .../chats/{chat_id}/events?after=SEQ&timeout=S: what the bot did there."""
        state = self._state(request)
        chat_id = _int(dict(request.match_info), "chat_id")
        query = dict(request.query)
        after = _int(query, "after", default=0)
        try:
            timeout = float(query.get("timeout", 0))
        except ValueError:
            raise UserApiError(400, "'timeout' must be a number of seconds") from None
        timeout = min(max(0.0, timeout), MAX_EVENTS_TIMEOUT)
        await state.signal.wait_for(lambda: bool(state.events_after(chat_id, after)), timeout)
        return _json_response({"events": state.events_after(chat_id, after)})

    async def file(self, request: web.Request) -> web.Response:
        """GET .../files/{file_id}: the bytes of a photo the bot sent."""
        state = self._state(request)
        stored = state.files.get(request.match_info["file_id"])
        if stored is None:
            raise UserApiError(404, f"no file {request.match_info['file_id']!r}")
        return web.Response(body=stored.data, content_type=stored.content_type)

    async def add_fault(self, request: web.Request) -> web.Response:
        """POST .../faults: the next matching Bot API call(s) fail (or are slow) as described."""
        from botbus.sandbox._errors import DEFAULT_DESCRIPTIONS
        from botbus.sandbox._state import Fault

        state = self._state(request)
        body = await _body(request)
        method = body.get("method")
        if not isinstance(method, str) or not method:
            raise UserApiError(400, "'method' must name a Bot API method, e.g. 'sendMessage'")
        code = _int(body, "error_code", default=0 if "delay" in body else None)
        delay = body.get("delay", 0.0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 60:
            raise UserApiError(400, "'delay' must be a number of seconds between 0 and 60")
        if code == 0 and not delay:
            raise UserApiError(400, "give an 'error_code' to fail with, or a 'delay' to be slow")
        retry_after = body.get("retry_after")
        if code == 429 and retry_after is None:
            retry_after = 1
        if retry_after is not None:
            retry_after = _int(body, "retry_after", default=retry_after)
        description = body.get("description")
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after}"
                if code == 429
                else DEFAULT_DESCRIPTIONS.get(code, f"Error {code}")
            )
        chat_id = body.get("chat_id")
        fault = Fault(
            method=method,
            error_code=code,
            description=str(description),
            retry_after=retry_after,
            chat_id=None if chat_id is None else _int(body, "chat_id"),
            times=_int(body, "times", default=1),
            delay=float(delay),
        )
        state.faults.append(fault)
        return _json_response({"ok": True}, status=201)

    async def stats(self, request: web.Request) -> web.Response:
        """GET .../stats: calls per method, errors per code, 429s, updates."""
        return _json_response(self._state(request).stats())

    async def commands(self, request: web.Request) -> web.Response:
        """GET .../commands?chat_id&user_id&lang: the menu a user sees, resolved by scope."""
        state = self._state(request)
        query = dict(request.query)
        user_id = _int(query, "user_id", default=1001)
        chat_id = _int(query, "chat_id", default=user_id)
        lang = query.get("lang", "")
        chat = state.chats.get(chat_id)
        if chat_id < 0:
            admin = chat is not None and user_id in chat.admins
            scopes = [f"chat_member:{chat_id}:{user_id}"]
            if admin:
                scopes.append(f"chat_administrators:{chat_id}")
            scopes.append(f"chat:{chat_id}")
            if admin:
                scopes.append("all_chat_administrators")
            scopes += ["all_group_chats", "default"]
        else:
            scopes = [f"chat:{chat_id}", "all_private_chats", "default"]
        for scope in scopes:
            for language in (lang, ""):
                found = state.commands.get((scope, language))
                if found:
                    return _json_response(
                        {"scope": scope, "language_code": language, "commands": found}
                    )
        return _json_response({"scope": None, "language_code": "", "commands": []})


def _queue_press(
    state: BotState, user: User, message: StoredMessage | None, data: str, where: Json
) -> web.Response:
    """Queue a callback_query update; ``where`` names the pressed message."""
    query = CallbackQuery(
        id=str(secrets.randbelow(10**18) + 10**17), user=user, message=message, data=data
    )
    state.callbacks[query.id] = query
    payload: Json = {"id": query.id, "from": user.to_json(), **where, "data": data}
    update_id = state.add_update("callback_query", payload)
    return _json_response({"update_id": update_id, "callback_query_id": query.id})


def _text(body: Json, name: str, *, limit: int = MAX_USER_TEXT) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise UserApiError(400, f"{name!r} must be a non-empty string")
    if len(value) > limit:
        raise UserApiError(400, f"{name!r} is longer than {limit} characters")
    return value


def _content(state: BotState, kind: str, body: Json) -> Json:
    """The StoredMessage fields of a user's message of ``kind``, shaped as Telegram's."""
    if kind == "text":
        text = _text(body, "text")
        return {"text": text, "entities": finish_entities(text, [])}
    if kind == "location":
        return {"location": _location(body.get("location"))}
    if kind == "sticker":
        return {"sticker": _sticker(state, body.get("sticker"))}
    stored = _uploaded(state, body.get(kind), kind)
    fields: Json = {}
    if "caption" in body:
        caption = _text(body, "caption", limit=MAX_USER_CAPTION)
        fields.update(caption=caption, caption_entities=finish_entities(caption, []))
    if kind == "photo":
        if not stored.width:
            raise UserApiError(400, "a photo must be a PNG, JPEG, GIF or WebP image")
        state.files[stored.file_id + "_s"] = stored  # the thumbnail's id, as bots send
        fields["photo"] = photo_sizes(stored)
    else:
        fields["document"] = {
            "file_name": stored.file_name,
            "mime_type": stored.content_type,
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
        }
    return fields


def _uploaded(state: BotState, file_id: object, kind: str) -> StoredFile:
    if not isinstance(file_id, str) or file_id not in state.files:
        raise UserApiError(400, f"{kind!r} must be the file_id of an upload (POST .../files first)")
    return state.files[file_id]


def _location(value: object) -> Json:
    if not isinstance(value, dict):
        raise UserApiError(400, '\'location\' must be {"latitude": ..., "longitude": ...}')
    try:
        latitude, longitude = float(value["latitude"]), float(value["longitude"])
    except (KeyError, TypeError, ValueError):
        raise UserApiError(400, "'location' needs numeric 'latitude' and 'longitude'") from None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise UserApiError(400, "latitude must be within ±90 and longitude within ±180")
    return {"latitude": latitude, "longitude": longitude}


def _sticker(state: BotState, value: object) -> Json:
    """A regular sticker: an emoji drawn as SVG, or an uploaded image (first emoji 🙂)."""
    if isinstance(value, str) and value in state.files:
        stored, emoji = state.files[value], "🙂"
        if not stored.width:
            raise UserApiError(400, "a sticker must be an image (WebP or PNG)")
    elif isinstance(value, str) and value.strip() and len(value) <= 8:
        emoji = value.strip()
        stored = state.store_file(
            emoji_sticker(emoji), "image/svg+xml", width=512, height=512, prefix="CAAC"
        )
    else:
        raise UserApiError(400, "'sticker' must be an emoji or the file_id of an uploaded image")
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "type": "regular",
        "width": stored.width,
        "height": stored.height,
        "is_animated": False,
        "is_video": False,
        "emoji": emoji,
        "file_size": len(stored.data),
    }


def _file_json(stored: StoredFile) -> Json:
    data: Json = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data),
        "file_name": stored.file_name,
        "mime_type": stored.content_type,
    }
    if stored.width:
        data.update(width=stored.width, height=stored.height)
    return data


def _button_data(markup: Json | None, label: object) -> str:
    """The callback_data of the button whose text (or 1-based number) is ``label``."""
    buttons = [b for row in (markup or {}).get("inline_keyboard", []) for b in row]
    if not buttons:
        raise UserApiError(409, "this message has no inline keyboard to press")
    labels = [str(b.get("text")) for b in buttons]
    if not isinstance(label, str | int) or isinstance(label, bool):
        raise UserApiError(400, f"give 'label' (one of {labels}) or 'data'")
    chosen = [b for b in buttons if b.get("text") == label]
    if not chosen and isinstance(label, str):
        chosen = [b for b in buttons if str(b.get("text")).casefold() == label.casefold()]
    if not chosen and str(label).isdigit() and 1 <= int(label) <= len(buttons):
        chosen = [buttons[int(label) - 1]]
    if not chosen:
        raise UserApiError(404, f"no button labelled {label!r}; buttons: {labels}")
    data = chosen[0].get("callback_data")
    if not isinstance(data, str):
        raise UserApiError(409, f"button {label!r} opens a URL; it has no callback data")
    return data


def _chat_instance(bot_id: int, chat_id: int) -> str:
    """A stable opaque id of the (bot, chat) pair, like Telegram's chat_instance."""
    digest = hashlib.sha256(f"{bot_id}:{chat_id}".encode()).digest()
    return str(int.from_bytes(digest[:8], "big") >> 1)


def _bot_json(bot: SandboxBot, *, token: bool = True) -> Json:
    data = {"id": bot.id, "username": bot.username, "first_name": bot.first_name}
    if token:
        data["token"] = bot.token
    return data


def from_browser(request: web.Request) -> bool:
    """Whether a web page made this request (browsers add these headers; API clients do not)."""
    return "Sec-Fetch-Site" in request.headers or "Origin" in request.headers


def _chat_json(chat: Chat, state: BotState | None = None) -> Json:
    data = chat.to_json()
    data["members"] = sorted(chat.members)
    data["admins"] = sorted(chat.admins)
    if state is not None:
        data["member_names"] = {
            str(uid): state.users[uid].first_name
            for uid in sorted(chat.members)
            if uid in state.users
        }
        if chat.type == "private":
            data["blocked"] = chat.id in state.blocked
    return data


def _chat_changed(state: BotState, chat: Chat) -> None:
    """Tell the readers of the user side (the web chat) that a chat's members changed."""
    state.add_event(chat.id, "chat", chat=_chat_json(chat, state))


def _sees(chat: Chat | None, user_id: int) -> bool:
    """Whether ``user_id`` sees ``chat``: their private chat, or a group they are in."""
    if chat is None:
        return False
    return chat.id == user_id if chat.type == "private" else user_id in chat.members
