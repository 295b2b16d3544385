"""Opaque page cursors shared by the stores: a sequence number, base64url-encoded."""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_SEQ = 2**63 - 1


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
    seq = int(text[1:])
    if seq >= _MAX_SEQ:  # Redis's counters (INCR) stop at 2**63 - 1; "after seq" reads from seq + 1 (a stream id)
        raise ValueError("bad cursor")
    return seq


_STREAM_ID = re.compile(r"^[0-9]{1,15}-[0-9]{1,15}\Z")


def encode_id_cursor(record_id: str) -> str:
    """The cursor for "after the audit record ``record_id``" (a stream id, ``<ms>-<n>``)."""
    return base64.urlsafe_b64encode(f"a{record_id}".encode()).rstrip(b"=").decode()


def decode_id_cursor(cursor: str | None) -> str | None:
    """The audit record id a cursor stands for (None for none); ValueError for a cursor not made here."""
    if cursor is None or cursor == "":
        return None
    if len(cursor) > 48 or not _ALPHABET.match(cursor):
        raise ValueError("bad cursor")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("bad cursor") from None
    if not text.startswith("a") or not _STREAM_ID.match(text[1:]) or encode_id_cursor(text[1:]) != cursor:
        raise ValueError("bad cursor")
    return text[1:]
