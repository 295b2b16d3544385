"""The ``hmac`` adapter: requests signed as in the Persona security guide (``generateSignature``) plus
``X-Key-Id``, on both backends. Every refusal is 401 ``unauthorized`` with a ``WWW-Authenticate``
challenge, mints nothing and leaves the stores as they were (checked through the admin API), except
a key that signs from a browser, which is revoked."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ADMIN_KEY,
    ORIGIN,
    Actions,
    FakeClock,
    RedisServer,
    all_items,
    assert_error,
    bearer,
    store_unchanged,
    token_parts,
    with_settings,
)
from tests.e2e.servers import Instance
from token_service import ConfigError, Settings, create_app, load_settings
from token_service.keys import KeyRing, SigningKey
from token_service.stores import stores_from_url

PAYLOAD = {"personaId": "support-bot", "sub": "user-42"}
WINDOW = 300


def json_stringify(payload: Any) -> bytes:
    """What JavaScript's ``JSON.stringify`` writes for a plain object: no spaces."""
    return json.dumps(payload, separators=(",", ":")).encode()


def generate_signature(payload: Any, api_key: str, now: float) -> tuple[str, str]:
    """The guide's ``generateSignature``, line for line: (signature, timestamp)."""
    timestamp = str(math.floor(now))
    data = timestamp.encode() + json_stringify(payload)
    signature = hmac.new(api_key.encode(), data, hashlib.sha256).hexdigest()
    return signature, timestamp


def sign(key_text: str, timestamp: str, body: bytes) -> str:
    return hmac.new(key_text.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()


@pytest.fixture
def kek() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def hmac_settings(settings: Settings, kek: bytes) -> Settings:
    return with_settings(settings, key_encryption_key=kek, auth_adapters=("api_key", "hmac"))


@pytest.fixture
def app(hmac_settings: Settings, clock: FakeClock) -> Any:
    """Overrides conftest's app: the chain is api_key then hmac, with a key-encryption key."""
    return create_app(hmac_settings, clock=clock)


class Signer:
    """Sends signed requests through a test client."""

    def __init__(self, client: Any, clock: FakeClock):
        self.client = client
        self.clock = clock

    def headers(self, key: dict[str, Any], body: bytes, timestamp: str | None = None, key_text: str | None = None) -> dict[str, str]:
        stamp = timestamp if timestamp is not None else str(math.floor(self.clock()))
        return {"X-Key-Id": key["id"], "X-Timestamp": stamp, "X-Signature": sign(key_text or key["key"], stamp, body)}

    def post(self, path: str, body: bytes, headers: dict[str, str], content_type: str | None = "application/json") -> Any:
        all_headers = dict(headers)
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        return self.client.post(path, data=body, headers=all_headers)

    def mint(self, key: dict[str, Any], payload: dict[str, Any] | None = None, extra: dict[str, str] | None = None, **options: Any) -> Any:
        body = json_stringify(payload or PAYLOAD)
        return self.post("/v1/tokens", body, {**self.headers(key, body, **options), **(extra or {})})


@pytest.fixture
def signer(client: Any, clock: FakeClock) -> Signer:
    return Signer(client, clock)


@pytest.fixture
def secret(actions: Actions) -> dict[str, Any]:
    return actions.create_key("secret", permissions=["introspect"])


def assert_refused(response: Any, *secrets_: str) -> str:
    """401 unauthorized with a challenge; no token; no key text or signature anywhere in the answer."""
    body = assert_error(response, 401, "unauthorized")
    assert "token" not in body
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="')
    raw = response.get_data(as_text=True) + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for value in secrets_:
        assert value not in raw
        assert value.lower() not in raw.lower()
    return str(body["error_description"])


def key_record(actions: Actions, key_id: str) -> dict[str, Any]:
    return next(item for item in all_items(actions, "/v1/admin/api-keys") if item["id"] == key_id)


def assert_still_usable(signer: Signer, actions: Actions, key: dict[str, Any]) -> None:
    """The key still signs (a fresh signature: another subject) and still works as a Bearer key."""
    assert signer.mint(key, {"personaId": "support-bot", "sub": "still-" + secrets.token_hex(4)}).status_code == 200
    actions.mint(key["key"])


# -- success ----------------------------------------------------------------------------------------


def test_signed_mint_exactly_as_the_guide(client, actions, clock, secret):
    signature, timestamp = generate_signature(PAYLOAD, secret["key"], clock())
    response = client.post("/v1/tokens", data=json_stringify(PAYLOAD), headers={
        "Content-Type": "application/json", "X-Signature": signature, "X-Timestamp": timestamp, "X-Key-Id": secret["id"],
    })
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["personaId"] == "support-bot" and body["expires_in"] == 900
    assert body["scope"] == "chat:read chat:write"
    header, claims = token_parts(body["token"])
    assert header["typ"] == "at+jwt"
    assert claims["client_id"] == secret["id"]
    assert claims["sub"] == "user-42" and claims["personaId"] == "support-bot"
    verified = actions.verify(body["token"])
    assert verified.status_code == 200
    assert verified.headers["X-Auth-Client-Id"] == secret["id"]
    assert key_record(actions, secret["id"])["last_used_at"] == int(clock())


def test_signature_hex_in_upper_case_is_accepted(signer, secret, clock):
    body = json_stringify(PAYLOAD)
    headers = signer.headers(secret, body)
    headers["X-Signature"] = headers["X-Signature"].upper()
    response = signer.post("/v1/tokens", body, headers)
    assert response.status_code == 200, response.get_json()
    assert token_parts(response.get_json()["token"])[1]["client_id"] == secret["id"]


def test_signed_request_acts_as_its_secret_key(signer, actions):
    """Same rules as the key itself: sub required, personas and scopes limited."""
    key = actions.create_key("secret", personas=["support-bot"], scopes=["chat:read"])
    assert_error(signer.mint(key, {"personaId": "support-bot"}), 400, "invalid_request")
    assert_error(signer.mint(key, {"personaId": "other-bot", "sub": "u1"}), 403, "access_denied")
    assert_error(signer.mint(key, {"personaId": "support-bot", "sub": "u2", "scopes": ["chat:write"]}), 403, "access_denied")
    response = signer.mint(key, {"personaId": "support-bot", "sub": "u3", "scopes": ["chat:read"]})
    assert response.status_code == 200 and response.get_json()["scope"] == "chat:read"


def test_signed_introspection_with_a_form_body(signer, actions, secret):
    token = actions.token(secret["key"])
    body = f"token={token}".encode()
    response = signer.post("/v1/introspect", body, signer.headers(secret, body), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["active"] is True and answer["client_id"] == secret["id"]


def test_signed_request_with_an_empty_body_authenticates(signer, actions, secret):
    """The signature then covers the timestamp alone: authentication passes and the endpoint decides."""
    response = signer.post("/v1/introspect", b"", signer.headers(secret, b""), content_type=None)
    assert_error(response, 400, "invalid_request")  # authenticated: token is missing
    other = actions.create_key("secret")  # authenticated, but not granted introspect
    response = signer.post("/v1/introspect", b"", signer.headers(other, b""), content_type=None)
    assert_error(response, 403, "access_denied")


def test_without_signing_headers_the_adapter_stays_out(client, actions, secret):
    """No X-Key-Id, X-Timestamp or X-Signature: not a signed request; other adapters still work."""
    response = client.post("/v1/tokens", json=PAYLOAD)
    description = assert_refused(response)
    assert description == "Authentication is required."
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="http://localhost:8000"'
    actions.mint(secret["key"])


# -- refusals ---------------------------------------------------------------------------------------


def _headers_without(name: str) -> Any:
    def change(headers: dict[str, str]) -> None:
        del headers[name]
    return change


def _set(name: str, value: str) -> Any:
    def change(headers: dict[str, str]) -> None:
        headers[name] = value
    return change


MALFORMED = {
    "no key id": (_headers_without("X-Key-Id"), "all three"),
    "no timestamp": (_headers_without("X-Timestamp"), "all three"),
    "no signature": (_headers_without("X-Signature"), "all three"),
    "timestamp not digits": (_set("X-Timestamp", "soon"), "X-Timestamp"),
    "timestamp empty": (_set("X-Timestamp", ""), "X-Timestamp"),
    "timestamp negative": (_set("X-Timestamp", "-1"), "X-Timestamp"),
    "timestamp fractional": (_set("X-Timestamp", "1700000000.5"), "X-Timestamp"),
    "timestamp 13 digits": (_set("X-Timestamp", "1" * 13), "X-Timestamp"),
    "timestamp non-ASCII digits": (_set("X-Timestamp", "\u00b2\u00b3"), "X-Timestamp"),
    "signature short": (_set("X-Signature", "a" * 63), "X-Signature"),
    "signature long": (_set("X-Signature", "a" * 65), "X-Signature"),
    "signature not hex": (_set("X-Signature", "g" * 64), "X-Signature"),
    "signature base64": (_set("X-Signature", "A" * 43 + "="), "X-Signature"),
    "key id short": (_set("X-Key-Id", "abc"), "X-Key-Id"),
    "key id not base62": (_set("X-Key-Id", "abcdefgh-jklmnop"), "X-Key-Id"),
    "key id empty": (_set("X-Key-Id", ""), "X-Key-Id"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_missing_or_malformed_headers_are_refused(signer, actions, secret, case):
    change, mentioned = MALFORMED[case]
    body = json_stringify(PAYLOAD)
    headers = signer.headers(secret, body)
    signature = headers["X-Signature"]
    change(headers)
    with store_unchanged(actions):
        description = assert_refused(signer.post("/v1/tokens", body, headers), secret["key"], signature)
    assert mentioned in description
    assert_still_usable(signer, actions, secret)


@pytest.mark.parametrize("offset", [-(WINDOW + 1), WINDOW + 1], ids=["301s old", "301s ahead"])
def test_timestamp_outside_the_window_is_refused(signer, actions, clock, secret, offset):
    with store_unchanged(actions):
        if offset < 0:
            body = json_stringify(PAYLOAD)
            headers = signer.headers(secret, body)
            clock.advance(-offset)
            response = signer.post("/v1/tokens", body, headers)
        else:
            response = signer.mint(secret, timestamp=str(math.floor(clock()) + offset))
        assert "outside the allowed window" in assert_refused(response, secret["key"])
    assert_still_usable(signer, actions, secret)


def test_timestamp_inside_the_window_is_accepted(signer, clock, secret):
    body = json_stringify(PAYLOAD)
    headers = signer.headers(secret, body)
    clock.advance(WINDOW - 1)
    assert signer.post("/v1/tokens", body, headers).status_code == 200
    ahead = signer.mint(secret, {"personaId": "support-bot", "sub": "ahead"}, timestamp=str(math.floor(clock()) + WINDOW - 1))
    assert ahead.status_code == 200


def stores_of(app: Any) -> Any:
    """The stores of ``app``, to build another app over the same ones (the memory backend included)."""
    return app.extensions["token_service"].stores


def test_the_window_is_configured(app, hmac_settings, clock, secret):
    narrow = create_app(with_settings(hmac_settings, signature_window=10), clock=clock, stores=stores_of(app)).test_client()
    other = Signer(narrow, clock)
    body = json_stringify(PAYLOAD)
    headers = other.headers(secret, body)
    clock.advance(11)
    assert "10 seconds" in assert_refused(other.post("/v1/tokens", body, headers), secret["key"])


def _unknown_id(actions: Actions, clock: FakeClock) -> tuple[dict[str, Any], str]:
    key = {"id": secrets.token_hex(8), "key": "sk_" + "x" * 60}
    return key, "does not name a secret key"


def _public(actions: Actions, clock: FakeClock) -> tuple[dict[str, Any], str]:
    return actions.create_key("public"), "does not name a secret key"


def _admin(actions: Actions, clock: FakeClock) -> tuple[dict[str, Any], str]:
    return actions.create_key("admin"), "does not name a secret key"


def _revoked(actions: Actions, clock: FakeClock) -> tuple[dict[str, Any], str]:
    key = actions.create_key("secret")
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}").status_code == 204
    return key, "expired or been revoked"


def _expired(actions: Actions, clock: FakeClock) -> tuple[dict[str, Any], str]:
    key = actions.create_key("secret", expires_at=int(clock()) + 10)
    clock.advance(11)
    return key, "expired or been revoked"


WRONG_KEYS = {"unknown id": _unknown_id, "public key": _public, "admin key": _admin, "revoked secret key": _revoked,
              "expired secret key": _expired}


@pytest.mark.parametrize("case", list(WRONG_KEYS))
def test_a_key_id_that_is_not_a_usable_secret_key_is_refused(signer, actions, clock, case):
    """Signed correctly with that key's own text: still 401."""
    key, expected = WRONG_KEYS[case](actions, clock)
    with store_unchanged(actions):
        assert expected in assert_refused(signer.mint(key), key["key"])


def test_an_altered_body_is_refused(signer, actions, secret):
    body = json_stringify(PAYLOAD)
    headers = signer.headers(secret, body)
    altered = body.replace(b"user-42", b"user-43")
    assert len(altered) == len(body) and sum(a != b for a, b in zip(altered, body, strict=True)) == 1
    with store_unchanged(actions):
        assert "does not match" in assert_refused(signer.post("/v1/tokens", altered, headers), secret["key"], headers["X-Signature"])
    assert_still_usable(signer, actions, secret)


def test_a_signature_by_another_key_is_refused(signer, actions, secret):
    other = actions.create_key("secret")
    with store_unchanged(actions):
        assert "does not match" in assert_refused(signer.mint(secret, key_text=other["key"]), secret["key"], other["key"])
    assert_still_usable(signer, actions, secret)
    assert_still_usable(signer, actions, other)


def test_a_replay_is_refused(signer, actions, clock, secret):
    body = json_stringify(PAYLOAD)
    headers = signer.headers(secret, body)
    assert signer.post("/v1/tokens", body, headers).status_code == 200
    with store_unchanged(actions):
        assert "already been used" in assert_refused(signer.post("/v1/tokens", body, headers), secret["key"], headers["X-Signature"])
        upper = {**headers, "X-Signature": headers["X-Signature"].upper()}  # the same signature, in other letters
        assert "already been used" in assert_refused(signer.post("/v1/tokens", body, upper), secret["key"])
        # the same signature sent to another endpoint is the same signature
        assert "already been used" in assert_refused(signer.post("/v1/introspect", body, headers), secret["key"])
        # after the window (and after the replay cache has forgotten it) the timestamp check refuses it
        clock.advance(2 * WINDOW + 2)
        assert "outside the allowed window" in assert_refused(signer.post("/v1/tokens", body, headers), secret["key"])
    assert_still_usable(signer, actions, secret)


def test_a_refused_signature_is_not_spent(signer, actions, secret):
    """Only a verified signature enters the replay cache: a forgery cannot block the genuine request."""
    body = json_stringify(PAYLOAD)
    headers = signer.headers(secret, body)
    assert_refused(signer.post("/v1/tokens", body.replace(b"42", b"43"), headers))
    assert signer.post("/v1/tokens", body, headers).status_code == 200


def test_a_replay_through_another_instance_is_refused(redis_url, signing_key_file, clock, kek):
    settings = Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING",
                        key_encryption_key=kek, auth_adapters=("api_key", "hmac"))
    first, second = (create_app(settings, clock=clock).test_client() for _ in range(2))
    key = Actions(first).create_key("secret")
    body = json_stringify(PAYLOAD)
    headers = Signer(first, clock).headers(key, body)
    assert Signer(first, clock).post("/v1/tokens", body, headers).status_code == 200
    with store_unchanged(Actions(second)):
        assert "already been used" in assert_refused(Signer(second, clock).post("/v1/tokens", body, headers), key["key"])
    # and the other way round
    fresh = json_stringify({"personaId": "support-bot", "sub": "user-7"})
    headers = Signer(second, clock).headers(key, fresh)
    assert Signer(second, clock).post("/v1/tokens", fresh, headers).status_code == 200
    assert_refused(Signer(first, clock).post("/v1/tokens", fresh, headers))


def test_a_secret_key_created_before_the_kek_cannot_sign(backend, settings, hmac_settings, clock):
    # memory: both apps share one set of embedded stores; redis: two apps on the same Redis
    shared = stores_from_url(None, clock) if backend == "memory" else None
    before = create_app(settings, clock=clock, stores=shared).test_client()
    key = Actions(before).create_key("secret")
    after = create_app(hmac_settings, clock=clock, stores=shared).test_client()
    actions = Actions(after)
    with store_unchanged(actions):
        response = Signer(after, clock).mint(key)
        description = assert_refused(response, key["key"])
    assert "created without a key-encryption key" in description and "rotate or recreate" in description
    assert "created without a key-encryption key" in response.headers["WWW-Authenticate"]
    actions.mint(key["key"])  # still a good Bearer key
    fresh = actions.create_key("secret")  # created under the KEK: signs
    assert Signer(after, clock).mint(fresh).status_code == 200


def test_a_managed_ring_under_another_kek_stops_start_up_with_one_line(backend, hmac_settings, clock):
    shared = stores_from_url(None, clock) if backend == "memory" else None
    create_app(hmac_settings, clock=clock, stores=shared)
    with pytest.raises(ConfigError) as caught:
        create_app(with_settings(hmac_settings, key_encryption_key=secrets.token_bytes(32)), clock=clock, stores=shared)
    assert "KEY_ENCRYPTION_KEY" in str(caught.value) and "\n" not in str(caught.value)


def test_a_key_sealed_under_another_kek_cannot_sign(backend, hmac_settings, clock, caplog):
    shared = stores_from_url(None, clock) if backend == "memory" else None
    first = create_app(hmac_settings, clock=clock, stores=shared).test_client()
    key = Actions(first).create_key("secret")
    # the second app's ring is given (a managed ring would refuse to start under another KEK: see below)
    ring = KeyRing.single(SigningKey.generate("ES256"))
    second = create_app(with_settings(hmac_settings, key_encryption_key=secrets.token_bytes(32)), clock=clock, stores=shared, ring=ring)
    logger = logging.getLogger("token_service")
    logger.addHandler(caplog.handler)
    try:
        client = second.test_client()
        with store_unchanged(Actions(client)):
            description = assert_refused(Signer(client, clock).mint(key), key["key"])
    finally:
        logger.removeHandler(caplog.handler)
    assert "sealed under another key-encryption key" in description
    assert any(key["id"] in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("browser", [{"Origin": ORIGIN}, {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "cross-site"}],
                         ids=["Origin", "Sec-Fetch-Mode"])
def test_a_key_signing_from_a_browser_is_refused_and_revoked(signer, actions, clock, secret, browser):
    response = signer.mint(secret, extra=browser)
    assert "browser" in assert_refused(response, secret["key"])
    assert key_record(actions, secret["id"])["revoked_at"] == int(clock())
    assert all_items(actions, "/v1/admin/revocations") == []  # the key is revoked, its tokens are not
    assert_refused(signer.mint(secret, {"personaId": "support-bot", "sub": "next"}))
    assert_refused(actions.mint(secret["key"], expect=401))


def test_nodes_built_in_fetch_may_sign_requests(signer, actions, clock, secret):
    """Node's fetch (undici) sends Sec-Fetch-Mode: cors on every request, without Sec-Fetch-Site or Origin:
    a signed request from it passes (the key is not presented). A *presented* key with that header is
    refused and revoked, as API.md defines a browser (see docs/auth/api_key.md)."""
    node_fetch = {"Sec-Fetch-Mode": "cors", "User-Agent": "node", "Accept-Language": "*"}
    assert signer.mint(secret, extra=node_fetch).status_code == 200
    assert key_record(actions, secret["id"])["revoked_at"] is None
    actions.mint(secret["key"], headers=node_fetch, expect=401)
    assert key_record(actions, secret["id"])["revoked_at"] is not None


def test_from_a_browser_with_revocation_off_the_key_is_only_refused(app, hmac_settings, clock, secret, actions):
    settings = with_settings(hmac_settings, revoke_keys_from_browsers=False)
    client = create_app(settings, clock=clock, stores=stores_of(app)).test_client()
    other = Signer(client, clock)
    with store_unchanged(actions):
        assert "browser" in assert_refused(other.mint(secret, extra={"Origin": ORIGIN}), secret["key"])
    assert_still_usable(other, Actions(client), secret)


def test_nobody_can_revoke_a_key_by_naming_it_from_a_browser(signer, actions, clock, secret):
    """A bad signature, or a replay of an observed request with Origin added, revokes nothing."""
    body = json_stringify(PAYLOAD)
    headers = signer.headers(secret, body)
    with store_unchanged(actions):
        forged = {**headers, "X-Signature": "0" * 64, "Origin": ORIGIN}
        assert "does not match" in assert_refused(signer.post("/v1/tokens", body, forged))
    assert signer.post("/v1/tokens", body, headers).status_code == 200
    with store_unchanged(actions):
        assert "already been used" in assert_refused(signer.post("/v1/tokens", body, {**headers, "Origin": ORIGIN}))
    assert_still_usable(signer, actions, secret)


def test_neither_logs_nor_answers_hold_key_text_or_signatures(app, clock, caplog):
    logger = logging.getLogger("token_service")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="token_service")
    try:
        client = app.test_client()
        actions, signer = Actions(client), Signer(client, clock)
        key = actions.create_key("secret")
        body = json_stringify(PAYLOAD)
        headers = signer.headers(key, body)
        seen = [headers["X-Signature"]]
        answers = [signer.post("/v1/tokens", body, headers), signer.post("/v1/tokens", body, headers)]
        for change in ("body", "window", "browser"):
            payload = {"personaId": "support-bot", "sub": change}
            raw = json_stringify(payload)
            signed = signer.headers(key, raw)
            seen.append(signed["X-Signature"])
            if change == "body":
                raw = raw + b" "
            elif change == "window":
                clock.advance(WINDOW + 1)
            else:
                signed["Origin"] = ORIGIN
            answers.append(signer.post("/v1/tokens", raw, signed))
    finally:
        logger.removeHandler(caplog.handler)
    assert [a.status_code for a in answers] == [200, 401, 401, 401, 401]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records  # the access log was captured
    for answer in answers[1:]:
        assert_refused(answer, key["key"], *seen)
    for value in (key["key"], key["key"].split("_", 2)[2], *seen):
        assert value not in logged


# -- start-up ---------------------------------------------------------------------------------------


def test_hmac_without_a_kek_stops_start_up_with_one_line():
    with pytest.raises(ConfigError) as caught:
        load_settings({"TOKEN_SERVICE_AUTH_ADAPTERS": "api_key,hmac"})
    message = str(caught.value)
    assert "\n" not in message and "KEY_ENCRYPTION_KEY" in message and "hmac" in message
    # Settings built in code (no load_settings) are refused as well, when the chain is built
    with pytest.raises(ConfigError) as caught:
        create_app(Settings(auth_adapters=("api_key", "hmac"), log_level="WARNING"))
    message = str(caught.value)
    assert "\n" not in message and "KEY_ENCRYPTION_KEY" in message
    settings = load_settings({"TOKEN_SERVICE_AUTH_ADAPTERS": "api_key,hmac", "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": secrets.token_hex(32)})
    assert settings.auth_adapters == ("api_key", "hmac")
    create_app(settings)


# -- the guide's Node.js code against a real instance -----------------------------------------------

NODE_CLIENT = textwrap.dedent("""\
    const crypto = require('crypto');

    function generateSignature(payload, apiKey) {
      const timestamp = Math.floor(Date.now() / 1000).toString();
      const data = timestamp + JSON.stringify(payload);
      const signature = crypto
        .createHmac('sha256', apiKey)
        .update(data)
        .digest('hex');

      return {
        signature,
        timestamp
      };
    }

    async function makeSignedRequest(endpoint, payload, apiKey, keyId) {
      const { signature, timestamp } = generateSignature(payload, apiKey);

      const response = await fetch(`${process.env.BASE_URL}${endpoint}`, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'X-Signature': signature,
          'X-Timestamp': timestamp,
          'X-Key-Id': keyId
        },
        body: JSON.stringify(payload)
      });

      return { status: response.status, body: await response.json() };
    }

    makeSignedRequest('/v1/tokens', { personaId: 'support-bot', sub: 'user-42' }, process.env.PERSONA_API_KEY, process.env.PERSONA_KEY_ID)
      .then((result) => console.log(JSON.stringify(result)))
      .catch((error) => { console.error(error.message); process.exit(1); });
    """)


@pytest.fixture
def instance(redis_server: RedisServer, redis_url: str, signing_key_file: str) -> Iterator[Instance]:
    server = Instance({
        "TOKEN_SERVICE_REDIS_URL": redis_url,
        "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": secrets.token_hex(32),
        "TOKEN_SERVICE_AUTH_ADAPTERS": "api_key,hmac",
        "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
    })
    try:
        yield server.start()
    finally:
        server.close()


def test_the_guides_node_code_gets_a_token_from_a_real_instance(instance, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    status, _, key = instance.request("POST", "/v1/admin/api-keys", {"type": "secret", "personas": ["support-bot"]}, token=ADMIN_KEY)
    assert status == 201, key
    script = tmp_path / "signed.js"
    script.write_text(NODE_CLIENT)
    env = {"PATH": "/usr/bin:/bin", "BASE_URL": instance.base, "PERSONA_API_KEY": key["key"], "PERSONA_KEY_ID": key["id"]}

    def run() -> dict[str, Any]:
        done = subprocess.run([node, str(script)], env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    result = run()
    assert result["status"] == 200, result
    claims = token_parts(result["body"]["token"])[1]
    assert claims["client_id"] == key["id"] and claims["sub"] == "user-42"
    assert instance.request("GET", "/v1/verify", token=result["body"]["token"])[0] == 200
    # the Bearer form of the same key still works, and a tampered copy of the request does not
    assert instance.request("POST", "/v1/tokens", PAYLOAD, headers=bearer(key["key"]))[0] == 200
    status, _, body = instance.request("POST", "/v1/tokens", PAYLOAD, headers={
        "X-Key-Id": key["id"], "X-Timestamp": "1", "X-Signature": "0" * 64,
    })
    assert status == 401 and body["error"] == "unauthorized"


def test_the_python_client_of_the_docs_gets_a_token(instance, tmp_path):
    """The standard-library snippet of docs/auth/hmac.md, run as written against a real instance."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "auth" / "hmac.md").read_text()
    snippet = docs.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'BASE_URL = "https://tokens.example.com"' in snippet
    status, _, key = instance.request("POST", "/v1/admin/api-keys", {"type": "secret", "personas": ["support-bot"]}, token=ADMIN_KEY)
    assert status == 201, key
    script = tmp_path / "signed.py"
    script.write_text(snippet.replace("https://tokens.example.com", instance.base) + "\nprint(token)\n")
    env = {"PATH": "/usr/bin:/bin", "PERSONA_SECRET_KEY": key["key"], "PERSONA_KEY_ID": key["id"]}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert token_parts(done.stdout.strip())[1]["client_id"] == key["id"]
