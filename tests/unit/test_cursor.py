"""Opaque page cursors: round trip, and refusal of anything not made by encode_cursor."""

from __future__ import annotations

import pytest

from token_service.stores.cursor import decode_cursor, encode_cursor


@pytest.mark.parametrize("seq", [0, 1, 9, 10, 12345, 2**40])
def test_round_trip(seq: int) -> None:
    cursor = encode_cursor(seq)
    assert decode_cursor(cursor) == seq
    assert "=" not in cursor


def test_no_cursor_is_the_start() -> None:
    assert decode_cursor(None) == 0
    assert decode_cursor("") == 0


@pytest.mark.parametrize("cursor", ["!", "abc", "czE=", "czE\n", "eDE", "cw", "c-1", "x" * 100, "czE" + "\u00e9", "cy0x"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(cursor)
