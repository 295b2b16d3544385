"""POST /v1/admin/api-keys/<id>/rotate: a new key with the old one's settings, the old one kept for a
grace period (never extended), on both backends."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import pytest

from tests.conftest import ORIGIN, Actions, all_items, assert_error, bearer, store_unchanged, with_settings
from token_service import Settings, create_app
from token_service.apikeys import unseal
from token_service.audit import AuditEvent
from token_service.service import DEFAULT_GRACE, MAX_GRACE

SETTINGS_FIELDS = ("type", "name", "personas", "scopes", "origins", "permissions", "expires_at")


class Collect:
    """An audit sink that keeps the events."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


@pytest.fixture
def sink() -> Collect:
    return Collect()


@pytest.fixture
def app(settings: Settings, clock: Any, sink: Collect) -> Any:
    """Overrides conftest's app: the audit events are collected."""
    return create_app(settings, clock=clock, audit=sink)


def rotate(actions: Actions, key_id: str, body: Any = None, **kwargs: Any) -> Any:
    if body is not None:
        kwargs["json"] = body
    return actions.admin("POST", f"/v1/admin/api-keys/{key_id}/rotate", **kwargs)


def rotated(actions: Actions, key_id: str, body: Any = None) -> dict[str, Any]:
    response = rotate(actions, key_id, body)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def record(actions: Actions, key_id: str) -> dict[str, Any]:
    return next(item for item in all_items(actions, "/v1/admin/api-keys") if item["id"] == key_id)


def mint_status(client: Any, key: str, **headers: str) -> int:
    body = {"personaId": "support-bot", **({"sub": "user-42"} if key.startswith("sk_") else {})}
    return int(client.post("/v1/tokens", json=body, headers={**bearer(key), **headers}).status_code)


# -- what the new key is ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "fields"), [
    ("public", {"personas": ["a", "support-bot"], "scopes": ["chat:read"], "origins": [ORIGIN, "http://localhost:3000"]}),
    ("secret", {"personas": ["*"], "permissions": ["introspect"], "name": None}),
    ("admin", {}),
])
def test_rotation_copies_every_setting_and_names_the_old_key(actions, clock, kind, fields):
    old = actions.create_key(kind, expires_at=int(clock()) + 7 * 86400, **fields)
    clock.advance(100)
    new = rotated(actions, old["id"])
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert new["key"].startswith(old["key"][:3]) and new["id"] in new["key"]
    assert {f: new[f] for f in SETTINGS_FIELDS} == {f: old[f] for f in SETTINGS_FIELDS}
    assert new["rotated_from"] == old["id"]
    assert new["created_at"] == int(clock())
    assert new["last_used_at"] is None and new["revoked_at"] is None
    listed = record(actions, new["id"])
    assert listed == {name: value for name, value in new.items() if name != "key"}
    assert "rotated_from" not in record(actions, old["id"])


def test_the_answer_is_not_cached_and_shows_no_secret_of_the_old_key(actions):
    old = actions.create_key("secret")
    response = rotate(actions, old["id"])
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    assert old["key"] not in response.get_data(as_text=True)


def test_the_new_key_works_and_the_old_one_until_the_grace_period_ends(actions, client, clock):
    old = actions.create_key("secret")
    new = rotated(actions, old["id"], {"grace_seconds": 600})
    assert record(actions, old["id"])["expires_at"] == int(clock()) + 600
    assert mint_status(client, new["key"]) == 200
    assert mint_status(client, old["key"]) == 200
    clock.advance(599)
    assert mint_status(client, old["key"]) == 200
    clock.advance(1)
    assert_error(client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(old["key"])),
                 401, "unauthorized")
    assert mint_status(client, new["key"]) == 200


def test_tokens_of_the_old_key_stay_valid_after_its_grace(actions, clock):
    old = actions.create_key("secret")
    token = actions.token(old["key"])
    rotated(actions, old["id"], {"grace_seconds": 0})
    assert actions.verify(token).status_code == 200


def test_grace_zero_stops_the_old_key_at_once(actions, client, clock):
    old = actions.create_key("admin")
    new = rotated(actions, old["id"], {"grace_seconds": 0})
    assert record(actions, old["id"])["expires_at"] == int(clock())
    assert_error(client.get("/v1/admin/api-keys", headers=bearer(old["key"])), 401, "unauthorized")
    assert client.get("/v1/admin/api-keys", headers=bearer(new["key"])).status_code == 200


@pytest.mark.parametrize("request_kwargs", [
    {},
    {"json": {}},
    {"data": b"", "content_type": "application/json"},
    {"data": b"", "content_type": "text/plain"},
], ids=["no-body", "empty-object", "empty-json-body", "empty-other-body"])
def test_no_body_or_an_empty_one_means_the_default_grace(actions, clock, request_kwargs):
    old = actions.create_key("secret")
    response = actions.admin("POST", f"/v1/admin/api-keys/{old['id']}/rotate", **request_kwargs)
    assert response.status_code == 201, response.get_json()
    assert record(actions, old["id"])["expires_at"] == int(clock()) + DEFAULT_GRACE == int(clock()) + 86400


def test_the_longest_grace_is_thirty_days(actions, clock):
    old = actions.create_key("secret")
    rotated(actions, old["id"], {"grace_seconds": MAX_GRACE})
    assert record(actions, old["id"])["expires_at"] == int(clock()) + 30 * 86400


def test_an_earlier_expiry_is_never_extended(actions, clock):
    old = actions.create_key("secret", expires_at=int(clock()) + 100)
    new = rotated(actions, old["id"], {"grace_seconds": 86400})
    assert record(actions, old["id"])["expires_at"] == int(clock()) + 100
    assert new["expires_at"] == int(clock()) + 100


def test_a_key_is_rotated_once_and_its_successor_keeps_the_original_expiry(actions, clock):
    """Rotating the old key again during its grace would give a second successor the grace's short expiry."""
    old = actions.create_key("secret", expires_at=int(clock()) + 30 * 86400)
    first = rotated(actions, old["id"], {"grace_seconds": 60})
    assert first["expires_at"] == old["expires_at"]
    with store_unchanged(actions):
        body = assert_error(rotate(actions, old["id"], {"grace_seconds": 3600}), 409, "conflict")
    assert first["id"] in body["error_description"]
    assert record(actions, old["id"])["expires_at"] == int(clock()) + 60
    second = rotated(actions, first["id"])
    assert second["expires_at"] == old["expires_at"]


def test_a_rotated_key_can_be_rotated_in_turn(actions):
    first = actions.create_key("secret")
    second = rotated(actions, first["id"])
    third = rotated(actions, second["id"])
    assert third["rotated_from"] == second["id"]


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("request_kwargs", "status", "error"), [
    ({"json": {"grace_seconds": -1}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": 30 * 86400 + 1}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": "60"}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": 1.5}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": 60.0}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": True}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": None}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": [60]}}, 400, "invalid_request"),
    ({"json": {"grace_seconds": 60, "name": "new"}}, 400, "invalid_request"),
    ({"json": [60]}, 400, "invalid_request"),
    ({"data": b"null", "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": b"{", "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": b'{"grace_seconds": 1, "grace_seconds": 2}', "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": b"grace_seconds=60", "content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ({"data": b'{"grace_seconds": 60}'}, 415, "unsupported_media_type"),
    ({"json": {"grace_seconds": 60, "pad": "x" * 17000}}, 413, "payload_too_large"),
])
def test_bad_bodies_change_nothing(actions, client, request_kwargs, status, error):
    old = actions.create_key("secret")
    with store_unchanged(actions):
        assert_error(actions.admin("POST", f"/v1/admin/api-keys/{old['id']}/rotate", **request_kwargs), status, error)
    assert mint_status(client, old["key"]) == 200


def test_an_unknown_field_is_named(actions):
    old = actions.create_key("secret")
    body = assert_error(rotate(actions, old["id"], {"grace": 60}), 400, "invalid_request")
    assert "grace" in body["error_description"]


def test_an_unknown_key_is_404(actions):
    actions.create_key("secret")
    with store_unchanged(actions):
        for key_id in ("AAAAAAAAAAAAAAAA", "nope"):
            assert_error(rotate(actions, key_id), 404, "not_found")


def test_a_revoked_key_is_409(actions):
    old = actions.create_key("secret")
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{old['id']}").status_code == 204
    with store_unchanged(actions):
        assert_error(rotate(actions, old["id"]), 409, "conflict")


def test_an_expired_key_is_409(actions, clock):
    old = actions.create_key("secret", expires_at=int(clock()) + 10)
    clock.advance(10)
    with store_unchanged(actions):
        assert_error(rotate(actions, old["id"]), 409, "conflict")


def test_a_key_whose_grace_is_over_is_409(actions, clock):
    old = actions.create_key("secret")
    rotated(actions, old["id"], {"grace_seconds": 0})
    with store_unchanged(actions):
        assert_error(rotate(actions, old["id"]), 409, "conflict")


def test_the_bootstrap_key_is_409(actions):
    with store_unchanged(actions):
        body = assert_error(rotate(actions, "bootstrap"), 409, "conflict")
    assert "TOKEN_SERVICE_ADMIN_KEY" in body["error_description"]


def test_a_bad_body_is_400_before_the_key_is_looked_up(actions):
    assert_error(rotate(actions, "AAAAAAAAAAAAAAAA", {"grace_seconds": -1}), 400, "invalid_request")


@pytest.mark.parametrize("kind", ["secret", "public"])
def test_only_admin_keys_may_rotate(actions, client, kind):
    key = actions.create_key(kind)
    client.get("/v1/admin/api-keys", headers=bearer(key["key"]))  # first use: records last_used_at
    with store_unchanged(actions):
        assert_error(client.post(f"/v1/admin/api-keys/{key['id']}/rotate", headers=bearer(key["key"])), 403, "access_denied")
        assert_error(client.post(f"/v1/admin/api-keys/{key['id']}/rotate"), 401, "unauthorized")


def test_other_methods_are_405(actions):
    key = actions.create_key("secret")
    response = actions.admin("GET", f"/v1/admin/api-keys/{key['id']}/rotate")
    assert_error(response, 405, "invalid_request")
    assert "POST" in response.headers["Allow"]


def test_store_down_is_503(down_client):
    assert_error(Actions(down_client).admin("POST", "/v1/admin/api-keys/AAAAAAAAAAAAAAAA/rotate"), 503, "temporarily_unavailable")


# -- public keys: CORS origins follow the old key's grace ------------------------------------------


def test_a_public_keys_origins_are_answered_during_the_grace_and_not_after(actions, client, clock):
    origin = "https://rotating.example.com"
    old = actions.create_key("public", origins=[origin])
    new = rotated(actions, old["id"], {"grace_seconds": 120})
    assert new["origins"] == [origin]
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    assert client.options("/v1/tokens", headers=preflight).headers.get("Access-Control-Allow-Origin") == origin
    # the new key lists the origin too; without it, only the old key's grace keeps the origin answered
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{new['id']}").status_code == 204
    assert client.options("/v1/tokens", headers=preflight).headers.get("Access-Control-Allow-Origin") == origin
    assert mint_status(client, old["key"], Origin=origin) == 200
    clock.advance(120)
    assert "Access-Control-Allow-Origin" not in client.options("/v1/tokens", headers=preflight).headers
    assert mint_status(client, old["key"], Origin=origin) == 401


def test_the_new_public_key_mints_from_the_same_origins(actions, client):
    old = actions.create_key("public")
    new = rotated(actions, old["id"], {"grace_seconds": 0})
    assert mint_status(client, new["key"], Origin=ORIGIN) == 200
    assert mint_status(client, new["key"], Origin="https://elsewhere.example.com") == 403


# -- sealing and audit ------------------------------------------------------------------------------


def test_a_rotated_secret_key_is_sealed_under_the_kek_and_signs_requests(settings, clock):
    kek = secrets.token_bytes(32)
    app = create_app(with_settings(settings, key_encryption_key=kek, auth_adapters=("api_key", "hmac")), clock=clock)
    actions = Actions(app.test_client())
    old = actions.create_key("secret")
    new = rotated(actions, old["id"], {"grace_seconds": 0})
    stored = app.extensions["token_service"].stores.api_keys.get(new["id"])
    assert stored.sealed is not None and unseal(stored.sealed, kek, new["id"]) == new["key"]
    body = b'{"personaId":"support-bot","sub":"user-42"}'
    timestamp = str(int(clock()))
    signature = hmac.new(new["key"].encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
    response = actions.client.post("/v1/tokens", data=body, content_type="application/json",
                                   headers={"X-Key-Id": new["id"], "X-Timestamp": timestamp, "X-Signature": signature})
    assert response.status_code == 200, response.get_json()


def test_rotation_is_audited_as_old_to_new(actions, sink):
    old = actions.create_key("secret")
    new = rotated(actions, old["id"])
    [event] = [e for e in sink.events if e.action == "api_key.rotate"]
    assert (event.target, event.actor, event.address, event.outcome) == (f"{old['id']} -> {new['id']}", "bootstrap", "127.0.0.1", "ok")
    assert new["key"] not in repr(sink.events) and old["key"] not in repr(sink.events)


def test_refused_rotations_are_not_audited(actions, sink):
    actions.create_key("secret")
    rotate(actions, "AAAAAAAAAAAAAAAA")
    rotate(actions, "bootstrap")
    assert [e.action for e in sink.events if e.action == "api_key.rotate"] == []
