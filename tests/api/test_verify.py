"""/v1/verify: forward auth for gateways (200 with X-Auth-* headers, 401, 403, 503)."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import jwt
import pytest

from tests.conftest import (
    Actions,
    assert_error,
    bearer,
    token_parts,
    with_settings,
    write_signing_key,
)
from token_service import create_app
from token_service.keys import SigningKey

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
REALM = 'Bearer realm="http://localhost:8000"'


@pytest.fixture
def secret(actions: Actions) -> dict[str, Any]:
    return actions.create_key("secret")


@pytest.fixture
def token(actions: Actions, secret: dict[str, Any]) -> str:
    return actions.token(secret["key"])


def verify(client: Any, token: str | None, query: str = "", method: str = "GET", **kwargs: Any) -> Any:
    headers = {**(bearer(token) if token is not None else {}), **kwargs.pop("headers", {})}
    return client.open(f"/v1/verify{query}", method=method, headers=headers, **kwargs)


def assert_invalid_token(response: Any) -> None:
    """401 invalid_token: the body says inactive, the challenge names the error."""
    if response.request.method != "HEAD":
        body = assert_error(response, 401, "invalid_token")
        assert body["active"] is False
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(REALM + ", ")
    assert 'error="invalid_token"' in challenge
    assert 'error_description="' in challenge


def has_scope_param(challenge: str) -> bool:
    return re.search(r'(^|[ ,])scope="', challenge) is not None


def sign(claims: dict[str, Any], key_file: str, typ: str = "at+jwt", kid: str | None = None) -> str:
    """A token signed by the service's own key with the given claims and header (to probe the checks)."""
    with open(key_file, "rb") as fh:
        key = SigningKey.from_pem(fh.read(), "ES256")
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"typ": typ, "kid": kid or key.kid})


# -- 200 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_valid_token_is_200_with_claims_and_headers(client, token, secret, method):
    response = verify(client, token, method=method)
    assert response.status_code == 200
    _, claims = token_parts(token)
    assert response.headers["X-Auth-Subject"] == "user-42"
    assert response.headers["X-Auth-Persona"] == "support-bot"
    assert response.headers["X-Auth-Scope"] == "chat:read chat:write"
    assert response.headers["X-Auth-Expires"] == str(claims["exp"])
    assert response.headers["X-Auth-Token-Id"] == claims["jti"]
    assert response.headers["Cache-Control"] == "no-store"
    if method == "HEAD":
        assert response.get_data() == b""
        return
    assert response.get_json() == {
        "active": True, "sub": "user-42", "personaId": "support-bot", "scope": "chat:read chat:write", "exp": claims["exp"],
        "iat": claims["iat"], "jti": claims["jti"], "client_id": secret["id"],
    }


def test_requirements_that_hold_are_200(client, token):
    for query in ("?personaId=support-bot", "?scope=chat:read", "?scope=chat:write%20chat:read", "?personaId=support-bot&scope=chat:read"):
        assert verify(client, token, query).status_code == 200, query


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_verify_ignores_any_body(client, token, method):
    for kwargs in ({"data": "not json at all", "content_type": "text/plain"}, {"json": {"token": "x", "anything": [1, 2]}},
                   {"data": b"{broken", "content_type": "application/json"}, {"data": b"\x00\x01"}):
        response = verify(client, token, method=method, **kwargs)
        assert response.status_code == 200, (kwargs, response.get_json())


def test_lowercase_bearer_scheme_works(client, token):
    assert client.get("/v1/verify", headers={"Authorization": f"bearer {token}"}).status_code == 200


# -- 401: no token ----------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz"])
def test_no_token_is_401_unauthorized(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/v1/verify", headers=headers)
    body = assert_error(response, 401, "unauthorized")
    assert body["active"] is False
    assert response.headers["WWW-Authenticate"] == REALM


def test_no_token_challenge_names_the_configured_issuer(settings, clock):
    app = create_app(with_settings(settings, issuer="https://auth.example.com"), clock=clock)
    response = app.test_client().get("/v1/verify")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="https://auth.example.com"'


@pytest.mark.parametrize("method", METHODS)
def test_no_token_is_401_for_every_method(client, method):
    response = client.open("/v1/verify", method=method)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == REALM


# -- 401: invalid tokens ----------------------------------------------------------------------------


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["personaId"] = "admin-bot"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


@pytest.mark.parametrize("method", METHODS)
def test_garbage_and_tampered_tokens_are_401_invalid_token(client, token, method):
    for bad in ("garbage", "a.b.c", token + "x", token[:-4], _tamper(token), token.replace(".", "..", 1), "x" * 5000):
        assert_invalid_token(verify(client, bad, method=method))


def test_alg_none_token_is_401(client, token):
    header, _ = token_parts(token)
    none_header = base64.urlsafe_b64encode(json.dumps({**header, "alg": "none"}).encode()).rstrip(b"=").decode()
    _, payload, _ = token.split(".")
    assert_invalid_token(verify(client, f"{none_header}.{payload}."))


def test_expiry_allows_the_clock_skew(client, token, clock):
    exp = token_parts(token)[1]["exp"]
    clock.now = exp + 29.0
    assert verify(client, token).status_code == 200
    clock.now = exp + 29.99
    assert verify(client, token).status_code == 200
    clock.now = exp + 30.0  # the 30 s skew is used up
    assert_invalid_token(verify(client, token))


def test_expired_token_is_401(client, token, clock):
    clock.advance(900 + 31)
    assert_invalid_token(verify(client, token))


def test_token_not_yet_valid_is_401(client, token, clock):
    # Its iat and nbf lie more than the skew ahead of the verifier's clock.
    clock.advance(-30)
    assert verify(client, token).status_code == 200
    clock.advance(-1)
    assert_invalid_token(verify(client, token))


def test_wrong_issuer_is_401(client, settings, clock):
    other = Actions(create_app(with_settings(settings, issuer="https://other.example.com"), clock=clock).test_client())
    foreign = other.token(other.create_key("secret")["key"])
    assert token_parts(foreign)[1]["iss"] == "https://other.example.com"
    assert_invalid_token(verify(client, foreign))


def test_wrong_audience_is_401(client, settings, clock):
    other = Actions(create_app(with_settings(settings, audience="billing-api"), clock=clock).test_client())
    foreign = other.token(other.create_key("secret")["key"])
    assert token_parts(foreign)[1]["aud"] == "billing-api"
    assert_invalid_token(verify(client, foreign))


def test_token_signed_by_an_unknown_key_is_401(client, settings, clock, tmp_path):
    other = Actions(create_app(with_settings(settings, signing_key_file=write_signing_key(tmp_path)), clock=clock).test_client())
    foreign = other.token(other.create_key("secret")["key"])
    assert other.verify(foreign).status_code == 200
    assert_invalid_token(verify(client, foreign))


def test_kid_of_the_ring_with_another_keys_signature_is_401(client, token, tmp_path):
    claims = token_parts(token)[1]
    forged = sign(claims, write_signing_key(tmp_path), kid=token_parts(token)[0]["kid"])
    assert_invalid_token(verify(client, forged))


def test_typ_must_be_at_jwt(client, token, signing_key_file):
    claims = token_parts(token)[1]
    assert verify(client, sign(claims, signing_key_file)).status_code == 200
    assert verify(client, sign(claims, signing_key_file, typ="application/at+jwt")).status_code == 200
    for typ in ("JWT", "jwt", "at+jwt2"):
        assert_invalid_token(verify(client, sign(claims, signing_key_file, typ=typ)))


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "personaId", "scope", "iat", "nbf", "exp", "jti", "client_id"])
def test_token_lacking_a_claim_is_401(client, token, signing_key_file, claim):
    claims = token_parts(token)[1]
    del claims[claim]
    assert_invalid_token(verify(client, sign(claims, signing_key_file)))


def test_revoked_token_is_401(client, token):
    assert client.post("/v1/revoke", data={"token": token}).status_code == 200
    assert_invalid_token(verify(client, token))
    assert_invalid_token(verify(client, token, method="HEAD"))


# -- 403 and 400: requirements ----------------------------------------------------------------------


def test_persona_mismatch_is_403_naming_the_persona(client, token):
    response = verify(client, token, "?personaId=sales-bot")
    body = assert_error(response, 403, "insufficient_scope")
    assert body["active"] is False
    assert "sales-bot" in body["error_description"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(REALM + ", ")
    assert 'error="insufficient_scope"' in challenge
    assert not has_scope_param(challenge)


def test_persona_mismatch_with_scopes_required_names_them(client, token):
    response = verify(client, token, "?personaId=sales-bot&scope=chat:read")
    assert_error(response, 403, "insufficient_scope")
    assert 'scope="chat:read"' in response.headers["WWW-Authenticate"]


def test_missing_scope_is_403_with_the_required_scopes(actions, client, secret):
    token = actions.token(secret["key"], scopes=["chat:read"])
    response = verify(client, token, "?scope=chat:read%20chat:write")
    body = assert_error(response, 403, "insufficient_scope")
    assert body["active"] is False
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="chat:read chat:write"' in challenge
    assert verify(client, token, "?scope=chat:read").status_code == 200


@pytest.mark.parametrize("query", ["?personaId=", "?personaId=bad%20persona", "?personaId=" + "x" * 129, "?personaId=a/b",
                                   "?personaId=support-bot%0A", "?scope=", "?scope=%20", '?scope=chat:read%22', "?scope=chat:read%0A"])
def test_bad_requirement_query_is_400(client, token, query):
    assert_error(verify(client, token, query), 400, "invalid_request")


# -- 503 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_store_down_is_503_never_200(token, down_client, method):
    for query in ("", "?personaId=support-bot", "?personaId=sales-bot"):
        response = verify(down_client, token, query, method=method)
        assert response.status_code == 503
        if method != "HEAD":
            body = assert_error(response, 503, "temporarily_unavailable")
            assert body["active"] is False
        assert "X-Auth-Subject" not in response.headers
