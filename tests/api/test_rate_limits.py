"""Rate limits (API.md "Rate limits"): minting per public key and address, per secret key (bearer or signed),
admin calls per admin key, failed authentication per address, verify/introspect/discovery unlimited,
the client address taken from the socket unless proxies are trusted, and counts shared across instances
on one Redis. Both backends; small limits set through Settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, ORIGIN, Actions, FakeClock, assert_error, bearer, with_settings
from token_service import Settings, create_app

ADDRESS = "192.0.2.10"
OTHER_ADDRESS = "192.0.2.20"
BODY = {"personaId": "support-bot"}


def make(settings: Settings, clock: FakeClock, **limits: Any) -> Any:
    """A test client of an app with ``limits`` (rate_limit_… settings)."""
    return create_app(with_settings(settings, **limits), clock=clock).test_client()


def post_mint(client: Any, key: str, address: str = ADDRESS, **headers: str) -> Any:
    body: dict[str, Any] = dict(BODY)
    extra: dict[str, str] = {}
    if key.startswith("sk_"):
        body["sub"] = "user-42"
    if key.startswith("pk_"):
        extra["Origin"] = ORIGIN
    return client.post("/v1/tokens", json=body, headers={**bearer(key), **extra, **headers},
                       environ_base={"REMOTE_ADDR": address})


def assert_limited(response: Any) -> None:
    body = assert_error(response, 429, "rate_limited")
    assert set(body) == {"error", "error_description"}
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["RateLimit-Remaining"] == "0"


def test_public_mint_is_limited_per_key_and_address(settings, clock):
    client = make(settings, clock, rate_limit_public_mint="3/minute")
    actions = Actions(client)
    key = actions.create_key("public")["key"]
    other_key = actions.create_key("public")["key"]
    for remaining in ("2", "1", "0"):
        response = post_mint(client, key)
        assert response.status_code == 200, response.get_json()
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == remaining
        assert response.headers["RateLimit-Remaining"] == remaining
        assert "X-RateLimit-Reset" in response.headers and "RateLimit-Reset" in response.headers
    assert_limited(post_mint(client, key))
    assert post_mint(client, key, address=OTHER_ADDRESS).status_code == 200  # another address
    assert post_mint(client, other_key).status_code == 200  # another key


def test_secret_mint_is_limited_per_key_whatever_the_address(settings, clock):
    client = make(settings, clock, rate_limit_secret_mint="2/minute", rate_limit_public_mint="1/minute")
    actions = Actions(client)
    key = actions.create_key("secret")["key"]
    other_key = actions.create_key("secret")["key"]
    assert post_mint(client, key).status_code == 200
    assert post_mint(client, key, address=OTHER_ADDRESS).status_code == 200  # beyond the public limit: not applied
    assert_limited(post_mint(client, key, address="192.0.2.30"))
    assert post_mint(client, other_key).status_code == 200


def test_signed_requests_count_against_their_secret_key(settings, clock):
    client = make(settings, clock, rate_limit_secret_mint="2/minute", key_encryption_key=secrets.token_bytes(32),
                  auth_adapters=("api_key", "hmac"))
    key = Actions(client).create_key("secret")

    def signed(ttl: int) -> Any:
        body = json.dumps({**BODY, "sub": "user-42", "ttl": ttl}).encode()  # each signature is accepted once
        stamp = str(math.floor(clock()))
        signature = hmac.new(key["key"].encode(), stamp.encode() + body, hashlib.sha256).hexdigest()
        return client.post("/v1/tokens", data=body, headers={
            "Content-Type": "application/json", "X-Key-Id": key["id"], "X-Timestamp": stamp, "X-Signature": signature,
        }, environ_base={"REMOTE_ADDR": ADDRESS})

    assert signed(60).status_code == 200
    assert post_mint(client, key["key"], address=OTHER_ADDRESS).status_code == 200
    assert_limited(signed(61))


def test_admin_calls_are_limited_per_admin_key(settings, clock):
    client = make(settings, clock, rate_limit_admin="3/minute")
    actions = Actions(client)
    other = actions.create_key("admin")["key"]  # 1
    assert actions.admin("GET", "/v1/admin/api-keys").status_code == 200  # 2
    assert actions.admin("GET", "/v1/admin/signing-keys").status_code == 200  # 3: the signing-key routes too
    response = actions.admin("GET", "/v1/admin/revocations")
    assert_limited(response)
    assert Actions(client, other).admin("GET", "/v1/admin/api-keys").status_code == 200


def test_failed_authentication_locks_the_address_out(settings, clock):
    client = make(settings, clock, rate_limit_failed_auth="3/minute")
    actions = Actions(client)
    key = actions.create_key("secret")["key"]
    bad = "sk_" + "A" * 16 + "_" + "B" * 49
    assert_error(post_mint(client, bad), 401, "unauthorized")
    assert_error(client.get("/v1/admin/api-keys", headers=bearer("wrong"), environ_base={"REMOTE_ADDR": ADDRESS}),
                 401, "unauthorized")
    assert_error(client.post("/v1/introspect", data={"token": "x"}, headers=bearer("wrong"),
                             environ_base={"REMOTE_ADDR": ADDRESS}), 401, "unauthorized")
    # Over the limit: a good credential from that address is refused too, before any authentication.
    assert_limited(post_mint(client, key))
    assert_error(client.get("/v1/admin/api-keys", headers=bearer(ADMIN_KEY), environ_base={"REMOTE_ADDR": ADDRESS}),
                 429, "rate_limited")
    assert post_mint(client, key, address=OTHER_ADDRESS).status_code == 200
    # Successes do not count.
    for _ in range(5):
        assert post_mint(client, key, address=OTHER_ADDRESS).status_code == 200


def test_failed_authentication_lock_ends_with_its_window(settings, clock):
    client = make(settings, clock, rate_limit_failed_auth="2/second")
    key = Actions(client).create_key("secret")["key"]
    for _ in range(2):
        assert post_mint(client, "wrong").status_code == 401
    assert_limited(post_mint(client, key))
    time.sleep(1.1)
    assert post_mint(client, key).status_code == 200


def test_verify_introspect_and_discovery_are_unlimited(settings, clock):
    client = make(settings, clock, rate_limit_failed_auth="2/minute", rate_limit_secret_mint="1/minute",
                  rate_limit_public_mint="1/minute", rate_limit_admin="100/minute")
    actions = Actions(client)
    key = actions.create_key("secret", permissions=["introspect"])["key"]
    token = post_mint(client, key).get_json()["token"]
    for _ in range(5):
        response = client.get("/v1/verify", headers=bearer(token), environ_base={"REMOTE_ADDR": ADDRESS})
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers and "RateLimit-Limit" not in response.headers
        response = client.post("/v1/introspect", data={"token": token}, headers=bearer(key), environ_base={"REMOTE_ADDR": ADDRESS})
        assert response.status_code == 200 and response.get_json()["active"] is True
        assert "X-RateLimit-Limit" not in response.headers and "RateLimit-Limit" not in response.headers
        for path in ("/.well-known/jwks.json", "/.well-known/oauth-authorization-server"):
            response = client.get(path, environ_base={"REMOTE_ADDR": ADDRESS})
            assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers
    # Refused tokens at verify are not failed authentication.
    for _ in range(5):
        assert client.get("/v1/verify", headers=bearer("not-a-token"), environ_base={"REMOTE_ADDR": ADDRESS}).status_code == 401
    assert actions.admin("GET", "/v1/admin/api-keys", environ_base={"REMOTE_ADDR": ADDRESS}).status_code == 200


def test_a_spoofed_forwarded_for_is_ignored_without_trusted_proxies(settings, clock):
    client = make(settings, clock, rate_limit_public_mint="2/minute", trusted_proxies=0)
    key = Actions(client).create_key("public")["key"]
    assert post_mint(client, key, **{"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    assert post_mint(client, key, **{"X-Forwarded-For": "203.0.113.2"}).status_code == 200
    assert_limited(post_mint(client, key, **{"X-Forwarded-For": "203.0.113.3"}))


def test_the_forwarded_address_counts_behind_a_trusted_proxy(settings, clock):
    client = make(settings, clock, rate_limit_public_mint="1/minute", trusted_proxies=1)
    key = Actions(client).create_key("public")["key"]
    assert post_mint(client, key, **{"X-Forwarded-For": "203.0.113.1"}).status_code == 200
    assert_limited(post_mint(client, key, **{"X-Forwarded-For": "203.0.113.1"}))
    assert post_mint(client, key, **{"X-Forwarded-For": "203.0.113.2"}).status_code == 200


def test_two_instances_on_one_redis_share_the_counts(redis_url, signing_key_file, clock):
    settings = Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING",
                        rate_limit_secret_mint="3/minute", rate_limit_failed_auth="2/minute")
    first = create_app(settings, clock=clock).test_client()
    second = create_app(settings, clock=clock).test_client()
    key = Actions(first).create_key("secret")["key"]
    assert post_mint(first, key).status_code == 200
    assert post_mint(second, key).status_code == 200
    assert post_mint(first, key).status_code == 200
    assert_limited(post_mint(second, key))
    assert post_mint(first, "wrong", address=OTHER_ADDRESS).status_code == 401
    assert post_mint(second, "wrong", address=OTHER_ADDRESS).status_code == 401
    assert_limited(first.get("/v1/admin/api-keys", headers=bearer(ADMIN_KEY), environ_base={"REMOTE_ADDR": OTHER_ADDRESS}))


def test_apps_on_embedded_stores_keep_their_own_counts(signing_key_file, clock):
    settings = Settings(admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING",
                        rate_limit_failed_auth="1/minute")
    first = create_app(settings, clock=clock).test_client()
    second = create_app(settings, clock=clock).test_client()
    assert post_mint(first, "wrong").status_code == 401
    assert_limited(post_mint(first, "wrong"))
    assert post_mint(second, "wrong").status_code == 401


@pytest.mark.parametrize("limit", ["bad", "3/fortnight"])
def test_rate_limit_settings_are_validated(limit):
    from token_service.config import ConfigError, load_settings

    with pytest.raises(ConfigError):
        load_settings({"TOKEN_SERVICE_RATE_LIMIT_PUBLIC_MINT": limit})


def test_a_limited_endpoint_listed_as_unlimited_stops_start_up(settings, clock, monkeypatch):
    """UNLIMITED skips flask-limiter's check; an endpoint with a limit listed there would lose it silently."""
    from token_service.web import rate_limits

    monkeypatch.setattr(rate_limits, "UNLIMITED", rate_limits.UNLIMITED | {"public.mint"})
    with pytest.raises(RuntimeError, match="public.mint has a rate limit"):
        create_app(settings, clock=clock)
