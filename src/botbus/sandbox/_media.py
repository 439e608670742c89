"""Just enough image handling to fill PhotoSize and Sticker objects like Telegram does."""

from __future__ import annotations

import struct
from html import escape

from botbus.sandbox._state import Json, StoredFile


def image_size(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, mime type) of a PNG, JPEG, GIF or WebP image; None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height), "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height), "image/gif"
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height, "image/webp"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int, str] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # SOF markers carry the frame size; C4/C8/CC are not frames
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height), "image/jpeg"
        i += 2 + length
    return None


def photo_sizes(stored: StoredFile) -> list[Json]:
    """PhotoSize array: a thumbnail (if the image is big) and the original."""
    original = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data),
        "width": stored.width,
        "height": stored.height,
    }
    longest = max(stored.width, stored.height)
    if longest <= 90:
        return [original]
    scale = 90 / longest
    thumb = {
        "file_id": stored.file_id + "_s",
        "file_unique_id": stored.file_unique_id + "s",
        "file_size": len(stored.data),
        "width": max(1, round(stored.width * scale)),
        "height": max(1, round(stored.height * scale)),
    }
    return [thumb, original]


STICKER_SIZE = 512  # pixels; Telegram's regular stickers are 512 on their longest side


def emoji_sticker(emoji: str) -> bytes:
    """An SVG drawing of ``emoji``: the bytes behind a sandbox user's sticker."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{STICKER_SIZE}" '
        f'height="{STICKER_SIZE}" viewBox="0 0 100 100"><text x="50" y="50" '
        'font-size="80" text-anchor="middle" dominant-baseline="central">'
        f"{escape(emoji)}</text></svg>"
    ).encode()
