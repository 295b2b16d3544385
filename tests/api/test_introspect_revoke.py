"""/v1/introspect (RFC 7662) and /v1/revoke (RFC 7009)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import (
    ADMIN_KEY,
    ORIGIN,
    Actions,
    all_items,
    assert_error,
    bearer,
    store_unchanged,
    token_parts,
)
from token_service.apikeys import generate_key_text, new_key_id

ACTIVE_FIELDS = {"active", "iss", "aud", "sub", "personaId", "scope", "client_id", "exp", "iat", "nbf", "jti", "token_type"}


@pytest.fixture
def minter(actions: Actions) -> dict[str, Any]:
    return actions.create_key("secret")


@pytest.fixture
def token(actions: Actions, minter: dict[str, Any]) -> str:
    return actions.token(minter["key"])


@pytest.fixture
def introspector(actions: Actions, client: Any) -> str:
    """A secret key granted introspect, used once."""
    key = actions.create_key("secret", permissions=["introspect"])["key"]
    assert client.post("/v1/introspect", data={"token": "x"}, headers=bearer(key)).status_code == 200
    return key


def introspect(client: Any, key: str | None, as_json: bool = False, **body: Any) -> Any:
    headers = bearer(key) if key else {}
    if as_json:
        return client.post("/v1/introspect", json=body, headers=headers)
    return client.post("/v1/introspect", data=body, headers=headers)


# -- introspection ----------------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
def test_active_token_has_exactly_the_contract_fields(client, token, introspector, as_json):
    response = introspect(client, introspector, as_json=as_json, token=token)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == ACTIVE_FIELDS
    claims = token_parts(token)[1]
    assert body == {"active": True, **claims, "token_type": "Bearer"}


def test_token_type_hint_is_accepted(client, token, introspector):
    response = introspect(client, introspector, token=token, token_type_hint="access_token")
    assert response.get_json()["active"] is True


@pytest.mark.parametrize("admin", ["bootstrap", "created"])
def test_admin_keys_may_introspect(actions, client, token, admin):
    key = ADMIN_KEY if admin == "bootstrap" else actions.create_key("admin")["key"]
    response = introspect(client, key, token=token)
    assert response.status_code == 200
    assert response.get_json()["active"] is True


def test_secret_key_without_introspect_is_403(actions, client, token, minter):
    with store_unchanged(actions):
        assert_error(introspect(client, minter["key"], token=token), 403, "access_denied")
        assert_error(introspect(client, minter["key"], as_json=True, token=token), 403, "access_denied")


def test_public_key_is_403(actions, client, token):
    key = actions.create_key("public")
    assert_error(introspect(client, key["key"], token=token), 403, "access_denied")
    from_page = client.post("/v1/introspect", data={"token": token}, headers={**bearer(key["key"]), "Origin": ORIGIN})
    assert_error(from_page, 403, "access_denied")


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic abc", "Bearer sk_not_a_key", "Bearer unknown-credential"])
def test_unauthenticated_is_401(actions, client, token, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    with store_unchanged(actions):
        response = client.post("/v1/introspect", data={"token": token}, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="http://localhost:8000"')


def test_missing_token_is_400(client, introspector):
    for kwargs in ({"data": {}}, {"data": {"token": ""}}, {"json": {}}, {"json": {"token_type_hint": "access_token"}},
                   {"data": {"token_type_hint": "access_token"}}):
        assert_error(client.post("/v1/introspect", headers=bearer(introspector), **kwargs), 400, "invalid_request")


def test_bad_introspect_bodies(client, introspector, token):
    headers = bearer(introspector)
    assert_error(client.post("/v1/introspect", json={"token": token, "extra": 1}, headers=headers), 400, "invalid_request")
    assert_error(client.post("/v1/introspect", json={"token": 5}, headers=headers), 400, "invalid_request")
    assert_error(client.post("/v1/introspect", json={"token": None}, headers=headers), 400, "invalid_request")
    assert_error(client.post("/v1/introspect", data=f"token={token}&token=x", content_type="application/x-www-form-urlencoded",
                             headers=headers), 400, "invalid_request")
    assert_error(client.post("/v1/introspect", data=token, content_type="text/plain", headers=headers), 415, "unsupported_media_type")


def test_inactive_tokens_are_exactly_active_false(actions, client, introspector, minter, clock):
    expiring = actions.token(minter["key"], ttl=1)
    revoked = actions.token(minter["key"])
    assert client.post("/v1/revoke", data={"token": revoked}).status_code == 200
    by_sub = actions.token(minter["key"], sub="someone")
    assert actions.revoke(sub="someone").status_code == 201
    good = actions.token(minter["key"])
    forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    clock.advance(1 + 30)
    for bad in ("garbage", "a.b.c", forged, expiring, revoked, by_sub, "x" * 5000):
        for as_json in (False, True):
            response = introspect(client, introspector, as_json=as_json, token=bad)
            assert response.status_code == 200
            assert response.get_json() == {"active": False}
    assert introspect(client, introspector, token=good).get_json()["active"] is True


def test_introspect_fails_closed_when_the_store_is_down(token, down_client):
    response = introspect(down_client, ADMIN_KEY, token=token)
    assert_error(response, 503, "temporarily_unavailable")
    assert "active" not in response.get_json()
    # A key whose record cannot be read cannot authenticate: 503, not 401 (the store, not the key, failed).
    assert_error(introspect(down_client, generate_key_text("secret", new_key_id()), token=token), 503, "temporarily_unavailable")


# -- self-revocation --------------------------------------------------------------------------------


def jti_entries(actions: Actions, jti: str) -> list[dict[str, Any]]:
    return [item for item in all_items(actions, "/v1/admin/revocations") if item["type"] == "jti" and item["value"] == jti]


@pytest.mark.parametrize("as_json", [False, True])
def test_revoke_refuses_the_token_everywhere(actions, client, token, introspector, as_json, clock):
    kwargs: dict[str, Any] = {"json": {"token": token}} if as_json else {"data": {"token": token, "token_type_hint": "access_token"}}
    response = client.post("/v1/revoke", **kwargs)
    assert response.status_code == 200
    assert response.get_json() == {}
    assert actions.verify(token).status_code == 401
    assert introspect(client, introspector, token=token).get_json() == {"active": False}
    [entry] = jti_entries(actions, token_parts(token)[1]["jti"])
    assert entry["revoked_at"] == int(clock())
    assert entry["expires_at"] == token_parts(token)[1]["exp"] + 30


def test_revoking_twice_keeps_one_entry(actions, client, token):
    for _ in range(3):
        assert client.post("/v1/revoke", data={"token": token}).get_json() == {}
    assert len(jti_entries(actions, token_parts(token)[1]["jti"])) == 1


def test_revoke_needs_no_credentials_and_leaves_other_tokens(actions, client, minter):
    first, second = actions.token(minter["key"]), actions.token(minter["key"])
    assert client.post("/v1/revoke", data={"token": first}, headers={"Origin": ORIGIN}).status_code == 200
    assert actions.verify(first).status_code == 401
    assert actions.verify(second).status_code == 200


def test_revoke_of_garbage_is_200_and_stores_nothing(actions, client, clock, minter):
    expired = actions.token(minter["key"], ttl=1)
    clock.advance(40)
    with store_unchanged(actions):
        for bad in ("garbage", "a.b.c", "x" * 5000, expired):
            response = client.post("/v1/revoke", data={"token": bad})
            assert response.status_code == 200
            assert response.get_json() == {}


def test_revoke_without_token_is_400(actions, client):
    with store_unchanged(actions):
        for kwargs in ({}, {"data": {}}, {"data": {"token": ""}}, {"json": {}}, {"json": {"token_type_hint": "access_token"}}):
            assert_error(client.post("/v1/revoke", **kwargs), 400, "invalid_request")


def test_revoke_with_a_text_body_is_415(actions, client, token):
    with store_unchanged(actions):
        assert_error(client.post("/v1/revoke", data=token, content_type="text/plain"), 415, "unsupported_media_type")
        assert_error(client.post("/v1/revoke", data=f"token={token}".encode()), 415, "unsupported_media_type")
    assert actions.verify(token).status_code == 200


def test_revoke_refuses_unknown_fields_and_oversized_bodies(actions, client, token):
    with store_unchanged(actions):
        assert_error(client.post("/v1/revoke", json={"token": token, "reason": "x"}), 400, "invalid_request")
        assert_error(client.post("/v1/revoke", data={"token": token, "pad": "x" * 17000}), 413, "payload_too_large")
    assert actions.verify(token).status_code == 200


def test_revoke_fails_closed_when_the_store_is_down(token, down_client):
    assert_error(down_client.post("/v1/revoke", data={"token": token}), 503, "temporarily_unavailable")


def test_a_key_without_the_grant_is_403_before_the_body_is_read(client, minter):
    response = client.post("/v1/introspect", data={}, headers={"Authorization": f"Bearer {minter['key']}"})
    assert_error(response, 403, "access_denied")


def test_unrecognised_form_parameters_are_ignored(actions, client, token):
    """RFC 6749 §3.1: unknown form parameters are ignored (a public client may send client_id)."""
    response = client.post("/v1/revoke", data={"token": token, "client_id": "web"})
    assert response.status_code == 200 and response.get_json() == {}
    assert actions.verify(token).status_code == 401
