"""SandboxClient: act as Telegram users against a running sandbox, over HTTP only."""

from __future__ import annotations

import asyncio
import mimetypes
from types import TracebackType
from typing import Any

import aiohttp

from botbus.sandbox._errors import UserApiError
from botbus.sandbox._state import SandboxBot

DEFAULT_USER_ID = 1001
DEFAULT_WAIT = 5.0  # seconds wait_for waits for the bot by default
_POLL_SLICE = 25.0  # seconds of one long-poll request inside a longer wait


class SandboxClient:
    """The user side of a sandbox at ``base_url`` (e.g. ``http://127.0.0.1:8081``).

    A ``user`` argument is an id (a default user with that id and ``lang``)
    or a dict ``{"id", "first_name", "language_code", "username"?}``.
    Refusals raise :class:`~botbus.sandbox.UserApiError` with the sandbox's
    message.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/bot")
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        params: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{self.base_url}/sandbox{path}"
        try:
            async with self._session.request(
                method,
                url,
                json=json,
                data=data,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                if resp.status >= 400:
                    message = body.get("error") if isinstance(body, dict) else None
                    raise UserApiError(resp.status, message or f"HTTP {resp.status} from {url}")
                return body
        except aiohttp.ClientConnectionError as exc:
            raise UserApiError(
                503, f"cannot reach the sandbox at {self.base_url}: {exc}; is it running?"
            ) from exc

    @staticmethod
    def _bot(data: dict[str, Any]) -> SandboxBot:
        return SandboxBot(
            token=data["token"],
            id=int(data["id"]),
            username=data["username"],
            first_name=data.get("first_name", "botbus"),
        )

    # -- bots and limits -------------------------------------------------
    async def bots(self) -> list[SandboxBot]:
        """Every bot registered in the sandbox."""
        return [self._bot(b) for b in await self._request("GET", "/bots")]

    async def create_bot(
        self, *, username: str = "botbus_test_bot", token: str | None = None
    ) -> SandboxBot:
        """Register a bot (a token is made up unless given)."""
        body: dict[str, Any] = {"username": username}
        if token is not None:
            body["token"] = token
        return self._bot(await self._request("POST", "/bots", json=body))

    async def set_limits(self, **fields: Any) -> None:
        """Change flood limits, e.g. ``set_limits(chat_per_second=1, chat_burst=1)``."""
        await self._request("PUT", "/limits", json=fields)

    async def limits(self) -> dict[str, Any]:
        """The flood limits in force."""
        result: dict[str, Any] = await self._request("GET", "/limits")
        return result

    # -- what users do ---------------------------------------------------
    async def send_text(
        self,
        bot_id: int,
        text: str,
        *,
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        chat_id: int | None = None,
        lang: str = "en",
        reply_to: int | None = None,
        thread_id: int | None = None,
        as_group: bool = False,
    ) -> dict[str, Any]:
        """A user writes ``text`` (private chat unless ``chat_id`` names a group).

        ``thread_id``: in that forum topic of a forum group. ``as_group``: an
        admin writes anonymously, as the group (from GroupAnonymousBot).
        """
        extra: dict[str, Any] = {"text": text}
        if thread_id is not None:
            extra["thread_id"] = thread_id
        if as_group:
            extra["as_group"] = True
        return await self._send(bot_id, extra, user, chat_id, lang, reply_to)

    async def _send(
        self,
        bot_id: int,
        content: dict[str, Any],
        user: int | dict[str, Any],
        chat_id: int | None,
        lang: str,
        reply_to: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {**content, "user": user, "lang": lang}
        if chat_id is not None:
            body["chat_id"] = chat_id
        if reply_to is not None:
            body["reply_to"] = reply_to
        result: dict[str, Any] = await self._request("POST", f"/bots/{bot_id}/messages", json=body)
        return result

    async def upload(
        self, bot_id: int, data: bytes, filename: str, content_type: str | None = None
    ) -> dict[str, Any]:
        """Upload a user's file; returns ``{"file_id", "file_size", "mime_type", ...}``."""
        form = aiohttp.FormData()
        form.add_field(
            "file",
            data,
            filename=filename,
            content_type=content_type or mimetypes.guess_type(filename)[0] or "",
        )
        result: dict[str, Any] = await self._request("POST", f"/bots/{bot_id}/files", data=form)
        return result

    async def send_photo(
        self,
        bot_id: int,
        data: bytes,
        *,
        caption: str | None = None,
        filename: str = "photo.png",
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        chat_id: int | None = None,
        lang: str = "en",
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """A user sends an image (PNG, JPEG, GIF, WebP) as a photo, with an optional caption."""
        content = await self._file_content(bot_id, "photo", data, filename, caption)
        return await self._send(bot_id, content, user, chat_id, lang, reply_to)

    async def send_document(
        self,
        bot_id: int,
        data: bytes,
        filename: str,
        *,
        caption: str | None = None,
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        chat_id: int | None = None,
        lang: str = "en",
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """A user sends any file as a document, with an optional caption."""
        content = await self._file_content(bot_id, "document", data, filename, caption)
        return await self._send(bot_id, content, user, chat_id, lang, reply_to)

    async def _file_content(
        self, bot_id: int, kind: str, data: bytes, filename: str, caption: str | None
    ) -> dict[str, Any]:
        """Upload ``data`` and return the message content that sends it as ``kind``."""
        uploaded = await self.upload(bot_id, data, filename)
        content: dict[str, Any] = {kind: uploaded["file_id"]}
        if caption is not None:
            content["caption"] = caption
        return content

    async def send_location(
        self,
        bot_id: int,
        latitude: float,
        longitude: float,
        *,
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        chat_id: int | None = None,
        lang: str = "en",
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """A user shares a location."""
        content = {"location": {"latitude": latitude, "longitude": longitude}}
        return await self._send(bot_id, content, user, chat_id, lang, reply_to)

    async def send_sticker(
        self,
        bot_id: int,
        emoji: str,
        *,
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        chat_id: int | None = None,
        lang: str = "en",
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """A user sends a sticker showing ``emoji`` (or an uploaded image's file_id)."""
        return await self._send(bot_id, {"sticker": emoji}, user, chat_id, lang, reply_to)

    async def edit_text(
        self,
        bot_id: int,
        chat_id: int,
        message_id: int,
        text: str,
        *,
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        lang: str = "en",
    ) -> dict[str, Any]:
        """A user edits their own message (its text, or its caption): an edited_message."""
        result: dict[str, Any] = await self._request(
            "PATCH",
            f"/bots/{bot_id}/chats/{chat_id}/messages/{message_id}",
            json={"text": text, "caption": text, "user": user, "lang": lang},
        )
        return result

    async def create_group(
        self,
        bot_id: int,
        chat_id: int,
        title: str,
        *,
        admins: list[int] | list[dict[str, Any]],
        members: list[int] | list[dict[str, Any]] | tuple[int, ...] = (),
        forum: bool = False,
    ) -> dict[str, Any]:
        """Create a group (negative id) containing the bot, ``admins`` and ``members``.

        ``forum``: a supergroup with topics (users write in one with ``thread_id``).
        """
        body = {
            "chat_id": chat_id,
            "title": title,
            "admins": admins,
            "members": list(members),
            "forum": forum,
        }
        result: dict[str, Any] = await self._request("POST", f"/bots/{bot_id}/groups", json=body)
        return result

    async def join(
        self, bot_id: int, chat_id: int, user: int | dict[str, Any], *, lang: str = "en"
    ) -> dict[str, Any]:
        """``user`` joins group ``chat_id``; the bot gets a new_chat_members message."""
        result: dict[str, Any] = await self._request(
            "POST", f"/bots/{bot_id}/chats/{chat_id}/members", json={"user": user, "lang": lang}
        )
        return result

    async def promote(self, bot_id: int, chat_id: int, user_id: int) -> dict[str, Any]:
        """Member ``user_id`` of group ``chat_id`` becomes one of its administrators."""
        result: dict[str, Any] = await self._request(
            "POST", f"/bots/{bot_id}/chats/{chat_id}/admins", json={"user_id": user_id}
        )
        return result

    async def demote(self, bot_id: int, chat_id: int, user_id: int) -> dict[str, Any]:
        """Administrator ``user_id`` of group ``chat_id`` becomes a plain member again."""
        result: dict[str, Any] = await self._request(
            "DELETE", f"/bots/{bot_id}/chats/{chat_id}/admins/{user_id}"
        )
        return result

    async def press(
        self,
        bot_id: int,
        *,
        chat_id: int,
        message_id: int,
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        data: str | None = None,
        label: str | None = None,
        lang: str = "en",
    ) -> dict[str, Any]:
        """Press a button by ``label`` (text or 1-based number), or send raw ``data``."""
        body: dict[str, Any] = {
            "chat_id": chat_id,
            "message_id": message_id,
            "user": user,
            "lang": lang,
        }
        if data is not None:
            body["data"] = data
        if label is not None:
            body["label"] = label
        result: dict[str, Any] = await self._request("POST", f"/bots/{bot_id}/callbacks", json=body)
        return result

    async def press_inline(
        self,
        bot_id: int,
        data: str,
        *,
        user: int | dict[str, Any] = DEFAULT_USER_ID,
        lang: str = "en",
    ) -> dict[str, Any]:
        """Press a button under an inline-mode message: the query has no chat or message."""
        body = {"inline": True, "data": data, "user": user, "lang": lang}
        result: dict[str, Any] = await self._request("POST", f"/bots/{bot_id}/callbacks", json=body)
        return result

    async def block(self, bot_id: int, user_id: int) -> dict[str, Any]:
        """``user_id`` blocks the bot: sends to them now fail with 403."""
        result: dict[str, Any] = await self._request(
            "POST", f"/bots/{bot_id}/blocks", json={"user_id": user_id}
        )
        return result

    async def unblock(self, bot_id: int, user_id: int) -> dict[str, Any]:
        """``user_id`` unblocks the bot."""
        result: dict[str, Any] = await self._request("DELETE", f"/bots/{bot_id}/blocks/{user_id}")
        return result

    # -- what users read -------------------------------------------------
    async def chats(self, bot_id: int, *, user_id: int | None = None) -> list[dict[str, Any]]:
        """Every chat the bot is in (only those ``user_id`` sees, when given)."""
        params = {} if user_id is None else {"user_id": str(user_id)}
        result: list[dict[str, Any]] = await self._request(
            "GET", f"/bots/{bot_id}/chats", params=params
        )
        return result

    async def messages(
        self, bot_id: int, chat_id: int, *, after: int = 0, timeout: float = 0.0
    ) -> list[dict[str, Any]]:
        """Bot events in ``chat_id`` with seq > ``after``; waits up to ``timeout`` for one."""
        body = await self._request(
            "GET",
            f"/bots/{bot_id}/chats/{chat_id}/events",
            params={"after": str(after), "timeout": str(timeout)},
            timeout=timeout + 30.0,
        )
        events: list[dict[str, Any]] = body["events"]
        return events

    async def wait_for(
        self,
        bot_id: int,
        chat_id: int,
        *,
        count: int = 1,
        after: int = 0,
        timeout: float = DEFAULT_WAIT,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """The first ``count`` events (of ``kind``, if given) after ``after``.

        Raises TimeoutError listing what did arrive when fewer came in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen: list[dict[str, Any]] = []
        cursor = after
        while True:
            matching = [e for e in seen if kind is None or e["kind"] == kind]
            if len(matching) >= count:
                return matching[:count]
            remaining = deadline - loop.time()
            if remaining <= 0:
                arrived = [f"#{e['seq']} {e['kind']}: {_summary(e)}" for e in seen] or ["nothing"]
                raise TimeoutError(
                    f"bot {bot_id} produced {len(matching)} of {count} expected "
                    f"{kind or 'event'}(s) in chat {chat_id} within {timeout:g}s; "
                    f"arrived after seq {after}: " + "; ".join(arrived)
                )
            batch = await self.messages(
                bot_id, chat_id, after=cursor, timeout=min(remaining, _POLL_SLICE)
            )
            if batch:
                seen.extend(batch)
                cursor = batch[-1]["seq"]

    async def fail_next(
        self,
        bot_id: int,
        *,
        method: str,
        error_code: int,
        description: str | None = None,
        retry_after: int | None = None,
        chat_id: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (to ``chat_id``) fail like Telegram."""
        body: dict[str, Any] = {"method": method, "error_code": error_code, "times": times}
        if description is not None:
            body["description"] = description
        if retry_after is not None:
            body["retry_after"] = retry_after
        if chat_id is not None:
            body["chat_id"] = chat_id
        await self._request("POST", f"/bots/{bot_id}/faults", json=body)

    async def slow_next(
        self,
        bot_id: int,
        *,
        method: str,
        seconds: float,
        chat_id: int | None = None,
        times: int = 1,
    ) -> None:
        """Hold the next ``times`` calls of ``method`` for ``seconds`` before answering them."""
        body: dict[str, Any] = {"method": method, "delay": seconds, "times": times}
        if chat_id is not None:
            body["chat_id"] = chat_id
        await self._request("POST", f"/bots/{bot_id}/faults", json=body)

    async def stats(self, bot_id: int) -> dict[str, Any]:
        """Calls per method, errors per code, 429s sent, updates created/pending."""
        result: dict[str, Any] = await self._request("GET", f"/bots/{bot_id}/stats")
        return result

    async def commands(
        self,
        bot_id: int,
        *,
        user_id: int = DEFAULT_USER_ID,
        chat_id: int | None = None,
        lang: str = "",
    ) -> list[dict[str, Any]]:
        """The command menu ``user_id`` sees in ``chat_id`` (scope and language resolved)."""
        params = {"user_id": str(user_id), "lang": lang}
        if chat_id is not None:
            params["chat_id"] = str(chat_id)
        body = await self._request("GET", f"/bots/{bot_id}/commands", params=params)
        commands: list[dict[str, Any]] = body["commands"]
        return commands

    async def file(self, bot_id: int, file_id: str) -> bytes:
        """The bytes of a photo the bot sent (``photo[-1]["file_id"]``)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{self.base_url}/sandbox/bots/{bot_id}/files/{file_id}"
        async with self._session.get(url) as resp:
            if resp.status >= 400:
                body = await resp.json(content_type=None)
                raise UserApiError(resp.status, str(body.get("error")))
            return await resp.read()


def _summary(event: dict[str, Any]) -> str:
    message = event.get("message")
    if isinstance(message, dict):
        text = (
            message.get("text")
            or message.get("caption")
            or ("<photo>" if "photo" in message else "")
        )
        return repr(str(text)[:60])
    for key in ("action", "text", "message_id"):
        if key in event:
            return f"{key}={event[key]!r}"
    return ""
