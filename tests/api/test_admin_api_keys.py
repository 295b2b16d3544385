"""/v1/admin/api-keys: creating each kind of key, validation, listing, last use, deleting."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, ORIGIN, Actions, all_items, assert_error, bearer, store_unchanged

METADATA = {"id", "type", "name", "personas", "scopes", "origins", "permissions", "created_at", "expires_at", "last_used_at", "revoked_at"}
PREFIX = {"public": "pk_", "secret": "sk_", "admin": "ak_"}


def keys(actions: Actions) -> list[dict[str, Any]]:
    return all_items(actions, "/v1/admin/api-keys")


def record(actions: Actions, key_id: str) -> dict[str, Any]:
    return next(item for item in keys(actions) if item["id"] == key_id)


def create(actions: Actions, **body: Any) -> Any:
    return actions.admin("POST", "/v1/admin/api-keys", json=body)


# -- creating ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["public", "secret", "admin"])
def test_create_each_kind_shows_the_key_once(actions, clock, kind):
    created = actions.create_key(kind)
    text = created["key"]
    assert text.startswith(PREFIX[kind])
    assert created["id"] in text
    assert created["type"] == kind
    assert created["name"] == f"test {kind}"
    assert created["created_at"] == int(clock())
    assert created["expires_at"] is None and created["last_used_at"] is None and created["revoked_at"] is None
    assert set(created) >= METADATA | {"key"}
    listing = keys(actions)
    assert [item["id"] for item in listing] == [created["id"]]
    assert set(listing[0]) >= METADATA
    assert "key" not in listing[0] and "digest" not in listing[0]
    assert listing[0] == {name: value for name, value in created.items() if name != "key"}
    raw = json.dumps(listing)
    digest = hashlib.sha256(text.encode()).digest()
    for secret_form in (text, text.split("_", 2)[2], digest.hex(), base64.b64encode(digest).decode(),
                        base64.urlsafe_b64encode(digest).rstrip(b"=").decode()):
        assert secret_form not in raw


def test_create_response_is_not_cached(actions):
    response = create(actions, type="secret", personas=["support-bot"])
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"


def test_created_keys_carry_their_settings(actions, clock):
    expires = int(clock()) + 3600
    public = actions.create_key("public", personas=["a", "b"], scopes=["chat:read"], origins=[ORIGIN, "http://localhost:3000"],
                                expires_at=expires, name=None)
    assert (public["personas"], public["scopes"], public["origins"], public["expires_at"], public["name"]) == (
        ["a", "b"], ["chat:read"], [ORIGIN, "http://localhost:3000"], expires, None)
    secret = actions.create_key("secret", personas=["*"], permissions=["introspect"])
    assert secret["personas"] == ["*"] and secret["permissions"] == ["introspect"]
    assert secret["scopes"] == ["chat:read", "chat:write"]  # the configured defaults
    minimal = create(actions, type="secret", personas=["x"])
    assert minimal.status_code == 201 and minimal.get_json()["name"] is None


def test_key_with_expiry_works_until_then(actions, client, clock):
    key = actions.create_key("secret", expires_at=int(clock()) + 60)
    actions.mint(key["key"])
    clock.advance(59)
    actions.mint(key["key"])
    clock.advance(1)
    assert_error(client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(key["key"])), 401, "unauthorized")


@pytest.mark.parametrize(("body", "error"), [
    ({}, "invalid_request"),
    ({"name": "no type", "personas": ["a"]}, "invalid_request"),
    ({"type": "root", "personas": ["a"]}, "invalid_request"),
    ({"type": None, "personas": ["a"]}, "invalid_request"),
    ({"type": "public", "personas": ["a"]}, "invalid_request"),
    ({"type": "public", "personas": ["a"], "origins": []}, "invalid_request"),
    ({"type": "public", "personas": ["a"], "origins": ["*"]}, "invalid_request"),
    ({"type": "public", "personas": ["a"], "origins": ["https://chat.example.com/path"]}, "invalid_request"),
    ({"type": "public", "personas": ["a"], "origins": [ORIGIN], "permissions": ["introspect"]}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "origins": [ORIGIN]}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "permissions": ["admin"]}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "permissions": "introspect"}, "invalid_request"),
    ({"type": "secret"}, "invalid_request"),
    ({"type": "secret", "personas": []}, "invalid_request"),
    ({"type": "public", "origins": [ORIGIN]}, "invalid_request"),
    ({"type": "secret", "personas": ["bad persona"]}, "invalid_request"),
    ({"type": "secret", "personas": ["x" * 129]}, "invalid_request"),
    ({"type": "secret", "personas": ["support-bot\n"]}, "invalid_request"),
    ({"type": "public", "personas": ["a"], "origins": [ORIGIN + "\n"]}, "invalid_request"),
    ({"type": "secret", "personas": ["*", "a"]}, "invalid_request"),
    ({"type": "secret", "personas": "a"}, "invalid_request"),
    ({"type": "secret", "personas": [1]}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "scopes": ["chat:admin"]}, "invalid_scope"),
    ({"type": "public", "personas": ["a"], "origins": [ORIGIN], "scopes": ["chat:read", "nope"]}, "invalid_scope"),
    ({"type": "secret", "personas": ["a"], "scopes": "chat:read"}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "expires_at": 1}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "expires_at": "tomorrow"}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "expires_at": True}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "owner": "bob"}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "name": ""}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "name": 5}, "invalid_request"),
    ({"type": "secret", "personas": ["a"], "name": "x" * 129}, "invalid_request"),
    ({"type": "secret", "personas": None}, "invalid_request"),
    ({"type": "admin", "personas": ["a"]}, "invalid_request"),
    ({"type": "admin", "origins": [ORIGIN]}, "invalid_request"),
    ({"type": "admin", "permissions": ["introspect"]}, "invalid_request"),
])
def test_invalid_key_requests_create_nothing(actions, body, error):
    actions.create_key("secret")
    with store_unchanged(actions):
        assert_error(create(actions, **body), 400, error)


def test_expires_at_now_or_past_is_400(actions, clock):
    with store_unchanged(actions):
        for at in (int(clock()), int(clock()) - 1):
            assert_error(create(actions, type="secret", personas=["a"], expires_at=at), 400, "invalid_request")


def test_unknown_field_is_named(actions):
    with store_unchanged(actions):
        body = assert_error(create(actions, type="secret", personas=["a"], owner="bob"), 400, "invalid_request")
    assert "owner" in body["error_description"]


def test_bad_bodies_create_nothing(actions):
    with store_unchanged(actions):
        text = actions.admin("POST", "/v1/admin/api-keys", data="type=secret", content_type="text/plain")
        assert_error(text, 415, "unsupported_media_type")
        assert_error(actions.admin("POST", "/v1/admin/api-keys", data=b'{"type": "secret"}'), 415, "unsupported_media_type")
        assert_error(actions.admin("POST", "/v1/admin/api-keys", data="{", content_type="application/json"), 400, "invalid_request")
        assert_error(actions.admin("POST", "/v1/admin/api-keys"), 415, "unsupported_media_type")
        too_big = {"type": "secret", "personas": ["a"], "name": "x" * 17000}
        assert_error(actions.admin("POST", "/v1/admin/api-keys", json=too_big), 413, "payload_too_large")


# -- listing ----------------------------------------------------------------------------------------


def test_listing_pages_in_creation_order(actions):
    made = [actions.create_key("secret", name=f"k{i}")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = actions.admin("GET", "/v1/admin/api-keys", query_string=query).get_json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= 2
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == made and pages == 3
    assert actions.admin("GET", "/v1/admin/api-keys?limit=5").get_json()["next_cursor"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "limit=%C2%B2", "limit=%EF%BC%95", "cursor=not-a-cursor",
                                   "cursor=%FF"])
def test_bad_page_parameters_are_400(actions, query):
    actions.create_key("secret")
    assert_error(actions.admin("GET", f"/v1/admin/api-keys?{query}"), 400, "invalid_request")


# -- last use ---------------------------------------------------------------------------------------


def test_last_used_at_is_written_at_most_once_a_minute(actions, clock):
    key = actions.create_key("secret")
    assert record(actions, key["id"])["last_used_at"] is None
    first = int(clock())
    actions.mint(key["key"])
    assert record(actions, key["id"])["last_used_at"] == first
    clock.advance(30)
    actions.mint(key["key"])
    assert record(actions, key["id"])["last_used_at"] == first
    clock.advance(31)
    actions.mint(key["key"])
    assert record(actions, key["id"])["last_used_at"] == int(clock()) == first + 61


def test_admin_key_records_its_use(actions, client, clock):
    admin = actions.create_key("admin")
    assert client.get("/v1/admin/api-keys", headers=bearer(admin["key"])).status_code == 200
    assert record(actions, admin["id"])["last_used_at"] == int(clock())


# -- deleting ---------------------------------------------------------------------------------------


def test_delete_stops_the_key_at_once(actions, client, clock):
    key = actions.create_key("secret")
    actions.mint(key["key"])
    response = actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_error(client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(key["key"])), 401, "unauthorized")
    assert record(actions, key["id"])["revoked_at"] == int(clock())


def test_delete_keeps_tokens_valid_without_revoke_tokens(actions):
    key = actions.create_key("secret")
    token = actions.token(key["key"])
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}").status_code == 204
    assert actions.verify(token).status_code == 200
    assert all_items(actions, "/v1/admin/revocations") == []


@pytest.mark.parametrize("flag", ["true", "True", "1"])
def test_delete_with_revoke_tokens_refuses_its_tokens(actions, flag):
    key = actions.create_key("secret")
    other = actions.create_key("secret")
    tokens = [actions.token(key["key"]), actions.token(key["key"], sub="someone-else")]
    unrelated = actions.token(other["key"])
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}?revoke_tokens={flag}").status_code == 204
    for token in tokens:
        assert_error(actions.verify(token), 401, "invalid_token")
    assert actions.verify(unrelated).status_code == 200
    [entry] = all_items(actions, "/v1/admin/revocations")
    assert (entry["type"], entry["value"]) == ("client_id", key["id"])


def test_delete_public_key_drops_its_origin_from_cors(actions, client):
    key = actions.create_key("public", origins=["https://only-here.example.com"])
    preflight = {"Origin": "https://only-here.example.com", "Access-Control-Request-Method": "POST"}
    assert client.options("/v1/tokens", headers=preflight).headers.get("Access-Control-Allow-Origin") == "https://only-here.example.com"
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}").status_code == 204
    assert "Access-Control-Allow-Origin" not in client.options("/v1/tokens", headers=preflight).headers


def test_delete_unknown_key_is_404(actions):
    actions.create_key("secret")
    with store_unchanged(actions):
        for key_id in ("AAAAAAAAAAAAAAAA", "nope"):
            assert_error(actions.admin("DELETE", f"/v1/admin/api-keys/{key_id}"), 404, "not_found")


def test_delete_bootstrap_is_409(actions):
    with store_unchanged(actions):
        assert_error(actions.admin("DELETE", "/v1/admin/api-keys/bootstrap"), 409, "conflict")
        assert_error(actions.admin("DELETE", "/v1/admin/api-keys/bootstrap?revoke_tokens=true"), 409, "conflict")
    assert actions.admin("GET", "/v1/admin/api-keys").status_code == 200


@pytest.mark.parametrize("flag", ["yes", "", "2", "truee"])
def test_bad_revoke_tokens_is_400_and_deletes_nothing(actions, flag):
    key = actions.create_key("secret")
    token = actions.token(key["key"])
    with store_unchanged(actions):
        assert_error(actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}?revoke_tokens={flag}"), 400, "invalid_request")
    actions.mint(key["key"])
    assert actions.verify(token).status_code == 200


def test_deleting_twice_keeps_the_first_revocation_time(actions, clock):
    key = actions.create_key("secret")
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}").status_code == 204
    first = int(clock())
    clock.advance(10)
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}").status_code == 204
    assert record(actions, key["id"])["revoked_at"] == first


# -- who may call -----------------------------------------------------------------------------------


def test_admin_key_created_through_the_api_can_administer(actions, client):
    admin = Actions(client, admin_key=actions.create_key("admin")["key"])
    made = admin.create_key("secret")
    assert made["key"].startswith("sk_")
    assert admin.admin("GET", "/v1/admin/revocations").status_code == 200
    assert admin.admin("DELETE", f"/v1/admin/api-keys/{made['id']}").status_code == 204
    assert_error(client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(made["key"])), 401, "unauthorized")


def test_deleted_admin_key_loses_access(actions, client):
    admin = actions.create_key("admin")
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{admin['id']}").status_code == 204
    assert_error(client.get("/v1/admin/api-keys", headers=bearer(admin["key"])), 401, "unauthorized")


@pytest.mark.parametrize("kind", ["secret", "public"])
def test_non_admin_keys_are_403(actions, client, kind):
    key = actions.create_key(kind, **({"permissions": ["introspect"]} if kind == "secret" else {}))
    headers = bearer(key["key"])
    client.get("/v1/admin/api-keys", headers=headers)  # first use: records last_used_at
    with store_unchanged(actions):
        assert_error(client.get("/v1/admin/api-keys", headers=headers), 403, "access_denied")
        assert_error(client.post("/v1/admin/api-keys", json={"type": "admin"}, headers=headers), 403, "access_denied")
        assert_error(client.delete(f"/v1/admin/api-keys/{key['id']}", headers=headers), 403, "access_denied")


def test_unauthenticated_is_401(actions, client):
    with store_unchanged(actions):
        for headers in ({}, bearer(ADMIN_KEY + "x"), bearer("ak_" + "A" * 66)):
            assert_error(client.post("/v1/admin/api-keys", json={"type": "admin"}, headers=headers), 401, "unauthorized")
            assert_error(client.get("/v1/admin/api-keys", headers=headers), 401, "unauthorized")


def test_store_down_is_503(down_client):
    down = Actions(down_client)
    assert_error(create(down, type="secret", personas=["a"]), 503, "temporarily_unavailable")
    assert_error(down.admin("GET", "/v1/admin/api-keys"), 503, "temporarily_unavailable")
    assert_error(down.admin("DELETE", "/v1/admin/api-keys/AAAAAAAAAAAAAAAA"), 503, "temporarily_unavailable")
