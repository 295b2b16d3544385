"""/v1/verify and /v1/introspect with the verified-token cache (TOKEN_SERVICE_VERIFY_CACHE_SIZE): a token
presented again skips the signature check, never the revocation check nor the expiry."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests.api.test_verify_cost import assert_one_round_trip_each, command_calls
from tests.conftest import Actions, FakeClock, assert_error, bearer, token_parts, with_settings
from token_service import Settings, create_app


@pytest.fixture
def token(actions: Actions) -> str:
    return actions.token(actions.create_key("secret")["key"])


def test_a_repeated_token_is_signature_checked_once(actions: Actions, token: str, signature_checks: list[bytes]) -> None:
    answers = [actions.verify(token) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert all(a.get_json() == answers[0].get_json() for a in answers)
    assert answers[0].headers["X-Auth-Subject"] == "user-42"
    assert len(signature_checks) == 1


def test_every_verify_of_a_cached_token_still_reads_the_revocation_store(redis_url: str, signing_key_file: str) -> None:
    from tests.conftest import ADMIN_KEY

    app = create_app(Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING"),
                     clock=FakeClock())
    actions = Actions(app.test_client())
    token = actions.token(actions.create_key("secret")["key"])
    assert actions.verify(token).status_code == 200  # now cached
    probe = redis.Redis.from_url(redis_url)
    before = command_calls(probe)
    for _ in range(20):
        assert actions.verify(token).status_code == 200
    assert_one_round_trip_each(probe, before, 20)  # one check script each, cached or not
    probe.close()


@pytest.mark.parametrize("target", ["jti", "sub", "kid"])
def test_a_cached_token_that_is_revoked_is_refused(actions: Actions, client: Any, token: str, target: str,
                                                  clock: FakeClock) -> None:
    assert actions.verify(token).status_code == 200
    header, claims = token_parts(token)
    value = header["kid"] if target == "kid" else claims[target]
    clock.advance(1)
    assert actions.revoke(**{target: value}).status_code == 201
    assert_error(actions.verify(token), 401, "invalid_token")


def test_a_cached_token_that_is_revoked_is_inactive_on_introspection(actions: Actions, client: Any, token: str) -> None:
    key = actions.create_key("secret", permissions=["introspect"])["key"]
    assert client.post("/v1/introspect", data={"token": token}, headers=bearer(key)).get_json()["active"] is True
    assert actions.revoke(jti=token_parts(token)[1]["jti"]).status_code == 201
    assert client.post("/v1/introspect", data={"token": token}, headers=bearer(key)).get_json() == {"active": False}


def test_a_cached_token_that_expired_is_refused(actions: Actions, token: str, clock: FakeClock) -> None:
    assert actions.verify(token).status_code == 200
    clock.advance(900 + 30)
    assert_error(actions.verify(token), 401, "invalid_token")


def test_a_token_differing_in_one_character_from_a_cached_one_is_refused(actions: Actions, token: str) -> None:
    assert actions.verify(token).status_code == 200
    middle = len(token) - 20
    spoiled = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]
    assert_error(actions.verify(spoiled), 401, "invalid_token")


def test_size_zero_checks_every_signature(settings: Settings, clock: FakeClock, signature_checks: list[bytes]) -> None:
    app = create_app(with_settings(settings, verify_cache_size=0), clock=clock)
    actions = Actions(app.test_client())
    token = actions.token(actions.create_key("secret")["key"])
    for _ in range(3):
        assert actions.verify(token).status_code == 200
    assert len(signature_checks) == 3


def test_token_status_and_revocation_by_token_always_check_in_full(actions: Actions, token: str,
                                                                   signature_checks: list[bytes]) -> None:
    assert actions.verify(token).status_code == 200
    assert actions.verify(token).status_code == 200
    assert len(signature_checks) == 1  # the second verify was a cache hit
    status = actions.admin("POST", "/v1/admin/token-status", json={"token": token})
    assert status.status_code == 200 and status.get_json()["active"] is True
    assert len(signature_checks) == 2  # token-status checked the signature again
    assert actions.revoke(token=token).status_code == 201
    assert len(signature_checks) == 3  # and so did revocation by token
    assert actions.verify(token).status_code == 401
