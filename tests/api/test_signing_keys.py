"""The signing-key ring through the admin API: static (one mounted key) and managed (staged rotation,
compromise with an immediate successor, several instances agreeing on the signer), time driven by the
clock rather than sleeping."""

from __future__ import annotations

import base64
import json
import math
import secrets
from typing import Any

import pytest

from tests.conftest import Actions, FakeClock, assert_error, with_settings
from token_service import create_app
from token_service.config import Settings
from token_service.stores import stores_from_url

KEK = secrets.token_bytes(32)
HORIZON = 900 + 30


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def ring(actions: Actions) -> dict[str, dict[str, Any]]:
    response = actions.admin("GET", "/v1/admin/signing-keys")
    assert response.status_code == 200, response.get_json()
    return {entry["kid"]: entry for entry in response.get_json()["keys"]}


def jwks(actions: Actions) -> tuple[set[str], int]:
    response = actions.client.get("/.well-known/jwks.json")
    max_age = int(response.headers["Cache-Control"].split("max-age=")[1])
    return {key["kid"] for key in response.get_json()["keys"]}, max_age


@pytest.fixture
def managed(settings: Settings) -> Settings:
    return with_settings(settings, key_encryption_key=KEK, signing_key_file=None)


@pytest.fixture
def shared_stores(backend: str, clock: FakeClock) -> Any:
    """Stores two apps share: the same memory stores, or (None) the same Redis from the settings."""
    return stores_from_url(None, clock) if backend == "memory" else None


def make(settings: Settings, clock: FakeClock, stores: Any = None) -> Actions:
    return Actions(create_app(settings, clock=clock, stores=stores).test_client())


def test_a_static_key_is_listed_and_cannot_rotate(actions, client):
    entries = ring(actions)
    assert [e["status"] for e in entries.values()] == ["current"]
    response = assert_error(actions.admin("POST", "/v1/admin/signing-keys/rotate"), 409, "conflict")
    assert "managed key ring" in response["error_description"]


def test_a_routine_rotation_goes_through_every_stage(managed, clock, shared_stores):
    actions = make(managed, clock, shared_stores)
    secret = actions.create_key("secret")["key"]
    [first] = ring(actions)
    old_token = actions.token(secret)
    assert kid_of(old_token) == first

    staged = actions.admin("POST", "/v1/admin/signing-keys/rotate")
    assert staged.status_code == 201, staged.get_json()
    new = staged.get_json()
    assert new["status"] == "next" and new["activates_at"] == math.ceil(clock()) + 600  # twice the JWKS max-age, whole
    clock.advance(new["activates_at"] - 600 - clock())  # the rest of this second: the delay counts from the next one
    assert ring(actions)[first]["retires_at"] == new["activates_at"]
    published, max_age = jwks(actions)
    assert published == {first, new["kid"]}
    assert kid_of(actions.token(secret)) == first  # the new key does not sign yet
    assert max_age == 300

    clock.advance(599)
    assert kid_of(actions.token(secret)) == first
    assert jwks(actions)[1] <= 1  # caches turn over before the stage change
    assert_error(actions.admin("POST", "/v1/admin/signing-keys/rotate"), 409, "conflict")  # one staged rotation at a time

    clock.advance(1)
    fresh = actions.token(secret)
    assert kid_of(fresh) == new["kid"]
    statuses = {kid: entry["status"] for kid, entry in ring(actions).items()}
    assert statuses == {first: "retiring", new["kid"]: "current"}
    assert actions.verify(old_token).status_code == 200  # the retiring key still verifies its tokens

    clock.advance(HORIZON)
    assert set(ring(actions)) == {new["kid"]}
    assert jwks(actions)[0] == {new["kid"]}
    assert actions.verify(fresh).status_code == 401  # expired by now; the ring moved on


def test_a_compromised_signing_key_is_replaced_at_once(managed, clock, shared_stores):
    actions = make(managed, clock, shared_stores)
    secret = actions.create_key("secret")["key"]
    [compromised] = ring(actions)
    before = actions.token(secret)
    response = actions.revoke(kid=compromised, reason="key material leaked")
    assert response.status_code == 201 and response.get_json()["expires_at"] is None
    after = actions.token(secret)
    assert kid_of(after) != compromised
    assert actions.verify(before).status_code == 401
    assert actions.verify(after).status_code == 200
    entries = ring(actions)
    assert entries[compromised]["status"] == "revoked" and entries[kid_of(after)]["status"] == "current"
    assert jwks(actions)[0] == {kid_of(after)}


def test_a_staged_key_is_promoted_when_the_signer_is_compromised(managed, clock, shared_stores):
    actions = make(managed, clock, shared_stores)
    secret = actions.create_key("secret")["key"]
    [compromised] = ring(actions)
    staged = actions.admin("POST", "/v1/admin/signing-keys/rotate").get_json()
    assert actions.revoke(kid=compromised).status_code == 201
    assert kid_of(actions.token(secret)) == staged["kid"]
    assert ring(actions)[staged["kid"]]["status"] == "current"


def test_instances_agree_on_the_signer_and_follow_a_compromise(managed, clock, shared_stores):
    a = make(managed, clock, shared_stores)
    b = make(managed, clock, shared_stores)
    secret = a.create_key("secret")["key"]
    assert kid_of(a.token(secret)) == kid_of(b.token(secret))
    staged = a.admin("POST", "/v1/admin/signing-keys/rotate").get_json()
    clock.advance(601)
    assert kid_of(a.token(secret)) == kid_of(b.token(secret)) == staged["kid"]
    # a compromise through a: b signs with the successor on its next mint, and verifies a's new tokens
    assert a.revoke(kid=staged["kid"]).status_code == 201
    from_a = a.token(secret)
    assert kid_of(from_a) != staged["kid"]
    assert kid_of(b.token(secret)) == kid_of(from_a)
    assert b.verify(from_a).status_code == 200


def test_a_new_instance_verifies_tokens_of_a_key_promoted_elsewhere(managed, clock, shared_stores):
    a = make(managed, clock, shared_stores)
    b = make(managed, clock, shared_stores)
    secret = a.create_key("secret")["key"]
    [first] = ring(a)
    assert a.revoke(kid=first).status_code == 201
    token = a.token(secret)  # signed by a key b has not loaded yet
    assert b.verify(token).status_code == 200


def test_rotation_runs_on_its_schedule(managed, clock, shared_stores):
    actions = make(with_settings(managed, signing_key_rotation=7 * 86400), clock, shared_stores)
    [first] = ring(actions)
    clock.advance(7 * 86400 - 10)
    assert set(ring(actions)) == {first}
    clock.advance(20)
    entries = ring(actions)
    [staged] = [kid for kid in entries if kid != first]
    assert entries[staged]["status"] == "next" and entries[staged]["activates_at"] == math.ceil(clock()) + 600


def test_a_mounted_key_seeds_an_empty_managed_ring(settings, clock):
    seeded = with_settings(settings, key_encryption_key=KEK)  # settings mount signing_key_file
    static = make(settings, clock)
    actions = make(seeded, clock)
    assert set(ring(actions)) == set(ring(static))


def test_rotate_refuses_a_body_it_does_not_know(managed, clock):
    actions = make(managed, clock)
    assert_error(actions.admin("POST", "/v1/admin/signing-keys/rotate", json={"now": True}), 400, "invalid_request")
    assert len(ring(actions)) == 1


@pytest.mark.parametrize("path", ["/v1/admin/signing-keys", "/v1/admin/signing-keys/rotate"])
def test_signing_keys_need_an_admin_key(client, actions, path):
    method = "POST" if path.endswith("rotate") else "GET"
    assert_error(client.open(path, method=method), 401, "unauthorized")
    secret = actions.create_key("secret")["key"]
    assert_error(client.open(path, method=method, headers={"Authorization": f"Bearer {secret}"}), 403, "access_denied")


def test_stage_changes_are_audited_once_for_the_deployment(managed, clock, shared_stores):
    from tests.api.test_audit import Collect

    sinks = [Collect(), Collect()]
    apps = [Actions(create_app(managed, clock=clock, stores=shared_stores, audit=sink).test_client()) for sink in sinks]
    for actions in apps:
        ring(actions)  # each instance has seen the first key signing
    [first] = ring(apps[0])
    staged = apps[0].admin("POST", "/v1/admin/signing-keys/rotate").get_json()
    clock.advance(601)
    for actions in apps:
        ring(actions)
    clock.advance(HORIZON)
    for actions in apps:
        ring(actions)
    events = [(e.action, e.target) for sink in sinks for e in sink.events if e.action.startswith("signing_key")]
    assert sorted(events) == sorted([
        ("signing_key.rotate", staged["kid"]),
        ("signing_key.stage", f"{staged['kid']} current"),
        ("signing_key.stage", f"{first} retiring"),
        ("signing_key.stage", f"{first} removed"),
    ])


def test_revoking_the_signer_never_brings_back_a_retired_key(managed, clock, shared_stores):
    actions = make(managed, clock, shared_stores)
    secret = actions.create_key("secret")["key"]
    [retired] = ring(actions)
    staged = actions.admin("POST", "/v1/admin/signing-keys/rotate").get_json()
    clock.advance(601 + HORIZON)
    assert set(ring(actions)) == {staged["kid"]}
    assert actions.revoke(kid=staged["kid"]).status_code == 201
    kid = kid_of(actions.token(secret))
    assert kid not in (retired, staged["kid"])
    assert jwks(actions)[0] == {kid}


def test_minting_repairs_a_ring_whose_revocation_was_interrupted(managed, clock, shared_stores):
    """The store failed between marking the signer revoked and adding its successor: the next mint repairs it."""
    from token_service.revocation import Revocation

    app = create_app(managed, clock=clock, stores=shared_stores)
    actions = Actions(app.test_client())
    secret = actions.create_key("secret")["key"]
    service = app.extensions["token_service"]
    [kid] = ring(actions)
    now = int(clock())
    service.stores.revocations.add(Revocation("rev_interrupted", "kid", kid, None, now, None))
    service.stores.signing_keys.update(kid, revoked_at=now)  # ...and nothing more happened
    assert kid_of(actions.token(secret)) != kid


def test_a_revoked_mounted_key_does_not_seed_a_managed_ring(settings, clock, shared_stores):
    static = make(settings, clock, shared_stores)
    [leaked] = ring(static)
    assert static.revoke(kid=leaked).status_code == 201
    managed = make(with_settings(settings, key_encryption_key=KEK), clock, shared_stores)  # the file is still mounted
    secret = managed.create_key("secret")["key"]
    assert kid_of(managed.token(secret)) != leaked
    assert leaked not in jwks(managed)[0]


def test_a_revoked_signing_key_of_a_managed_ring_cannot_be_restored(managed, clock, shared_stores):
    actions = make(managed, clock, shared_stores)
    [kid] = ring(actions)
    entry = actions.revoke(kid=kid).get_json()
    body = assert_error(actions.admin("DELETE", f"/v1/admin/revocations/{entry['id']}"), 409, "conflict")
    assert "cannot be restored" in body["error_description"]
    assert kid not in jwks(actions)[0]
