"""Opaque page cursors shared by the stores: a sequence number, base64url-encoded."""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")


def encode_cursor(seq: int) -> str:
    """The cursor for "after sequence number ``seq``"."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> int:
    """The sequence number a cursor stands for (0 for none); ValueError for a cursor not made here."""
    if cursor is None or cursor == "":
        return 0
    if len(cursor) > 32 or not _ALPHABET.match(cursor):
        raise ValueError("bad cursor")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("bad cursor") from None
    if not text.startswith("s") or not text[1:].isdigit() or encode_cursor(int(text[1:])) != cursor:
        raise ValueError("bad cursor")
    return int(text[1:])
