"""Formatting entities: HTML, MarkdownV2 and legacy Markdown, parsed like Telegram does.

Telegram turns a formatted text into plain text plus a list of
MessageEntity objects whose ``offset``/``length`` count UTF-16 code units,
and refuses text it cannot parse with "can't parse entities: <reason>",
where the reason names a UTF-8 byte offset of the input. It also detects
commands, mentions, hashtags and URLs in every text on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from botbus.sandbox._errors import ApiError, bad_request

Entity = dict[str, Any]

_HTML_TAGS: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_ENTITY = re.compile(r"&(#[xX][0-9a-fA-F]{1,8}|#[0-9]{1,10}|[a-zA-Z]{1,10});")
_TAG_NAME = re.compile(r"[a-zA-Z0-9-]*")
_ATTR_NAME = re.compile(r"[a-zA-Z0-9_-]*")

_MD2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}

# Entities Telegram finds in any text, formatted or not.
_AUTO_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("url", re.compile(r"(?<![\w@/])https?://[^\s<>\"]+[^\s<>\".,;:!?)\]]")),
    ("bot_command", re.compile(r"(?<![\w/])/[a-zA-Z0-9_]{1,64}(?:@[a-zA-Z0-9_]{3,32})?(?!\w)")),
    ("mention", re.compile(r"(?<![\w@])@[a-zA-Z0-9_]{5,32}(?!\w)")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d]\w*")),
)
_OPAQUE = frozenset({"code", "pre", "text_link", "custom_emoji", "url"})


class _ParseError(Exception):
    """Internal: a reason to put after "can't parse entities: "."""


@dataclass
class _Open:
    """An entity whose start was seen and whose end is still ahead."""

    type: str
    start: int  # index in the output text
    byte_offset: int  # UTF-8 byte offset of the start in the input
    tag: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


def _byte_offsets(text: str) -> list[int]:
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode("utf-8")))
    return offsets


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, the unit of entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def parse_formatted(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    """Plain text and entities of ``text`` under ``parse_mode``; ApiError when unparsable.

    Entities use Python string indices here; :func:`finish_entities` converts.
    """
    mode = (parse_mode or "").strip().lower()
    try:
        if mode == "":
            return text, []
        if mode == "html":
            return _parse_html(text)
        if mode == "markdownv2":
            return _parse_markdown_v2(text)
        if mode == "markdown":
            return _parse_markdown(text)
    except _ParseError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    raise bad_request(f"unsupported parse_mode {parse_mode!r}")


def finish_entities(text: str, entities: list[Entity], *, detect: bool = True) -> list[Entity]:
    """Add auto-detected entities, convert indices to UTF-16 and sort like Telegram."""
    found = list(entities)
    if detect:
        taken = [(e["offset"], e["offset"] + e["length"]) for e in found if e["type"] in _OPAQUE]
        for kind, pattern in _AUTO_PATTERNS:
            for match in pattern.finditer(text):
                start, end = match.span()
                if any(start < b and a < end for a, b in taken):
                    continue
                found.append({"type": kind, "offset": start, "length": end - start})
                if kind == "url":
                    taken.append((start, end))
    prefix = [0]
    for char in text:
        prefix.append(prefix[-1] + (2 if ord(char) > 0xFFFF else 1))
    result = []
    for entity in found:
        start, end = entity["offset"], entity["offset"] + entity["length"]
        converted = dict(entity)
        converted["offset"] = prefix[start]
        converted["length"] = prefix[end] - prefix[start]
        result.append(converted)
    result.sort(key=lambda e: (e["offset"], -e["length"]))
    return result


def validate_entities(raw: object, text: str) -> list[Entity]:
    """Check an explicit ``entities`` list sent instead of a parse_mode."""
    if not isinstance(raw, list):
        raise bad_request("can't parse entities JSON object")
    total = utf16_len(text)
    checked: list[Entity] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise bad_request("can't parse MessageEntity JSON object")
        offset, length = item.get("offset"), item.get("length")
        if not isinstance(offset, int) or not isinstance(length, int):
            raise bad_request("can't parse MessageEntity JSON object")
        if offset < 0 or length <= 0 or offset + length > total:
            continue  # Telegram silently drops entities outside the text
        checked.append(dict(item))
    checked.sort(key=lambda e: (e["offset"], -e["length"]))
    return checked


def _close(opened: _Open, end: int, entities: list[Entity]) -> None:
    if end <= opened.start:
        return  # Telegram drops empty entities
    entity: Entity = {"type": opened.type, "offset": opened.start, "length": end - opened.start}
    if opened.type == "text_link":
        url = opened.attrs.get("href", "")
        if not url:
            return
        entity["url"] = url
    elif opened.type == "custom_emoji":
        entity["custom_emoji_id"] = opened.attrs.get("emoji-id", "")
    elif opened.type == "pre" and opened.attrs.get("language"):
        entity["language"] = opened.attrs["language"]
    elif opened.type == "blockquote" and "expandable" in opened.attrs:
        entity["type"] = "expandable_blockquote"
    entities.append(entity)


def _parse_html(text: str) -> tuple[str, list[Entity]]:
    offsets = _byte_offsets(text)
    out: list[str] = []
    size = 0
    stack: list[_Open] = []
    entities: list[Entity] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "&":
            match = _HTML_ENTITY.match(text, i)
            decoded = _decode_html_entity(match.group(1)) if match else None
            if match and decoded is not None:
                out.append(decoded)
                size += len(decoded)
                i = match.end()
                continue
            out.append(char)
            size += 1
            i += 1
            continue
        if char != "<":
            out.append(char)
            size += 1
            i += 1
            continue
        if text.startswith("</", i):
            end = text.find(">", i)
            if end == -1:
                raise _ParseError(f"Unclosed end tag at byte offset {offsets[i]}")
            name = text[i + 2 : end].strip().lower()
            if not stack:
                raise _ParseError(f"Unexpected end tag at byte offset {offsets[i]}")
            top = stack.pop()
            if name != top.tag:
                raise _ParseError(
                    f'Unmatched end tag at byte offset {offsets[i]}, expected "</{top.tag}>", '
                    f'found "</{name}>"'
                )
            if top.tag == "code" and stack and stack[-1].tag == "pre" and "class" in top.attrs:
                language = top.attrs["class"].removeprefix("language-")
                if top.attrs["class"].startswith("language-") and language:
                    stack[-1].attrs["language"] = language
            else:
                _close(top, size, entities)
            i = end + 1
            continue
        opened, i = _html_start_tag(text, i, offsets, size)
        stack.append(opened)
    if stack:
        raise _ParseError(f"Can't find end tag corresponding to start tag {stack[-1].tag}")
    return "".join(out), entities


def _html_start_tag(text: str, i: int, offsets: list[int], size: int) -> tuple[_Open, int]:
    """Parse ``<name attr="v" ...>`` at ``i``; returns the open entity and the next index."""
    begin = i
    name_match = _TAG_NAME.match(text, i + 1)
    assert name_match is not None  # the pattern matches the empty string
    name = name_match.group(0).lower()
    if name not in _HTML_TAGS:
        raise _ParseError(f'Unsupported start tag "{name}" at byte offset {offsets[begin]}')
    i = name_match.end()
    attrs: dict[str, str] = {}
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            raise _ParseError(f"Unclosed start tag at byte offset {offsets[begin]}")
        if text[i] == ">":
            i += 1
            break
        attr_match = _ATTR_NAME.match(text, i)
        assert attr_match is not None
        attr = attr_match.group(0).lower()
        if not attr:
            raise _ParseError(
                f'Empty attribute name in the tag "{name}" at byte offset {offsets[begin]}'
            )
        i = attr_match.end()
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] != "=":
            attrs[attr] = ""  # a bare attribute, e.g. <blockquote expandable>
            continue
        if i >= n:
            raise _ParseError(f"Unclosed start tag at byte offset {offsets[begin]}")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] in "\"'":
            quote = text[i]
            end = text.find(quote, i + 1)
            if end == -1:
                raise _ParseError(f"Unclosed start tag at byte offset {offsets[begin]}")
            raw_value = text[i + 1 : end]
            i = end + 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] != ">":
                i += 1
            raw_value = text[start:i]
        attrs[attr] = _unescape_html(raw_value)
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise _ParseError(
            f'Tag "span" must have class "tg-spoiler" at byte offset {offsets[begin]}'
        )
    if name == "tg-emoji" and not attrs.get("emoji-id"):
        raise _ParseError(
            f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {offsets[begin]}'
        )
    return _Open(_HTML_TAGS[name], size, offsets[begin], tag=name, attrs=attrs), i


def _decode_html_entity(body: str) -> str | None:
    if body.startswith(("#x", "#X")):
        code = int(body[2:], 16)
    elif body.startswith("#"):
        code = int(body[1:])
    else:
        return _HTML_NAMED.get(body.lower())
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def _unescape_html(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        decoded = _decode_html_entity(match.group(1))
        return match.group(0) if decoded is None else decoded

    return _HTML_ENTITY.sub(replace, value)


def _reserved(char: str) -> _ParseError:
    return _ParseError(
        f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
    )


def _parse_markdown_v2(text: str) -> tuple[str, list[Entity]]:
    offsets = _byte_offsets(text)
    out: list[str] = []
    stack: list[_Open] = []
    entities: list[Entity] = []
    quote: _Open | None = None
    line_start = True
    i, n = 0, len(text)

    def emit(chars: str) -> None:
        nonlocal line_start
        out.append(chars)
        line_start = chars.endswith("\n")

    def toggle(kind: str, width: int) -> None:
        nonlocal i
        if stack and stack[-1].type == kind:
            _close(stack.pop(), len(out), entities)
        elif any(o.type == kind for o in stack):
            top = stack[-1]
            raise _ParseError(
                f"Can't find end of {_MD2_NAMES[top.type]} entity at byte offset {top.byte_offset}"
            )
        else:
            stack.append(_Open(kind, len(out), offsets[i]))
        i += width

    while i < n:
        char = text[i]
        top = stack[-1] if stack else None
        if char == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            emit(text[i + 1])
            i += 2
            continue
        if top is not None and top.type == "code":
            if char == "`":
                _close(stack.pop(), len(out), entities)
            else:
                emit(char)
            i += 1
            continue
        if top is not None and top.type == "pre":
            if text.startswith("```", i):
                _close(stack.pop(), len(out), entities)
                i += 3
            else:
                emit(char)
                i += 1
            continue
        if line_start:
            if char == ">" or text.startswith("**>", i):
                if quote is None:
                    quote = _Open("blockquote", len(out), offsets[i])
                    if char == "*":
                        quote.attrs["expandable"] = ""
                i += 1 if char == ">" else 3
                line_start = False
                continue
            if quote is not None:
                # the quote ended with the previous line; its newline stays outside
                _close(quote, len(out) - 1, entities)
                quote = None
        if char not in _MD2_RESERVED:
            emit(char)
            i += 1
            continue
        if char == "*":
            toggle("bold", 1)
        elif char == "_":
            if text.startswith("__", i):
                toggle("underline", 2)
            else:
                toggle("italic", 1)
        elif char == "~":
            toggle("strikethrough", 1)
        elif char == "|" and text.startswith("||", i):
            toggle("spoiler", 2)
        elif char == "`":
            if text.startswith("```", i):
                newline = text.find("\n", i + 3)
                opened = _Open("pre", len(out), offsets[i])
                language = text[i + 3 : newline].strip() if newline != -1 else ""
                if language and not any(c.isspace() for c in language):
                    opened.attrs["language"] = language
                    i = newline + 1
                else:
                    i += 3
                stack.append(opened)
            else:
                stack.append(_Open("code", len(out), offsets[i]))
                i += 1
        elif char == "[":
            stack.append(_Open("text_link", len(out), offsets[i]))
            i += 1
        elif char == "!" and text.startswith("![", i):
            stack.append(_Open("custom_emoji", len(out), offsets[i]))
            i += 2
        elif char == "]" and top is not None and top.type in ("text_link", "custom_emoji"):
            url, i = _md2_url(text, i + 1, offsets)
            stack.pop()
            if top.type == "custom_emoji":
                top.attrs["emoji-id"] = url.removeprefix("tg://emoji?id=")
            else:
                top.attrs["href"] = url
            _close(top, len(out), entities)
        else:
            raise _reserved(char)
    if stack:
        top = stack[-1]
        raise _ParseError(
            f"Can't find end of {_MD2_NAMES[top.type]} entity at byte offset {top.byte_offset}"
        )
    if quote is not None:
        _close(quote, len(out), entities)
    return "".join(out), entities


def _md2_url(text: str, i: int, offsets: list[int]) -> tuple[str, int]:
    """Read ``(url)`` after a link's ``]``; returns the url and the next index."""
    if i >= len(text) or text[i] != "(":
        return "", i
    start = i
    url: list[str] = []
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            url.append(text[i + 1])
            i += 2
            continue
        if char == ")":
            return "".join(url), i + 1
        url.append(char)
        i += 1
    raise _ParseError(f"Can't find end of a URL at byte offset {offsets[start]}")


_MD1_TYPES = {"*": "bold", "_": "italic", "`": "code"}


def _parse_markdown(text: str) -> tuple[str, list[Entity]]:
    """Legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    offsets = _byte_offsets(text)
    out: list[str] = []
    entities: list[Entity] = []
    size = 0
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            size += 1
            i += 2
            continue
        if char not in "_*`[":
            out.append(char)
            size += 1
            i += 1
            continue
        begin = i
        if text.startswith("```", i):
            end = text.find("```", i + 3)
            if end == -1:
                raise _ParseError(
                    f"Can't find end of the entity starting at byte offset {offsets[begin]}"
                )
            body = text[i + 3 : end]
            opened = _Open("pre", size, offsets[begin])
            first, newline, rest = body.partition("\n")
            if newline and first and not any(c.isspace() for c in first):
                opened.attrs["language"] = first
                body = rest
            out.append(body)
            size += len(body)
            _close(opened, size, entities)
            i = end + 3
            continue
        if char == "[":
            close = text.find("]", i + 1)
            if close == -1 or not text.startswith("(", close + 1):
                raise _ParseError(
                    f"Can't find end of the entity starting at byte offset {offsets[begin]}"
                )
            url_end = text.find(")", close + 2)
            if url_end == -1:
                raise _ParseError(
                    f"Can't find end of the entity starting at byte offset {offsets[begin]}"
                )
            label = text[i + 1 : close]
            opened = _Open(
                "text_link", size, offsets[begin], attrs={"href": text[close + 2 : url_end]}
            )
            out.append(label)
            size += len(label)
            _close(opened, size, entities)
            i = url_end + 1
            continue
        end = text.find(char, i + 1)
        if end == -1:
            raise _ParseError(
                f"Can't find end of the entity starting at byte offset {offsets[begin]}"
            )
        body = text[i + 1 : end]
        opened = _Open(_MD1_TYPES[char], size, offsets[begin])
        out.append(body)
        size += len(body)
        _close(opened, size, entities)
        i = end + 1
    return "".join(out), entities


__all__ = [
    "ApiError",
    "Entity",
    "finish_entities",
    "parse_formatted",
    "utf16_len",
    "validate_entities",
]
