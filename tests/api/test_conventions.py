"""Conventions every endpoint follows: request ids, security headers, JSON errors, health, discovery, CORS."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, ORIGIN, Actions, FakeClock, assert_error, bearer, with_settings
from token_service import create_app

APP_ORIGIN = "https://app.example.org"
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order, without white space."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


# -- request ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc-123._:x", "A", "x" * 128, "0f8e2c1d-aaaa-bbbb-cccc-1234567890ab"])
def test_sane_request_id_is_echoed(client, request_id):
    for path in ("/healthz", "/v1/verify", "/no/such/path"):
        assert client.get(path, headers={"X-Request-Id": request_id}).headers["X-Request-Id"] == request_id


@pytest.mark.parametrize("request_id", ["x" * 129, "has space", "a/b", "semi;colon", "quote\"d", "", "tab\there"])
def test_other_request_ids_are_replaced(client, request_id):
    for path in ("/healthz", "/v1/verify", "/no/such/path"):
        generated = client.get(path, headers={"X-Request-Id": request_id}).headers["X-Request-Id"]
        assert generated and generated != request_id
        assert all(c.isalnum() or c in "._:-" for c in generated) and len(generated) <= 128


def test_request_id_is_generated_and_unique(client):
    ids = {client.get("/healthz").headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3 and all(ids)


# -- headers and error bodies -----------------------------------------------------------------------


def test_every_response_carries_nosniff_and_a_request_id(actions, client):
    key = actions.create_key("secret")
    responses = [
        client.get("/healthz"), client.get("/readyz"), client.get("/.well-known/jwks.json"),
        client.get("/.well-known/oauth-authorization-server"), client.get("/no/such/path"), client.get("/v1/tokens"),
        client.delete("/.well-known/jwks.json"), client.get("/v1/verify"), client.post("/v1/tokens", json={}),
        client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(key["key"])),
        client.post("/v1/tokens", data="x" * 17000, content_type="application/json"),
        client.post("/v1/revoke", data="t", content_type="text/plain"), client.options("/v1/tokens"),
        actions.admin("GET", "/v1/admin/api-keys"), actions.admin("DELETE", "/v1/admin/api-keys/nope"),
        actions.admin("GET", "/v1/admin/revocations?limit=0"), client.head("/healthz"),
    ]
    statuses = set()
    for response in responses:
        statuses.add(response.status_code)
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.request.path
        assert response.headers.get("X-Request-Id"), response.request.path
    assert statuses >= {200, 400, 401, 404, 405, 413, 415}


@pytest.mark.parametrize("path", ["/no/such/path", "/v1", "/v1/tokens/extra", "/v1/admin/unknown", "/.well-known/openid-configuration"])
def test_unknown_path_is_404_json(client, path):
    response = client.get(path)
    assert_error(response, 404, "not_found")
    assert response.mimetype == "application/json"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/tokens"), ("PUT", "/v1/tokens"), ("GET", "/v1/introspect"),
                                              ("GET", "/v1/revoke"), ("POST", "/.well-known/jwks.json"), ("POST", "/healthz"),
                                              ("PUT", "/v1/admin/revocations")])
def test_wrong_method_is_405_json(client, method, path):
    response = client.open(path, method=method)
    assert response.status_code == 405
    body = response.get_json()
    assert set(body) == {"error", "error_description"}
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers.get("Allow")


def test_token_bearing_answers_are_not_cached(actions, client):
    key = actions.create_key("secret", permissions=["introspect"])
    minted = actions.mint(key["key"])
    token = minted.get_json()["token"]
    responses = [
        minted, actions.verify(token), client.post("/v1/introspect", data={"token": token}, headers=bearer(key["key"])),
        actions.admin("GET", "/v1/admin/api-keys"), actions.admin("POST", "/v1/admin/api-keys", json={"type": "admin"}),
        actions.revoke(token=token), actions.admin("GET", "/v1/admin/revocations"),
    ]
    for response in responses:
        assert response.status_code in (200, 201)
        assert response.headers["Cache-Control"] == "no-store"


# -- health -----------------------------------------------------------------------------------------


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json


def test_readyz_when_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.is_json


def test_readyz_is_503_with_the_reason_when_the_store_is_down(down_client):
    assert down_client.get("/healthz").status_code == 200
    body = assert_error(down_client.get("/readyz"), 503, "temporarily_unavailable")
    assert "store" in body["error_description"]


# -- discovery --------------------------------------------------------------------------------------


def test_jwks_publishes_public_keys_only(client, actions):
    response = actions.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    keys = response.get_json()["keys"]
    assert len(keys) == 1
    [jwk] = keys
    assert jwk["alg"] == "ES256" and jwk["use"] == "sig" and jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert jwk["kid"] == thumbprint(jwk)
    assert not PRIVATE_JWK_MEMBERS & set(jwk)
    token = actions.token(actions.create_key("secret")["key"])
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["kid"] == jwk["kid"]


def test_jwks_max_age_follows_the_setting(settings, clock):
    client = create_app(with_settings(settings, jwks_max_age=60), clock=clock).test_client()
    assert client.get("/.well-known/jwks.json").headers["Cache-Control"] == "public, max-age=60"


def test_jwks_fails_closed_when_the_store_is_down(down_client):
    # Which keys are revoked cannot be known: publishing them all could re-publish a compromised key.
    assert_error(down_client.get("/.well-known/jwks.json"), 503, "temporarily_unavailable")


def test_authorization_server_metadata(client, settings):
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    body = response.get_json()
    issuer = "http://localhost:8000"
    assert body["issuer"] == issuer
    assert body["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert body["token_endpoint"] == f"{issuer}/v1/tokens"
    assert body["introspection_endpoint"] == f"{issuer}/v1/introspect"
    assert body["revocation_endpoint"] == f"{issuer}/v1/revoke"


def test_metadata_follows_the_configured_issuer(settings, clock):
    client = create_app(with_settings(settings, issuer="https://auth.example.com"), clock=clock).test_client()
    body = client.get("/.well-known/oauth-authorization-server").get_json()
    assert body["issuer"] == "https://auth.example.com"
    assert body["jwks_uri"] == "https://auth.example.com/.well-known/jwks.json"
    assert body["token_endpoint"] == "https://auth.example.com/v1/tokens"


# -- CORS -------------------------------------------------------------------------------------------


def preflight(client: Any, path: str, origin: str) -> Any:
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization, content-type"})


@pytest.fixture
def cors_client(settings: Any, clock: FakeClock) -> Any:
    return create_app(with_settings(settings, cors_origins=(APP_ORIGIN,)), clock=clock).test_client()


@pytest.mark.parametrize("path", ["/v1/tokens", "/v1/revoke"])
def test_preflight_from_a_configured_origin(cors_client, path):
    response = preflight(cors_client, path, APP_ORIGIN)
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "Origin" in response.headers.get("Vary", "")


@pytest.mark.parametrize("path", ["/v1/tokens", "/v1/revoke"])
def test_preflight_from_a_public_keys_origin(actions, client, path):
    actions.create_key("public", origins=[ORIGIN])
    response = preflight(client, path, ORIGIN)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize("origin", ["https://evil.example.com", "null", APP_ORIGIN + ".evil.com", "http://app.example.org", "*"])
def test_preflight_from_another_origin_gets_no_cors_headers(actions, cors_client, origin):
    Actions(cors_client).create_key("public", origins=[ORIGIN])
    for path in ("/v1/tokens", "/v1/revoke"):
        response = preflight(cors_client, path, origin)
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "Access-Control-Allow-Methods" not in response.headers


def test_minting_from_the_page_carries_the_allowed_origin(actions, client):
    key = actions.create_key("public", origins=[ORIGIN])
    response = actions.mint(key["key"], headers={"Origin": ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers.get("Access-Control-Allow-Credentials") in (None, "false")


def test_cors_is_never_a_wildcard_and_only_on_browser_endpoints(actions, cors_client):
    Actions(cors_client).create_key("public", origins=[ORIGIN])
    for origin in (APP_ORIGIN, ORIGIN):
        for path in ("/v1/tokens", "/v1/revoke"):
            assert preflight(cors_client, path, origin).headers["Access-Control-Allow-Origin"] == origin
        for path in ("/v1/verify", "/v1/introspect", "/v1/admin/api-keys", "/.well-known/jwks.json"):
            response = cors_client.get(path, headers={"Origin": origin})
            assert response.headers.get("Access-Control-Allow-Origin") is None, path


# -- the 16 KiB limit on bodies without Content-Length ----------------------------------------------


def chunked(client: Any, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    """A chunked request as gunicorn hands it over: no Content-Length, the server terminates the stream."""
    return client.post(path, input_stream=io.BytesIO(body), environ_overrides={"wsgi.input_terminated": True},
                       headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json", **(headers or {})})


def test_chunked_body_over_16_kib_is_413(actions, client):
    key = actions.create_key("secret")
    # A JSON document that is complete within the first 16 KiB: a truncating reader would accept it.
    body = b'{"personaId": "support-bot", "sub": "u"}' + b" " * 16400
    for path, headers in (("/v1/tokens", bearer(key["key"])), ("/v1/tokens", {}), ("/v1/revoke", {}), ("/v1/admin/revocations", {})):
        response = chunked(client, path, body, headers)
        assert_error(response, 413, "payload_too_large")


def test_chunked_body_within_the_limit_is_read(actions, client):
    key = actions.create_key("secret")
    body = b'{"personaId": "support-bot", "sub": "u"}'
    body += b" " * (16384 - len(body))
    response = chunked(client, "/v1/tokens", body, bearer(key["key"]))
    assert response.status_code == 200, response.get_json()


# -- no secret in a log -----------------------------------------------------------------------------


def test_logs_never_hold_a_token_or_a_key(settings, clock, caplog):
    app = create_app(with_settings(settings, log_level="DEBUG", revoke_keys_from_browsers=True), clock=clock)
    logger = logging.getLogger("token_service")
    logger.addHandler(caplog.handler)
    try:
        client = app.test_client()
        actions = Actions(client)
        secret = actions.create_key("secret", permissions=["introspect"])
        leaked = actions.create_key("secret")
        public = actions.create_key("public")
        admin = actions.create_key("admin")
        token = actions.token(secret["key"])
        anonymous = actions.token(public["key"], headers={"Origin": ORIGIN})
        actions.verify(token, "?personaId=other-bot")
        actions.verify(token[:-3] + "abc")
        client.post("/v1/introspect", data={"token": token}, headers=bearer(secret["key"]))
        client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers={**bearer(leaked["key"]), "Origin": ORIGIN})
        client.post("/v1/tokens", json={"personaId": "support-bot"}, headers=bearer(secret["key"][:-1] + "x"))
        client.get("/v1/admin/api-keys", headers=bearer(admin["key"]))
        actions.admin("POST", "/v1/admin/token-status", json={"token": token})
        actions.revoke(token=anonymous)
        client.post("/v1/revoke", data={"token": token})
        actions.admin("DELETE", f"/v1/admin/api-keys/{secret['id']}?revoke_tokens=true")
    finally:
        logger.removeHandler(caplog.handler)
    logged = "\n".join(record.getMessage() + str(record.exc_text or "") for record in caplog.records)
    assert "/v1/tokens" in logged  # the access log ran
    signatures = [t.split(".")[2] for t in (token, anonymous)]
    for secret_text in (secret["key"], leaked["key"], public["key"], admin["key"], token, anonymous, ADMIN_KEY, *signatures):
        assert secret_text not in logged


def test_a_request_path_cannot_forge_a_log_line(settings, clock, caplog):
    app = create_app(with_settings(settings, log_level="INFO"), clock=clock)
    logger = logging.getLogger("token_service")
    logger.addHandler(caplog.handler)
    try:
        client = app.test_client()
        client.get("/x%0A2026-12-04 INFO token_service.audit admin DELETE /v1/admin/api-keys/abc -> 204")
        Actions(client).admin("GET", "/v1/admin/revocations%0Dforged")
    finally:
        logger.removeHandler(caplog.handler)
    messages = [record.getMessage() for record in caplog.records]
    # The request log names the route template, never the raw path: an unmatched path is not logged at all.
    access = [r for r in caplog.records if r.name == "token_service.access"]
    assert len(access) == 2 and all(getattr(r, "route", None) == "unmatched" for r in access)
    assert not [m for m in messages if "forged" in m or "/x" in m]
    assert all("\n" not in m and "\r" not in m for m in messages)


@pytest.mark.parametrize("authorization", [None, "Bearer garbage"])
def test_verify_does_not_answer_options_with_a_200(client, authorization):
    """A gateway forwarding the client's method must never read an OPTIONS answer as "allow"."""
    headers = {"Authorization": authorization} if authorization else {}
    response = client.open("/v1/verify", method="OPTIONS", headers=headers)
    assert response.status_code == 405 and response.get_json()["error"] == "invalid_request"
