"""Reading Bot API parameters from a query string, JSON, form or multipart body.

Telegram accepts the same parameter as a native JSON value or as a string
(form bodies carry only strings, with objects JSON-encoded), so every
accessor here accepts both and refuses anything else with a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from botbus.sandbox._errors import ApiError, bad_request

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # Telegram's limit for bot uploads


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str
    content_type: str
    data: bytes


class Params:
    """The parameters of one Bot API call, with typed accessors."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    @classmethod
    async def from_request(cls, request: web.Request) -> Params:
        """Collect the query string and the body; junk bodies raise a 400."""
        values: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.can_read_body:
            return cls(values)
        content_type = request.content_type
        if content_type == "application/json":
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise bad_request("can't parse JSON object") from None
                if not isinstance(body, dict):
                    raise bad_request("JSON object expected as request body")
                values.update(body)
        elif content_type == "multipart/form-data":
            try:
                reader = await request.multipart()
                while True:
                    part = await reader.next()
                    if part is None:
                        break
                    if not isinstance(part, BodyPartReader) or part.name is None:
                        continue
                    if part.filename is not None:
                        data = await part.read(decode=False)
                        values[part.name] = Upload(
                            part.filename,
                            part.headers.get("Content-Type", "application/octet-stream"),
                            bytes(data),
                        )
                    else:
                        values[part.name] = await part.text()
            except (ValueError, AssertionError) as exc:
                raise bad_request(f"can't parse multipart body: {exc}") from None
        else:
            try:
                form = await request.post()
            except ValueError:
                raise bad_request("can't parse request body") from None
            for key, value in form.items():
                if isinstance(value, str):
                    values[key] = value
                elif isinstance(value, bytes | bytearray):
                    values[key] = value.decode("utf-8", errors="replace")
                else:
                    values[key] = Upload(value.filename, value.content_type, value.file.read())
        return cls(values)

    def has(self, name: str) -> bool:
        """Whether ``name`` was sent with a non-empty value."""
        return self.values.get(name) not in (None, "")

    def str_(self, name: str, *, missing: str | None = None) -> str | None:
        """A string parameter; numbers are accepted as their text."""
        value = self.values.get(name)
        if value is None:
            if missing is not None:
                raise bad_request(missing)
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float | str):
            return str(value)
        raise bad_request(f'field "{name}" must be of type String')

    def int_(self, name: str, *, missing: str | None = None) -> int | None:
        """An integer parameter (a string of digits counts)."""
        value = self.values.get(name)
        if value is None or value == "":
            if missing is not None:
                raise bad_request(missing)
            return None
        if isinstance(value, bool):
            raise bad_request(f'field "{name}" must be of type Integer')
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad_request(f'field "{name}" must be of type Integer')

    def bool_(self, name: str) -> bool:
        """A boolean parameter; absent means False."""
        value = self.values.get(name)
        if value is None or value == "":
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int):
            return value != 0
        raise bad_request(f'field "{name}" must be of type Boolean')

    def json_(self, name: str, *, error: str) -> Any:
        """An object/array parameter, native or JSON-encoded; ``error`` if unparsable."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(error) from None
        if isinstance(value, dict | list):
            return value
        raise bad_request(error)

    def chat_id(self, name: str = "chat_id") -> int | str:
        """The chat_id parameter: an integer id or an ``@username``."""
        value = self.values.get(name)
        if value is None or value == "":
            raise bad_request(f"{name} is empty")
        if isinstance(value, bool):
            raise bad_request("chat not found")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                return text
        raise bad_request(f'field "{name}" must be of type Integer or String')

    def upload(self, name: str) -> Upload | str | None:
        """A file parameter: an uploaded part, or a file_id / URL string."""
        value = self.values.get(name)
        if isinstance(value, Upload):
            if len(value.data) > MAX_UPLOAD_BYTES:
                raise ApiError(413, "Request Entity Too Large")
            return value
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        raise bad_request(f'field "{name}" must be a file or a String')
