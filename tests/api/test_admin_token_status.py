"""POST /v1/admin/token-status: the operator's full verdict on a token."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import (
    ADMIN_KEY,
    Actions,
    assert_error,
    bearer,
    store_unchanged,
    token_parts,
    with_settings,
    write_signing_key,
)
from token_service import create_app


@pytest.fixture
def secret(actions: Actions) -> dict[str, Any]:
    return actions.create_key("secret")


@pytest.fixture
def token(actions: Actions, secret: dict[str, Any]) -> str:
    return actions.token(secret["key"])


def status(actions: Actions, token: Any) -> dict[str, Any]:
    response = actions.admin("POST", "/v1/admin/token-status", json={"token": token})
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = dict(response.get_json())
    assert set(body) == {"active", "header", "claims", "reasons"}
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in body["reasons"]]


def test_valid_token(actions, token):
    body = status(actions, token)
    header, claims = token_parts(token)
    assert body == {"active": True, "header": header, "claims": claims, "reasons": []}


def test_every_reason_that_applies_is_listed(actions, token, clock):
    claims = token_parts(token)[1]
    by_sub = actions.revoke(sub=claims["sub"]).get_json()
    clock.advance(5)
    by_jti = actions.revoke(jti=claims["jti"]).get_json()  # kept until 5 s after the token has died
    clock.now = claims["exp"] + 31
    body = status(actions, token)
    assert body["active"] is False
    assert body["claims"] == claims
    assert set(codes(body)) == {"expired", "revoked"}
    # (the sub watermark may be forgotten by now: every token it covers has expired)
    assert by_jti["id"] in {reason.get("revocation_id") for reason in body["reasons"]}
    clock.now = claims["exp"] - 1
    body = status(actions, token)
    assert sorted((reason["code"], reason.get("revocation_id")) for reason in body["reasons"]) == sorted(
        [("revoked", by_sub["id"]), ("revoked", by_jti["id"])])
    assert all(isinstance(reason["detail"], str) and reason["detail"] for reason in body["reasons"])


def test_not_yet_valid(actions, token, clock):
    clock.advance(-60)
    assert codes(status(actions, token)) == ["not_yet_valid"]


def test_wrong_issuer_and_audience(actions, settings, clock):
    other = Actions(create_app(with_settings(settings, issuer="https://other.example.com", audience="billing"), clock=clock).test_client())
    foreign = other.token(other.create_key("secret")["key"])
    assert sorted(codes(status(actions, foreign))) == ["wrong_audience", "wrong_issuer"]


def test_bad_signature_shows_no_claims(actions, token):
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 0xFF
    body = status(actions, f"{header}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}")
    assert body["active"] is False
    assert body["header"] == token_parts(token)[0]
    assert body["claims"] is None
    assert codes(body) == ["bad_signature"]


def test_malformed_token(actions):
    body = status(actions, "not-a-jwt")
    assert body == {"active": False, "header": None, "claims": None, "reasons": body["reasons"]}
    assert codes(body) == ["malformed"]


def test_revoked_signing_key(actions, client, token):
    kid = client.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]
    revocation = actions.revoke(kid=kid).get_json()
    body = status(actions, token)
    assert body["active"] is False
    assert codes(body)[0] == "key_revoked"
    assert body["reasons"][0]["revocation_id"] == revocation["id"]


def test_unknown_key(actions, settings, clock, tmp_path):
    other = Actions(create_app(with_settings(settings, signing_key_file=write_signing_key(tmp_path)), clock=clock).test_client())
    foreign = other.token(other.create_key("secret")["key"])
    body = status(actions, foreign)
    assert codes(body) == ["unknown_key"]
    assert body["claims"] is None


def test_requests_that_are_refused(actions, client, secret, token):
    with store_unchanged(actions):
        for body in ({}, {"token": ""}, {"token": 5}, {"token": None}, {"token": token, "extra": 1}):
            assert_error(actions.admin("POST", "/v1/admin/token-status", json=body), 400, "invalid_request")
        assert_error(client.post("/v1/admin/token-status", json={"token": token}), 401, "unauthorized")
        assert_error(client.post("/v1/admin/token-status", json={"token": token}, headers=bearer(secret["key"])), 403, "access_denied")


def test_store_down_is_503(token, down_client):
    response = down_client.post("/v1/admin/token-status", json={"token": token}, headers=bearer(ADMIN_KEY))
    assert_error(response, 503, "temporarily_unavailable")


def test_the_verdict_says_by_how_much_a_token_expired(actions, token, clock):
    clock.advance(900 + 42.5)  # the clock starts a quarter second past iat
    [reason] = status(actions, token)["reasons"]
    assert reason["code"] == "expired" and "expired 42 s ago" in reason["detail"]
