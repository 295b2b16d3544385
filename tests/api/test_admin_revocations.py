"""/v1/admin/revocations: revoking by each target, listing with pages, lifting, forgetting."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ORIGIN, Actions, all_items, assert_error, bearer, store_unchanged, token_parts

FIELDS = {"id", "type", "value", "reason", "revoked_at", "expires_at"}
HORIZON = 900 + 30


@pytest.fixture
def secret(actions: Actions) -> dict[str, Any]:
    return actions.create_key("secret", personas=["*"])


@pytest.fixture
def token(actions: Actions, secret: dict[str, Any]) -> str:
    return actions.token(secret["key"])


def created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.get_json()
    body = dict(response.get_json())
    assert set(body) == FIELDS
    assert body["id"]
    return body


def listed(actions: Actions) -> list[dict[str, Any]]:
    return all_items(actions, "/v1/admin/revocations")


# -- each target ------------------------------------------------------------------------------------


def test_revoke_by_jti(actions, token, clock):
    jti = token_parts(token)[1]["jti"]
    body = created(actions.revoke(jti=jti, reason="leaked in a log"))
    now = int(clock())
    assert body == {
        "id": body["id"], "type": "jti", "value": jti, "reason": "leaked in a log", "revoked_at": now,
        "expires_at": now + HORIZON + 30,  # an unknown token: max TTL plus twice the skew
    }
    assert_error(actions.verify(token), 401, "invalid_token")
    assert listed(actions) == [body]


def test_revoke_a_jti_never_seen_is_allowed(actions, clock):
    body = created(actions.revoke(jti="never-issued-0001"))
    assert body["type"] == "jti" and body["value"] == "never-issued-0001"
    assert body["reason"] is None
    assert body["expires_at"] == int(clock()) + HORIZON + 30


def test_revoke_by_token_stores_its_jti_until_it_expires(actions, token, clock):
    claims = token_parts(token)[1]
    body = created(actions.revoke(token=token, reason=None))
    assert body["type"] == "jti"
    assert body["value"] == claims["jti"]
    assert body["reason"] is None
    assert body["revoked_at"] == int(clock())
    assert body["expires_at"] == claims["exp"] + 30
    assert token not in str(listed(actions))
    assert_error(actions.verify(token), 401, "invalid_token")


def test_revoke_by_token_of_a_short_token(actions, secret):
    token = actions.token(secret["key"], ttl=5)
    body = created(actions.revoke(token=token))
    assert body["expires_at"] == token_parts(token)[1]["exp"] + 30


@pytest.mark.parametrize("target", ["sub", "personaId", "client_id"])
def test_watermark_refuses_earlier_tokens_only(actions, secret, clock, target):
    other_key = actions.create_key("secret", personas=["*"])
    covered = actions.token(secret["key"], sub="alice", personaId="support-bot")
    value = {"sub": "alice", "personaId": "support-bot", "client_id": secret["id"]}[target]
    # Tokens of another subject, persona and credential are not touched.
    untouched = actions.token(other_key["key"], sub="bob", personaId="sales-bot")
    clock.advance(1)
    body = created(actions.revoke(**{target: value}))
    now = int(clock())
    assert body["type"] == target and body["value"] == value
    assert body["revoked_at"] == now
    assert body["expires_at"] == now + HORIZON
    assert_error(actions.verify(covered), 401, "invalid_token")
    assert actions.verify(untouched).status_code == 200
    clock.advance(1)
    later = actions.token(secret["key"], sub="alice", personaId="support-bot")
    assert actions.verify(later).status_code == 200
    assert_error(actions.verify(covered), 401, "invalid_token")


def test_revoke_by_kid_takes_the_key_out_of_service(actions, client, token):
    kid = client.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]
    assert token_parts(token)[0]["kid"] == kid
    body = created(actions.revoke(kid=kid, reason="key compromised"))
    assert body["type"] == "kid" and body["value"] == kid
    assert body["expires_at"] is None
    assert client.get("/.well-known/jwks.json").get_json() == {"keys": []}
    assert_error(actions.verify(token), 401, "invalid_token")
    secret = actions.create_key("secret")
    response = client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(secret["key"]))
    assert_error(response, 503, "temporarily_unavailable")
    public = actions.create_key("public")
    response = client.post("/v1/tokens", json={"personaId": "support-bot"}, headers={**bearer(public["key"]), "Origin": ORIGIN})
    assert_error(response, 503, "temporarily_unavailable")


def test_revoke_by_kid_can_be_lifted(actions, client, token):
    kid = client.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]
    body = created(actions.revoke(kid=kid))
    assert actions.admin("DELETE", f"/v1/admin/revocations/{body['id']}").status_code == 204
    assert [key["kid"] for key in client.get("/.well-known/jwks.json").get_json()["keys"]] == [kid]
    assert actions.verify(token).status_code == 200


def test_unknown_kid_is_404(actions, client, token):
    with store_unchanged(actions):
        assert_error(actions.revoke(kid="no-such-kid"), 404, "not_found")
    assert len(client.get("/.well-known/jwks.json").get_json()["keys"]) == 1
    assert actions.verify(token).status_code == 200


# -- validation -------------------------------------------------------------------------------------


def test_reason_up_to_256_characters(actions, token):
    assert created(actions.revoke(sub="alice", reason="r" * 256))["reason"] == "r" * 256
    with store_unchanged(actions):
        assert_error(actions.revoke(sub="bob", reason="r" * 257), 400, "invalid_request")
        assert_error(actions.revoke(sub="bob", reason=5), 400, "invalid_request")
        assert_error(actions.revoke(sub="bob", reason=["x"]), 400, "invalid_request")


@pytest.mark.parametrize("body", [{}, {"reason": "x"}, {"jti": "a", "sub": "b"}, {"sub": "a", "personaId": "b"},
                                  {"token": "a.b.c", "jti": "x"}])
def test_zero_or_two_targets_is_400(actions, token, body):
    with store_unchanged(actions):
        assert_error(actions.revoke(**body), 400, "invalid_request")
    assert actions.verify(token).status_code == 200


@pytest.mark.parametrize("body", [
    {"jti": ""}, {"jti": "a b"}, {"jti": 5}, {"jti": None}, {"jti": "x" * 257},
    {"token": "garbage"}, {"token": ""}, {"token": 7}, {"token": None},
    {"sub": ""}, {"sub": "user 42"}, {"sub": "x" * 257}, {"sub": ["alice"]}, {"sub": None},
    {"personaId": "bad persona"}, {"personaId": "x" * 129}, {"personaId": "a/b"}, {"personaId": 1},
    {"client_id": "has space"}, {"client_id": ""}, {"client_id": {"id": 1}},
    {"kid": ""}, {"kid": 3}, {"kid": None},
    {"sub": "alice\n"}, {"personaId": "support-bot\n"}, {"client_id": "abc\n"}, {"jti": "abc\n"},
    {"sub": "alice", "note": "unknown field"},
])
def test_bad_values_are_400_and_store_nothing(actions, token, body):
    with store_unchanged(actions):
        assert_error(actions.revoke(**body), 400, "invalid_request")
    assert actions.verify(token).status_code == 200


def test_token_from_another_key_is_400(actions, token):
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    with store_unchanged(actions):
        assert_error(actions.revoke(token=forged), 400, "invalid_request")


def test_unknown_field_is_named(actions):
    with store_unchanged(actions):
        body = assert_error(actions.revoke(sub="alice", comment="x"), 400, "invalid_request")
    assert "comment" in body["error_description"]


def test_bad_bodies(actions):
    def post(**kwargs: Any) -> Any:
        return actions.admin("POST", "/v1/admin/revocations", **kwargs)

    with store_unchanged(actions):
        assert_error(post(data="sub=alice", content_type="text/plain"), 415, "unsupported_media_type")
        assert_error(post(data=b'{"sub": "alice"}'), 415, "unsupported_media_type")
        assert_error(post(data="{", content_type="application/json"), 400, "invalid_request")
        assert_error(post(data='["sub"]', content_type="application/json"), 400, "invalid_request")
        assert_error(post(json={"sub": "a", "reason": "x" * 17000}), 413, "payload_too_large")


# -- listing ----------------------------------------------------------------------------------------


def test_listing_pages_oldest_first(actions):
    made = [created(actions.revoke(sub=f"user-{i}"))["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query: dict[str, Any] = {"limit": 3}
        if cursor:
            query["cursor"] = cursor
        response = actions.admin("GET", "/v1/admin/revocations", query_string=query)
        assert response.status_code == 200
        body = response.get_json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= 3
        seen.extend(item["id"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    assert pages == 3


def test_listing_defaults_and_empty(actions):
    response = actions.admin("GET", "/v1/admin/revocations")
    assert response.get_json() == {"items": [], "next_cursor": None}
    ids = [created(actions.revoke(jti=f"j-{i}"))["id"] for i in range(3)]
    body = actions.admin("GET", "/v1/admin/revocations").get_json()
    assert [item["id"] for item in body["items"]] == ids
    assert body["next_cursor"] is None
    body = actions.admin("GET", "/v1/admin/revocations?limit=3").get_json()
    assert body["next_cursor"] is None and len(body["items"]) == 3


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1.5", "limit=%C2%B2", "limit=%D9%A3", "limit=+5",
                                   "cursor=not-a-cursor", "cursor=%00%01", "cursor=" + "A" * 200])
def test_bad_page_parameters_are_400(actions, query):
    created(actions.revoke(sub="alice"))
    assert_error(actions.admin("GET", f"/v1/admin/revocations?{query}"), 400, "invalid_request")


def test_limit_bounds_are_accepted(actions):
    for limit in (1, 100):
        assert actions.admin("GET", f"/v1/admin/revocations?limit={limit}").status_code == 200


# -- lifting and forgetting -------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["jti", "token", "sub", "personaId", "client_id"])
def test_lifting_lets_the_token_through_again(actions, token, secret, target):
    claims = token_parts(token)[1]
    value = {"jti": claims["jti"], "token": token, "sub": "user-42", "personaId": "support-bot", "client_id": secret["id"]}[target]
    body = created(actions.revoke(**{target: value}))
    assert actions.verify(token).status_code == 401
    response = actions.admin("DELETE", f"/v1/admin/revocations/{body['id']}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert actions.verify(token).status_code == 200
    assert listed(actions) == []
    assert_error(actions.admin("DELETE", f"/v1/admin/revocations/{body['id']}"), 404, "not_found")


def test_lifting_one_of_two_watermarks_keeps_the_other(actions, token, clock):
    first = created(actions.revoke(sub="user-42"))
    clock.advance(1)
    second = created(actions.revoke(sub="user-42"))
    assert actions.admin("DELETE", f"/v1/admin/revocations/{second['id']}").status_code == 204
    assert actions.verify(token).status_code == 401
    assert [item["id"] for item in listed(actions)] == [first["id"]]
    assert actions.admin("DELETE", f"/v1/admin/revocations/{first['id']}").status_code == 204
    assert actions.verify(token).status_code == 200


def test_lifting_an_unknown_id_is_404(actions):
    created(actions.revoke(sub="alice"))
    with store_unchanged(actions):
        for rid in ("rev_0000000000000000000", "nope", "x" * 300):
            assert_error(actions.admin("DELETE", f"/v1/admin/revocations/{rid}"), 404, "not_found")


def test_entries_are_forgotten_once_expired(actions, client, token, clock):
    kid = client.get("/.well-known/jwks.json").get_json()["keys"][0]["kid"]
    short = actions.token(actions.create_key("secret")["key"], ttl=10)
    by_token = created(actions.revoke(token=short))
    by_sub = created(actions.revoke(sub="alice"))
    by_jti = created(actions.revoke(jti="some-jti"))
    clock.advance(1)
    by_kid = created(actions.revoke(kid=kid))
    assert [item["id"] for item in listed(actions)] == [by_token["id"], by_sub["id"], by_jti["id"], by_kid["id"]]
    clock.advance(by_token["expires_at"] - clock())
    assert [item["id"] for item in listed(actions)] == [by_sub["id"], by_jti["id"], by_kid["id"]]
    clock.advance(by_sub["expires_at"] - clock())
    assert [item["id"] for item in listed(actions)] == [by_jti["id"], by_kid["id"]]  # an unknown jti is kept one skew longer
    assert_error(actions.admin("DELETE", f"/v1/admin/revocations/{by_sub['id']}"), 404, "not_found")
    clock.advance(by_jti["expires_at"] - clock())
    assert [item["id"] for item in listed(actions)] == [by_kid["id"]]


# -- who may call -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["secret", "public", "secret-introspect"])
def test_non_admin_keys_are_403(actions, client, kind):
    key = actions.create_key("secret", permissions=["introspect"]) if kind == "secret-introspect" else actions.create_key(kind)
    headers = bearer(key["key"])
    client.post("/v1/introspect", data={"token": "x"}, headers=headers)  # first use: records last_used_at
    with store_unchanged(actions):
        assert_error(client.post("/v1/admin/revocations", json={"sub": "alice"}, headers=headers), 403, "access_denied")
        assert_error(client.get("/v1/admin/revocations", headers=headers), 403, "access_denied")
        assert_error(client.delete("/v1/admin/revocations/rev_x", headers=headers), 403, "access_denied")


def test_unauthenticated_is_401(actions, client):
    with store_unchanged(actions):
        for headers in ({}, {"Authorization": "Bearer"}, bearer("ak_not_a_real_key"), bearer("wrong-bootstrap-key-0123456789abcdef")):
            response = client.post("/v1/admin/revocations", json={"sub": "alice"}, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert "WWW-Authenticate" in response.headers
            assert_error(client.get("/v1/admin/revocations", headers=headers), 401, "unauthorized")


def test_admin_key_created_through_the_api_may_revoke(actions, client, token):
    admin = actions.create_key("admin")
    response = client.post("/v1/admin/revocations", json={"token": token}, headers=bearer(admin["key"]))
    assert created(response)["type"] == "jti"
    assert actions.verify(token).status_code == 401


def test_store_down_is_503(token, down_client):
    down = Actions(down_client)
    assert_error(down.revoke(jti=token_parts(token)[1]["jti"]), 503, "temporarily_unavailable")
    assert_error(down.revoke(sub="alice"), 503, "temporarily_unavailable")
    assert_error(down.admin("GET", "/v1/admin/revocations"), 503, "temporarily_unavailable")
    assert_error(down.admin("DELETE", "/v1/admin/revocations/rev_x"), 503, "temporarily_unavailable")
