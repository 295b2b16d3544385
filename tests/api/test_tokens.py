"""POST /v1/tokens: minting with public and secret keys, the JWT it returns, and every refusal."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.conftest import (
    ADMIN_KEY,
    ORIGIN,
    Actions,
    FakeClock,
    all_items,
    assert_error,
    bearer,
    store_unchanged,
    token_parts,
    with_settings,
)
from token_service import Settings, create_app
from token_service.apikeys import generate_key_text, new_key_id

CLAIMS = {"iss", "aud", "sub", "personaId", "scope", "iat", "nbf", "exp", "jti", "client_id"}


@pytest.fixture
def secret(actions: Actions) -> dict[str, Any]:
    """A secret key for support-bot that has been used once (so refusals leave its record as it is)."""
    key = actions.create_key("secret")
    actions.mint(key["key"])
    return key


@pytest.fixture
def public(actions: Actions) -> dict[str, Any]:
    """A public key for support-bot, usable from ORIGIN, used once."""
    key = actions.create_key("public")
    actions.mint(key["key"], headers={"Origin": ORIGIN})
    return key


def post_tokens(client: Any, key: str | None, body: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    all_headers = {**(bearer(key) if key else {}), **(headers or {})}
    if body is not None:
        kwargs["json"] = body
    return client.post("/v1/tokens", headers=all_headers, **kwargs)


# -- the token --------------------------------------------------------------------------------------


def test_secret_key_mints_a_token_for_the_named_user(actions, client, secret, clock, settings):
    response = actions.mint(secret["key"], sub="user-7", scopes=["chat:read"], ttl=600)
    body = response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    now = int(clock())
    assert body == {
        "token": body["token"], "token_type": "Bearer", "expires_in": 600, "expires_at": now + 600,
        "scope": "chat:read", "personaId": "support-bot",
    }
    header, claims = token_parts(body["token"])
    jwks = client.get("/.well-known/jwks.json").get_json()
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": jwks["keys"][0]["kid"]}
    assert set(claims) == CLAIMS
    assert claims["iss"] == settings.issuer == "http://localhost:8000"
    assert claims["aud"] == settings.audience == "persona-api"
    assert claims["sub"] == "user-7"
    assert claims["personaId"] == "support-bot"
    assert claims["scope"] == "chat:read"
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] == claims["iat"] + 600 == body["expires_at"]
    assert claims["client_id"] == secret["id"]
    # The signature holds under the published key, with the configured issuer and audience.
    public_key = jwt.PyJWK(jwks["keys"][0]).key
    verified = jwt.decode(body["token"], public_key, algorithms=["ES256"], audience="persona-api", issuer="http://localhost:8000",
                          options={"verify_iat": False, "verify_nbf": False}, leeway=60)
    assert verified == claims


def test_every_token_has_its_own_unguessable_jti(actions, secret):
    jtis = {token_parts(actions.token(secret["key"]))[1]["jti"] for _ in range(5)}
    assert len(jtis) == 5
    assert all(len(jti) >= 32 for jti in jtis)


def test_default_scopes_and_ttl_come_from_config(actions, secret):
    body = actions.mint(secret["key"]).get_json()
    assert body["scope"] == "chat:read chat:write"
    assert body["expires_in"] == 900
    assert token_parts(body["token"])[1]["scope"] == "chat:read chat:write"


def test_ttl_of_one_second_is_allowed(actions, secret):
    body = actions.mint(secret["key"], ttl=1).get_json()
    assert body["expires_in"] == 1
    claims = token_parts(body["token"])[1]
    assert claims["exp"] == claims["iat"] + 1


@pytest.mark.parametrize("ttl", [0, -5, 901, True, "60", 60.5])
def test_ttl_out_of_range_or_not_an_integer_is_400(actions, client, secret, ttl):
    with store_unchanged(actions):
        response = post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u", "ttl": ttl})
        assert_error(response, 400, "invalid_request")


def test_ttl_maximum_follows_the_setting(settings, clock, signing_key_file):
    app = create_app(with_settings(settings, max_ttl=60), clock=clock)
    actions = Actions(app.test_client())
    key = actions.create_key("secret")
    assert actions.mint(key["key"]).get_json()["expires_in"] == 60
    assert_error(post_tokens(app.test_client(), key["key"], {"personaId": "support-bot", "sub": "u", "ttl": 61}), 400, "invalid_request")


def test_unknown_scope_is_400_invalid_scope(actions, client, secret):
    with store_unchanged(actions):
        response = post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u", "scopes": ["chat:read", "admin:all"]})
        assert "admin:all" in assert_error(response, 400, "invalid_scope")["error_description"]


def test_scope_not_granted_to_the_key_is_403(actions, client):
    key = actions.create_key("secret", scopes=["chat:read"])
    actions.mint(key["key"], scopes=["chat:read"])
    with store_unchanged(actions):
        response = post_tokens(client, key["key"], {"personaId": "support-bot", "sub": "u", "scopes": ["chat:write"]})
        assert_error(response, 403, "access_denied")
        # Nor by default: the defaults include chat:write.
        assert_error(post_tokens(client, key["key"], {"personaId": "support-bot", "sub": "u"}), 403, "access_denied")


@pytest.mark.parametrize("scopes", [[], "chat:read", [1], None])
def test_scopes_must_be_a_non_empty_list_of_strings(actions, client, secret, scopes):
    response = post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u", "scopes": scopes})
    assert_error(response, 400, "invalid_request")


def test_persona_the_key_may_not_use_is_403(actions, client, secret):
    with store_unchanged(actions):
        assert_error(post_tokens(client, secret["key"], {"personaId": "sales-bot", "sub": "u"}), 403, "access_denied")


def test_wildcard_personas_allow_any_persona(actions):
    key = actions.create_key("secret", personas=["*"])
    for persona in ("support-bot", "sales-bot", "a.b_c:d-1"):
        assert actions.mint(key["key"], personaId=persona).get_json()["personaId"] == persona


# -- secret and public keys -------------------------------------------------------------------------


def test_secret_key_without_sub_is_400(actions, client, secret):
    with store_unchanged(actions):
        assert_error(post_tokens(client, secret["key"], {"personaId": "support-bot"}), 400, "invalid_request")


@pytest.mark.parametrize("sub", ["user 42", "", "x" * 257, "naïve", 42, "user-42\n", "user-42\t", "\nuser-42"])
def test_bad_sub_is_400(actions, client, secret, sub):
    with store_unchanged(actions):
        assert_error(post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": sub}), 400, "invalid_request")


def test_sub_of_256_visible_characters_is_accepted(actions, secret):
    sub = "!~" * 128
    assert token_parts(actions.token(secret["key"], sub=sub))[1]["sub"] == sub


def test_public_key_mints_for_an_anonymous_subject(actions, public):
    first = token_parts(actions.token(public["key"], headers={"Origin": ORIGIN}))[1]
    second = token_parts(actions.token(public["key"], headers={"Origin": ORIGIN}))[1]
    for claims in (first, second):
        assert claims["sub"].startswith("anon:") and len(claims["sub"]) > len("anon:") + 16
        assert claims["client_id"] == public["id"]
    assert first["sub"] != second["sub"]


def test_public_key_with_sub_is_400(actions, client, public):
    with store_unchanged(actions):
        response = post_tokens(client, public["key"], {"personaId": "support-bot", "sub": "user-42"}, headers={"Origin": ORIGIN})
        assert_error(response, 400, "invalid_request")


def test_public_key_needs_one_of_its_origins(actions, client, public):
    with store_unchanged(actions):
        assert_error(post_tokens(client, public["key"], {"personaId": "support-bot"}), 403, "access_denied")
        for origin in ("https://evil.example.com", ORIGIN + ":443", ORIGIN.upper(), "null"):
            response = post_tokens(client, public["key"], {"personaId": "support-bot"}, headers={"Origin": origin})
            assert_error(response, 403, "access_denied")


def test_public_key_persona_and_scope_limits_hold(actions, client):
    key = actions.create_key("public", scopes=["chat:read"])
    actions.mint(key["key"], headers={"Origin": ORIGIN}, scopes=["chat:read"])
    with store_unchanged(actions):
        response = post_tokens(client, key["key"], {"personaId": "other-bot", "scopes": ["chat:read"]}, headers={"Origin": ORIGIN})
        assert_error(response, 403, "access_denied")
        response = post_tokens(client, key["key"], {"personaId": "support-bot", "scopes": ["chat:write"]}, headers={"Origin": ORIGIN})
        assert_error(response, 403, "access_denied")


def test_admin_key_cannot_mint(actions, client):
    admin = actions.create_key("admin")
    assert client.get("/v1/admin/api-keys", headers=bearer(admin["key"])).status_code == 200
    with store_unchanged(actions):
        assert_error(post_tokens(client, admin["key"], {"personaId": "support-bot"}), 403, "access_denied")
        assert_error(post_tokens(client, ADMIN_KEY, {"personaId": "support-bot"}), 403, "access_denied")


# -- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer a b",
                                           "Bearer not-a-key"])
def test_no_or_garbled_credentials_is_401_with_a_challenge(actions, client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    with store_unchanged(actions):
        response = client.post("/v1/tokens", json={"personaId": "support-bot"}, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="http://localhost:8000"')


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(actions, client, secret, scheme):
    headers = {"Authorization": f"{scheme} {secret['key']}"}
    response = client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=headers)
    assert response.status_code == 200, response.get_json()


def _bad_checksum(key: str) -> str:
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


def test_malformed_keys_are_401(actions, client, secret, public):
    with store_unchanged(actions):
        for text in (_bad_checksum(secret["key"]), _bad_checksum(public["key"]), secret["key"][:-1], "sk_short", "pk_" + "x" * 70):
            headers = {**bearer(text), "Origin": ORIGIN} if text.startswith("pk_") else bearer(text)
            response = client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert "WWW-Authenticate" in response.headers


def test_well_formed_key_that_does_not_exist_is_401(actions, client, secret):
    # Another key's text with the kind changed cannot pass: the checksum covers the prefix.
    forged = "pk_" + secret["key"][3:]
    with store_unchanged(actions):
        assert_error(post_tokens(client, forged, {"personaId": "support-bot"}, headers={"Origin": ORIGIN}), 401, "unauthorized")


def test_expired_key_is_401(actions, client, clock):
    key = actions.create_key("secret", expires_at=int(clock()) + 100)
    actions.mint(key["key"])
    clock.advance(100)
    assert_error(post_tokens(client, key["key"], {"personaId": "support-bot", "sub": "u"}), 401, "unauthorized")


def test_revoked_key_is_401(actions, client, secret):
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{secret['id']}").status_code == 204
    assert_error(post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u"}), 401, "unauthorized")


def _key_record(actions: Actions, key_id: str) -> dict[str, Any]:
    return next(item for item in all_items(actions, "/v1/admin/api-keys") if item["id"] == key_id)


@pytest.mark.parametrize(
    "browser_header", [{"Origin": ORIGIN}, {"Sec-Fetch-Mode": "cors"}, {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"}]
)
def test_secret_key_from_a_browser_is_refused_and_revoked(actions, client, secret, clock, browser_header):
    assert _key_record(actions, secret["id"])["revoked_at"] is None
    response = post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u"}, headers=browser_header)
    assert_error(response, 401, "unauthorized")
    assert _key_record(actions, secret["id"])["revoked_at"] == int(clock())
    # Revoked: refused from the server side too.
    assert_error(post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u"}), 401, "unauthorized")


def test_secret_key_from_a_browser_is_only_refused_when_revoking_is_off(settings, clock):
    app = create_app(with_settings(settings, revoke_keys_from_browsers=False), clock=clock)
    client = app.test_client()
    actions = Actions(client)
    key = actions.create_key("secret")
    actions.mint(key["key"])
    with store_unchanged(actions):
        response = post_tokens(client, key["key"], {"personaId": "support-bot", "sub": "u"}, headers={"Origin": ORIGIN})
        assert_error(response, 401, "unauthorized")
    assert _key_record(actions, key["id"])["revoked_at"] is None
    actions.mint(key["key"])


def test_admin_key_from_a_browser_is_refused_and_revoked(actions, client, clock):
    admin = actions.create_key("admin")
    response = client.get("/v1/admin/api-keys", headers={**bearer(admin["key"]), "Origin": ORIGIN})
    assert_error(response, 401, "unauthorized")
    assert _key_record(actions, admin["id"])["revoked_at"] == int(clock())
    assert_error(client.get("/v1/admin/api-keys", headers=bearer(admin["key"])), 401, "unauthorized")


# -- the body ---------------------------------------------------------------------------------------


def test_unknown_field_is_400_naming_it(actions, client, secret):
    with store_unchanged(actions):
        response = post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u", "email": "a@example.com"})
        assert "email" in assert_error(response, 400, "invalid_request")["error_description"]


@pytest.mark.parametrize("field", ["personaId", "sub", "scopes", "ttl"])
def test_explicit_null_is_400(actions, client, secret, field):
    body: dict[str, Any] = {"personaId": "support-bot", "sub": "u", field: None}
    with store_unchanged(actions):
        assert_error(post_tokens(client, secret["key"], body), 400, "invalid_request")


def test_missing_persona_is_400(actions, client, secret):
    assert_error(post_tokens(client, secret["key"], {"sub": "u"}), 400, "invalid_request")


@pytest.mark.parametrize("persona", ["support bot", "bot/1", "bøt", "", "x" * 129, 7, ["support-bot"], "support-bot\n"])
def test_bad_persona_id_is_400(actions, client, secret, persona):
    with store_unchanged(actions):
        assert_error(post_tokens(client, secret["key"], {"personaId": persona, "sub": "u"}), 400, "invalid_request")


def test_persona_id_of_128_characters_is_accepted(actions):
    key = actions.create_key("secret", personas=["*"])
    persona = "A-z0._:" * 18 + "ab"
    assert len(persona) == 128
    assert actions.mint(key["key"], personaId=persona).get_json()["personaId"] == persona


def test_non_json_content_type_is_415(actions, client, secret):
    with store_unchanged(actions):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
            response = client.post("/v1/tokens", data='{"personaId": "support-bot", "sub": "u"}', content_type=content_type,
                                   headers=bearer(secret["key"]))
            assert_error(response, 415, "unsupported_media_type")


def test_body_without_content_type_is_415(actions, client, secret):
    with store_unchanged(actions):
        response = client.post("/v1/tokens", data=b'{"personaId": "support-bot", "sub": "u"}', headers=bearer(secret["key"]))
        assert "Content-Type" not in response.request.headers
        assert_error(response, 415, "unsupported_media_type")


def test_json_content_type_with_charset_is_accepted(client, secret):
    response = client.post("/v1/tokens", data='{"personaId": "support-bot", "sub": "u"}', content_type="application/json; charset=utf-8",
                           headers=bearer(secret["key"]))
    assert response.status_code == 200, response.get_json()


def test_missing_body_is_refused(actions, client, secret):
    assert_error(client.post("/v1/tokens", headers=bearer(secret["key"])), 415, "unsupported_media_type")
    assert_error(client.post("/v1/tokens", headers=bearer(secret["key"]), content_type="application/json"), 400, "invalid_request")


@pytest.mark.parametrize("raw", ['{"personaId": ', "[]", '"support-bot"', "null", '{"personaId": "a", "personaId": "b", "sub": "u"}',
                                 b"\xff\xfe"])
def test_malformed_json_is_400(actions, client, secret, raw):
    with store_unchanged(actions):
        response = client.post("/v1/tokens", data=raw, content_type="application/json", headers=bearer(secret["key"]))
        assert_error(response, 400, "invalid_request")


def test_body_over_16_kib_is_413_before_authentication(actions, client, secret):
    body = {"personaId": "support-bot", "sub": "u", "pad": "x" * 16384}
    with store_unchanged(actions):
        for headers in ({}, bearer(secret["key"]), bearer("sk_garbage"), {"Content-Type": "text/plain"}):
            response = client.post("/v1/tokens", json=body, headers=headers)
            assert_error(response, 413, "payload_too_large")
    # Exactly at the limit is not too large (it is refused for its unknown field instead).
    prefix, suffix = '{"personaId": "support-bot", "sub": "u", "pad": "', '"}'
    raw = prefix + "x" * (16384 - len(prefix) - len(suffix)) + suffix
    assert len(raw.encode()) == 16384
    response = client.post("/v1/tokens", data=raw, content_type="application/json", headers=bearer(secret["key"]))
    assert_error(response, 400, "invalid_request")


# -- revocation watermarks and minting ----------------------------------------------------------


@pytest.mark.parametrize("target", ["sub", "personaId", "client_id"])
def test_token_minted_in_the_second_of_a_revocation_is_accepted(actions, secret, clock, target):
    before = actions.token(secret["key"])
    value = {"sub": "user-42", "personaId": "support-bot", "client_id": secret["id"]}[target]
    revoked = actions.revoke(**{target: value})
    assert revoked.status_code == 201, revoked.get_json()
    # Same second as the revocation: the service issues the new token just past the watermark.
    assert int(clock()) == revoked.get_json()["revoked_at"]
    after = actions.token(secret["key"])
    assert token_parts(after)[1]["iat"] > revoked.get_json()["revoked_at"]
    assert actions.verify(after).status_code == 200
    assert_error(actions.verify(before), 401, "invalid_token")


def test_bootstrap_key_is_refused_from_a_browser(actions, client):
    response = client.get("/v1/admin/api-keys", headers={**bearer(ADMIN_KEY), "Origin": ORIGIN})
    assert_error(response, 401, "unauthorized")
    # Configuration cannot be revoked: it still works from the server side.
    assert actions.admin("GET", "/v1/admin/api-keys").status_code == 200


def test_settings_without_bootstrap_key_do_not_accept_one(signing_key_file: str, clock: FakeClock):
    app = create_app(Settings(signing_key_file=signing_key_file, log_level="WARNING"), clock=clock)
    response = app.test_client().get("/v1/admin/api-keys", headers=bearer(ADMIN_KEY))
    assert_error(response, 401, "unauthorized")


# -- the store down ---------------------------------------------------------------------------------


def test_minting_fails_closed_when_the_store_is_down(down_client):
    # A well-formed key needs its record: 503 (the store failed, not the caller).
    well_formed = generate_key_text("secret", new_key_id())
    response = down_client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(well_formed))
    assert_error(response, 503, "temporarily_unavailable")
    # A malformed key is refused without a store lookup.
    response = down_client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(_bad_checksum(well_formed)))
    assert_error(response, 401, "unauthorized")
    # The bootstrap key is configuration: it authenticates without the store, and still may not mint.
    assert_error(down_client.post("/v1/tokens", json={"personaId": "support-bot"}, headers=bearer(ADMIN_KEY)), 403, "access_denied")


def test_tokens_of_a_key_exposed_by_a_browser_stay_valid_until_revoked_by_client_id(actions, client, secret):
    token = actions.token(secret["key"])
    response = post_tokens(client, secret["key"], {"personaId": "support-bot", "sub": "u"}, headers={"Origin": ORIGIN})
    assert_error(response, 401, "unauthorized")
    assert actions.verify(token).status_code == 200
    assert actions.revoke(client_id=secret["id"]).status_code == 201
    assert_error(actions.verify(token), 401, "invalid_token")
