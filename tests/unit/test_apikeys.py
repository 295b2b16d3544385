"""API key texts (kind, id, secret, CRC32 checksum) and the stored record."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import fields

import pytest

from token_service.apikeys import (
    KEY_ID_RE,
    ApiKey,
    digest_of,
    digests_match,
    generate_key_text,
    new_key_id,
    parse_key_text,
)

KEY_TEXT_RE = re.compile(r"^(pk|sk|ak)_[0-9A-Za-z]{16}_[0-9A-Za-z]{49}\Z")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KINDS = [("public", "pk"), ("secret", "sk"), ("admin", "ak")]


@pytest.mark.parametrize(("kind", "prefix"), KINDS)
def test_generated_text_has_the_documented_shape_and_parses_back(kind: str, prefix: str) -> None:
    key_id = new_key_id()
    text = generate_key_text(kind, key_id)  # type: ignore[arg-type]
    assert KEY_TEXT_RE.match(text), text
    assert text.startswith(f"{prefix}_{key_id}_")
    parsed = parse_key_text(text)
    assert parsed is not None
    assert parsed.kind == kind
    assert parsed.key_id == key_id
    assert parsed.digest == hashlib.sha256(text.encode()).digest()
    assert parsed.digest == digest_of(text)
    assert text not in repr(parsed)


def test_key_ids() -> None:
    ids = {new_key_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(KEY_ID_RE.match(key_id) for key_id in ids)
    assert not KEY_ID_RE.match("A" * 16 + "\n")


def test_secret_part_has_at_least_256_bits() -> None:
    text = generate_key_text("secret", new_key_id())
    secret_and_checksum = text.split("_")[2]
    assert len(secret_and_checksum) == 43 + 6
    assert 43 * math.log2(62) >= 256


def test_secrets_differ_and_use_the_whole_alphabet() -> None:
    key_id = new_key_id()
    secrets_seen = [generate_key_text("secret", key_id).split("_")[2][:43] for _ in range(300)]
    assert len(set(secrets_seen)) == len(secrets_seen)
    assert set("".join(secrets_seen)) == set(BASE62)


@pytest.mark.parametrize(("kind", "prefix"), KINDS)
def test_every_single_character_change_is_refused(kind: str, prefix: str) -> None:
    text = generate_key_text(kind, new_key_id())  # type: ignore[arg-type]
    alphabet = BASE62 + "_-.+/= \n"
    for index in range(len(text)):
        for char in alphabet:
            if char != text[index]:
                changed = text[:index] + char + text[index + 1:]
                assert parse_key_text(changed) is None, (index, char)


@pytest.mark.parametrize(("kind", "prefix"), KINDS)
def test_every_truncation_and_extension_is_refused(kind: str, prefix: str) -> None:
    text = generate_key_text(kind, new_key_id())  # type: ignore[arg-type]
    for length in range(len(text)):
        assert parse_key_text(text[:length]) is None, length
        assert parse_key_text(text[length + 1:]) is None, length
    for suffix in ("0", "a", "_", "\n", "\r\n", " ", "\x00"):
        assert parse_key_text(text + suffix) is None, repr(suffix)
        assert parse_key_text(suffix + text) is None, repr(suffix)


def test_adjacent_transpositions_are_refused() -> None:
    text = generate_key_text("secret", new_key_id())
    for index in range(len(text) - 1):
        if text[index] != text[index + 1]:
            swapped = text[:index] + text[index + 1] + text[index] + text[index + 2:]
            assert parse_key_text(swapped) is None, index


def test_changing_the_kind_is_refused() -> None:
    text = generate_key_text("public", new_key_id())
    for prefix in ("sk", "ak"):
        assert parse_key_text(prefix + text[2:]) is None


@pytest.mark.parametrize("text", ["", "sk_", "sk__", "xk_" + "A" * 16 + "_" + "B" * 49, "SK_" + "A" * 16 + "_" + "B" * 49,
                                  "ghp_" + "A" * 36, "Bearer sk_x"])
def test_malformed_texts_are_refused(text: str) -> None:
    assert parse_key_text(text) is None


def test_digests_match() -> None:
    a, b = digest_of("one"), digest_of("two")
    assert digests_match(a, digest_of("one"))
    assert not digests_match(a, b)


def record(**changes: object) -> ApiKey:
    values: dict[str, object] = dict(
        id="AbCdEfGh12345678", type="secret", name="backend", personas=("support-bot",), scopes=("chat:read",),
        origins=(), permissions=("introspect",), created_at=1000, expires_at=None, digest=digest_of("sk_text"),
    )
    values.update(changes)
    return ApiKey(**values)  # type: ignore[arg-type]


def test_usable_until_revoked_or_expired() -> None:
    assert record().usable(10**10)
    assert record(expires_at=2000).usable(1999)
    assert record(expires_at=2000).usable(1999.999)
    assert not record(expires_at=2000).usable(2000)
    assert not record(expires_at=2000).usable(2001)
    assert not record(revoked_at=1500).usable(1000)
    assert not record(revoked_at=1500, expires_at=2000).usable(1600)


def test_allows_persona() -> None:
    key = record(personas=("support-bot", "sales"))
    assert key.allows_persona("support-bot") and key.allows_persona("sales")
    assert not key.allows_persona("other")
    assert not key.allows_persona("support")
    assert record(personas=("*",)).allows_persona("anything")
    assert not record(personas=()).allows_persona("support-bot")


def test_metadata_never_includes_the_digest() -> None:
    key = record(last_used_at=1200, rotated_from="OldOldOldOld1234")
    data = key.metadata()
    assert "digest" not in data
    assert key.digest not in data.values()
    assert key.digest.hex() not in repr(data)
    assert set(data) == {"id", "type", "name", "personas", "scopes", "origins", "permissions", "created_at", "expires_at",
                         "last_used_at", "revoked_at", "rotated_from"}
    assert data["rotated_from"] == "OldOldOldOld1234"
    assert "rotated_from" not in record().metadata()
    assert "digest" not in repr(key)
    assert {f.name for f in fields(ApiKey)} >= {"digest"}


def test_with_last_used_is_a_copy() -> None:
    key = record()
    used = key.with_last_used(1234)
    assert used.last_used_at == 1234
    assert key.last_used_at is None
