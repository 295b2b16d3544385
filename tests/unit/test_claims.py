"""Claim values (API.md: personaId, sub) and the claim set's shape."""

from __future__ import annotations

from typing import Any

import pytest

from token_service.claims import REQUIRED_CLAIMS, AccessClaims, valid_client_id, valid_jti, valid_persona_id, valid_sub

GOOD = {
    "iss": "http://localhost:8000", "aud": "persona-api", "sub": "user-42", "personaId": "support-bot",
    "scope": "chat:read chat:write", "iat": 100, "nbf": 100, "exp": 1000, "jti": "j-1", "client_id": "AbCdEfGh12345678",
}


@pytest.mark.parametrize("value", ["a", "support-bot", "A.b_c:d-e", "9" * 128])
def test_valid_persona_ids(value: str) -> None:
    assert valid_persona_id(value)


@pytest.mark.parametrize("value", ["", "p" * 129, "support bot", "bot/1", "bot\n", "\nbot", "b\u00f6t", "bot\x00", None, 7, ["bot"]])
def test_invalid_persona_ids(value: Any) -> None:
    assert not valid_persona_id(value)


@pytest.mark.parametrize("value", ["u", "anon:abc", "user@example.com", "!~", "x" * 256, '"quoted"'])
def test_valid_subs(value: str) -> None:
    assert valid_sub(value)


@pytest.mark.parametrize("value", ["", "x" * 257, "a b", "user\n", "user\r\n", "tab\there", "\u00e9", "\x7f", None, 1])
def test_invalid_subs(value: Any) -> None:
    assert not valid_sub(value)


def test_client_id_and_jti() -> None:
    assert valid_client_id("AbCdEfGh12345678") and valid_client_id("bootstrap")
    assert not valid_client_id("a b") and not valid_client_id("k\n") and not valid_client_id("")
    assert valid_jti("2f1c8a4e-6a55-4d2b-9d3e-0c7b1f6f2a11")
    assert not valid_jti("j\n") and not valid_jti("") and not valid_jti("j" * 257)


def test_round_trip_in_signing_order() -> None:
    claims = AccessClaims.from_dict(dict(GOOD))
    assert claims is not None
    assert claims.persona_id == "support-bot"
    assert claims.scopes == ("chat:read", "chat:write")
    assert claims.scope == "chat:read chat:write"
    assert claims.to_dict() == GOOD
    assert list(claims.to_dict()) == list(REQUIRED_CLAIMS)


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_every_claim_is_required(claim: str) -> None:
    data = dict(GOOD)
    del data[claim]
    assert AccessClaims.from_dict(data) is None


def test_no_other_claim_is_accepted() -> None:
    assert AccessClaims.from_dict({**GOOD, "email": "a@b.c"}) is None


@pytest.mark.parametrize(("claim", "value"), [
    ("iat", 1.0), ("nbf", True), ("exp", "1000"), ("aud", ["persona-api"]), ("iss", None), ("scope", ["chat:read"]),
    ("scope", "a  b"), ("personaId", "bad id"), ("sub", ""),
])
def test_wrong_types_are_refused(claim: str, value: Any) -> None:
    assert AccessClaims.from_dict({**GOOD, claim: value}) is None
