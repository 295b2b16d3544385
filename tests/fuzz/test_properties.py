"""Property tests (Hypothesis) of the parsers at the edge: token text, API key text, the Authorization header
and request bodies. Whatever the input, the answer is the documented refusal (a rejection, None, a 4xx with
API.md's error body) or a success, never an exception or a 500; and a refused request changes nothing stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY, Actions, FakeClock, store_snapshot, store_unchanged
from token_service import Settings, create_app
from token_service.apikeys import generate_key_text, new_key_id, parse_key_text
from token_service.auth.base import bearer_credentials
from token_service.keys import KeyRing, SigningKey
from token_service.tokens import TokenCodec, TokenRejected, Verdict

ERROR_OF_STATUS = {400: {"invalid_request", "invalid_scope"}, 401: {"unauthorized", "invalid_token"},
                   403: {"access_denied", "insufficient_scope"}, 404: {"not_found"}, 409: {"conflict"},
                   413: {"payload_too_large"}, 415: {"unsupported_media_type"}, 429: {"rate_limited"}}

# -- tokens ------------------------------------------------------------------------------------------

KEY = SigningKey.generate("ES256")
RING = KeyRing(keys=(KEY,), signing_kid=KEY.kid)
CODEC = TokenCodec("http://localhost:8000", "persona-api", 30)
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
headers = st.fixed_dictionaries(
    {}, optional={"alg": st.sampled_from(["ES256", "none", "HS256", "RS256", "EdDSA", "es256"]) | st.text(max_size=8),
                  "typ": st.sampled_from(["at+jwt", "JWT", "application/at+jwt"]) | json_values,
                  "kid": st.just(KEY.kid) | json_values, "crit": json_values, "jku": st.text(max_size=20)})
# Segments that get past base64 and JSON decoding, so that the checks behind them are reached too.
structured_tokens = st.builds(
    lambda h, p, s: f"{b64(json.dumps(h).encode())}.{b64(json.dumps(p).encode())}.{b64(s)}",
    headers, st.dictionaries(st.text(max_size=10), json_values, max_size=8), st.binary(max_size=80),
)
any_tokens = st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")) | structured_tokens


def assert_refused(token: str) -> None:
    verdict = CODEC.inspect(token, RING, NOW)
    assert isinstance(verdict, Verdict) and verdict.reasons and not verdict.valid
    with pytest.raises(TokenRejected) as rejected:
        CODEC.verify(token, RING, NOW)
    assert rejected.value.reason == verdict.reasons[0]
    assert token not in rejected.value.reason.detail or len(token) < 8


@given(any_tokens)
def test_any_text_is_refused_by_inspect_and_verify_without_other_exceptions(token: str) -> None:
    assert_refused(token)


def _valid_token() -> str:
    from token_service.claims import AccessClaims

    claims = AccessClaims(iss="http://localhost:8000", aud="persona-api", sub="user-1", persona_id="p", scopes=("chat:read",),
                          iat=int(NOW), nbf=int(NOW), exp=int(NOW) + 900, jti="j-1", client_id="c-1")
    return CODEC.encode(claims, KEY)


VALID = _valid_token()


@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.characters(codec="ascii"))
def test_any_one_character_change_of_a_valid_token_is_refused(position: int, char: str) -> None:
    assume(VALID[position] != char)
    assert CODEC.verify(VALID, RING, NOW).jti == "j-1"  # the untouched token holds
    assert_refused(VALID[:position] + char + VALID[position + 1:])


# -- API key texts -----------------------------------------------------------------------------------

kinds = st.sampled_from(["public", "secret", "admin"])


@given(st.text(max_size=120) | st.from_regex(r"\A(pk|sk|ak)_[0-9A-Za-z]{16}_[0-9A-Za-z]{49}\Z"))
def test_any_text_parses_to_none_or_a_well_formed_key(text: str) -> None:
    parsed = parse_key_text(text)
    if parsed is not None:
        assert text[:3] == {"public": "pk_", "secret": "sk_", "admin": "ak_"}[parsed.kind]
        assert text[3:19] == parsed.key_id


@given(kinds, st.data())
def test_a_generated_key_parses_and_any_change_breaks_its_checksum(kind: Any, data: st.DataObject) -> None:
    key_id = new_key_id()
    text = generate_key_text(kind, key_id)
    parsed = parse_key_text(text)
    assert parsed is not None and parsed.kind == kind and parsed.key_id == key_id
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    char = data.draw(st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"))
    assume(text[position] != char)
    changed = text[:position] + char + text[position + 1:]
    assert parse_key_text(changed) is None
    # Another kind's prefix on the same body (a secret key passed off as an admin key) fails the checksum too.
    for prefix in ("pk_", "sk_", "ak_"):
        if prefix != text[:3]:
            assert parse_key_text(prefix + text[3:]) is None
    assert parse_key_text(text + "\n") is None and parse_key_text(" " + text) is None


# -- the Authorization header ------------------------------------------------------------------------


@given(st.text(max_size=80))
def test_bearer_credentials_are_none_or_non_empty_without_spaces(value: str) -> None:
    credentials = bearer_credentials(value)
    if credentials is not None:
        assert credentials and " " not in credentials and credentials in value
        assert value.strip().split(" ", 1)[0].lower() == "bearer"


@given(st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"]), st.from_regex(r"\A[!-~]{1,60}\Z"), st.sampled_from(["", " ", "  "]))
def test_bearer_scheme_is_matched_case_insensitively(scheme: str, credentials: str, pad: str) -> None:
    assert bearer_credentials(f"{pad}{scheme} {credentials}{pad}") == credentials


@given(st.sampled_from(["Basic", "Bearer", "Token", "", "Bearerx"]), st.text(max_size=40))
def test_a_header_that_is_not_bearer_with_credentials_is_no_credentials(scheme: str, rest: str) -> None:
    value = f"{scheme} {rest}"
    credentials = bearer_credentials(value)
    assert credentials is None or (scheme == "Bearer" and credentials == rest.strip())


# -- HTTP requests against the live app (real Redis) -------------------------------------------------


class Live:
    def __init__(self, redis_url: str, signing_key_file: str):
        self.clock = FakeClock()  # a still clock: last_used_at is written once, so the stores hold still between examples
        self.app = create_app(Settings(
            redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="CRITICAL",
            key_encryption_key=secrets.token_bytes(32), auth_adapters=("api_key", "hmac"),
            rate_limit_admin="100000/minute", rate_limit_failed_auth="100000/minute", rate_limit_secret_mint="100000/minute",
        ), clock=self.clock)
        self.client = self.app.test_client()
        self.requests = 0
        self.actions = Actions(self.client)
        created = self.actions.create_key("secret", personas=["*"], permissions=["introspect"])
        self.secret_key, self.secret_key_id = created["key"], created["id"]
        self.token = self.actions.token(self.secret_key)
        self.actions.revoke(sub="someone-else", reason="a revocation in the store, to be left alone")


@pytest.fixture(scope="module")
def live(redis_server: Any, signing_key_file: str) -> Iterator[Live]:
    client = redis_server.client()
    client.flushall()
    client.close()
    yield Live(redis_server.url, signing_key_file)


ENDPOINTS = {  # path -> the credentials that take a request past authentication
    "/v1/tokens": "secret", "/v1/introspect": "secret", "/v1/revoke": None, "/v1/admin/revocations": "admin",
    "/v1/admin/api-keys": "admin", "/v1/admin/token-status": "admin", "/v1/keys/exposed": None,
}
content_types = st.sampled_from([None, "application/json", "application/x-www-form-urlencoded", "text/plain",
                                 "application/json; charset=utf-8", "multipart/form-data; boundary=x", "application/jwt"])
raw_bodies = (st.binary(max_size=300)
              | json_values.map(lambda v: json.dumps(v).encode())
              | st.dictionaries(st.sampled_from(["personaId", "scopes", "ttl", "sub", "token", "token_type_hint", "jti", "kid",
                                                 "reason", "type", "name", "keys", "personas"]) | st.text(max_size=8),
                                json_values, max_size=4).map(lambda d: json.dumps(d).encode()))


def check_answer(response: Any, verify: bool = False) -> None:
    """No 5xx; a refusal is API.md's error body (with ``"active": false`` on /v1/verify) with the code of its status."""
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))
    assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers.get("X-Request-Id")
    if response.status_code >= 400:
        body = response.get_json()
        if verify:
            assert body.pop("active") is False
        assert set(body) == {"error", "error_description"}, body
        assert body["error"] in ERROR_OF_STATUS[response.status_code], body
        assert isinstance(body["error_description"], str) and body["error_description"]
        assert "Traceback" not in body["error_description"]


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
@settings(max_examples=40)
@given(body=raw_bodies, content_type=content_types)
def test_any_body_gets_a_clean_answer_and_a_refusal_stores_nothing(live: Live, path: str, body: bytes, content_type: str | None) -> None:
    kind = ENDPOINTS[path]
    headers = {"Authorization": f"Bearer {live.secret_key if kind == 'secret' else ADMIN_KEY}"} if kind else {}
    if content_type:
        headers["Content-Type"] = content_type
    before = store_snapshot(live.actions)
    # A fresh client address per example: the 10-a-minute limit of exposure reports is per address.
    live.requests += 1
    address = f"10.{live.requests // 65536 % 256}.{live.requests // 256 % 256}.{live.requests % 256}"
    response = live.client.post(path, data=body, headers=headers, environ_overrides={"REMOTE_ADDR": address})
    check_answer(response)
    if response.status_code >= 400:
        assert store_snapshot(live.actions) == before


latin1_text = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=120)


@given(value=latin1_text | st.builds(lambda s, c: f"{s} {c}", st.sampled_from(["Bearer", "bearer", "Basic"]), latin1_text),
       path=st.sampled_from(["/v1/tokens", "/v1/verify", "/v1/introspect", "/v1/admin/revocations", "/v1/revocations/feed"]))
def test_any_authorization_header_is_refused_cleanly(live: Live, value: str, path: str) -> None:
    with store_unchanged(live.actions):
        method = "GET" if path in ("/v1/verify", "/v1/revocations/feed") else "POST"
        response = live.client.open(path, method=method, json={"personaId": "p", "sub": "u", "token": "t"} if method == "POST" else None,
                                    headers={"Authorization": value})
        check_answer(response, verify=path == "/v1/verify")
        assert response.status_code in (400, 401, 403), response.status_code
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")) | structured_tokens)
def test_any_token_on_verify_and_introspect_is_refused_cleanly(live: Live, token: str) -> None:
    assume(token != live.token)
    with store_unchanged(live.actions):
        if "\r" not in token and "\n" not in token:  # HTTP cannot carry a line break in a header value
            verify = live.client.get("/v1/verify", headers={"Authorization": f"Bearer {token}"})
            assert verify.status_code == 401, verify.status_code
            assert verify.get_json()["active"] is False and verify.get_json()["error"] in ("invalid_token", "unauthorized")
        introspect = live.client.post("/v1/introspect", data={"token": token}, headers={"Authorization": f"Bearer {live.secret_key}"})
        if token:
            assert introspect.status_code == 200 and introspect.get_json() == {"active": False}
        else:
            check_answer(introspect)
            assert introspect.status_code == 400


header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=80)


@given(key_id=header_text | st.just("KEYID"), timestamp=header_text | st.integers(0, 2**40).map(str) | st.just("NOW"),
       signature=header_text | st.from_regex(r"\A[0-9a-fA-F]{64}\Z") | st.just("GOOD"), body=st.binary(max_size=60))
def test_any_signed_request_headers_are_refused_cleanly(live: Live, key_id: str, timestamp: str, signature: str, body: bytes) -> None:
    # The HMAC headers of a signed request, drawn at random or partly right (the real key id, a fresh timestamp,
    # the right signature over another body): a 401 with a Bearer challenge, never a 500, nothing stored.
    assume(body != b"another body")
    key_id = live.secret_key_id if key_id == "KEYID" else key_id
    timestamp = str(int(live.clock())) if timestamp == "NOW" else timestamp
    if signature == "GOOD":
        signature = hmac.new(live.secret_key.encode(), timestamp.encode() + b"another body", hashlib.sha256).hexdigest()
    headers = {"X-Key-Id": key_id, "X-Timestamp": timestamp, "X-Signature": signature, "Content-Type": "application/json"}
    with store_unchanged(live.actions):
        response = live.client.post("/v1/tokens", data=body, headers=headers)
        check_answer(response)
        assert response.status_code == 401, response.status_code
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
