"""POST /v1/keys/exposed (possession of a key is enough to report it), its rate limit, and the browser
rule's audit: a secret or admin key presented by a browser is treated as exposed. Both backends."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, ORIGIN, Actions, all_items, assert_error, bearer, store_unchanged, with_settings
from token_service import Settings, create_app
from token_service.apikeys import generate_key_text
from token_service.audit import AuditEvent
from token_service.service import REPORT_LIMIT

PATH = "/v1/keys/exposed"


class Collect:
    """An audit sink that keeps the events."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)

    def of(self, action: str) -> list[AuditEvent]:
        return [e for e in self.events if e.action == action]


@pytest.fixture
def sink() -> Collect:
    return Collect()


@pytest.fixture
def app(settings: Settings, clock: Any, sink: Collect) -> Any:
    """Overrides conftest's app: the audit events are collected."""
    return create_app(settings, clock=clock, audit=sink)


def report(client: Any, keys: Any, address: str = "203.0.113.7", **kwargs: Any) -> Any:
    return client.post(PATH, json={"keys": keys}, environ_base={"REMOTE_ADDR": address}, **kwargs)


def revoked_count(client: Any, keys: Any, address: str = "203.0.113.7") -> int:
    response = report(client, keys, address)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"revoked"}
    return int(body["revoked"])


def record(actions: Actions, key_id: str) -> dict[str, Any]:
    return next(item for item in all_items(actions, "/v1/admin/api-keys") if item["id"] == key_id)


def works(client: Any, key: dict[str, Any]) -> bool:
    """Whether the key still authenticates (a mint for secret and public keys, a listing for admin keys)."""
    if key["type"] == "admin":
        return int(client.get("/v1/admin/api-keys", headers=bearer(key["key"])).status_code) == 200
    body = {"personaId": "support-bot", **({"sub": "user-42"} if key["type"] == "secret" else {})}
    headers = {**bearer(key["key"]), **({"Origin": ORIGIN} if key["type"] == "public" else {})}
    return int(client.post("/v1/tokens", json=body, headers=headers).status_code) == 200


# -- what a report revokes --------------------------------------------------------------------------


def test_secret_and_admin_keys_are_revoked_at_once(actions, client, clock, sink):
    secret, admin, bystander = actions.create_key("secret"), actions.create_key("admin"), actions.create_key("secret")
    assert revoked_count(client, [secret["key"], admin["key"]]) == 2
    assert not works(client, secret) and not works(client, admin)
    assert works(client, bystander)
    assert record(actions, secret["id"])["revoked_at"] == record(actions, admin["id"])["revoked_at"] == int(clock())
    events = sink.of("api_key.exposed")
    assert [(e.target, e.actor, e.address, e.outcome) for e in events] == [
        (secret["id"], "report", "203.0.113.7", "revoked"), (admin["id"], "report", "203.0.113.7", "revoked"),
    ]
    text = repr(sink.events)
    for secret_text in (secret["key"], admin["key"], ADMIN_KEY):
        assert secret_text not in text


def test_the_answer_is_json_and_not_cached(actions, client):
    response = report(client, [actions.create_key("secret")["key"]])
    assert response.status_code == 200 and response.get_json() == {"revoked": 1}
    assert response.mimetype == "application/json" and response.headers["Cache-Control"] == "no-store"


def test_no_credentials_are_needed_and_any_sent_are_ignored(actions, client):
    key = actions.create_key("secret")
    response = report(client, [key["key"]], headers=bearer("sk_not-a-key"))
    assert response.status_code == 200 and response.get_json() == {"revoked": 1}


def test_a_key_listed_twice_counts_once(actions, client, sink):
    key = actions.create_key("secret")
    assert revoked_count(client, [key["key"], key["key"]]) == 1
    assert len(sink.of("api_key.exposed")) == 1


def test_public_keys_are_ignored(actions, client, sink):
    public = actions.create_key("public")
    with store_unchanged(actions):
        assert revoked_count(client, [public["key"]]) == 0
    assert works(client, public)
    assert sink.of("api_key.exposed") == []


def test_the_bootstrap_key_is_audited_but_not_revoked(actions, client, sink):
    with store_unchanged(actions):
        assert revoked_count(client, [ADMIN_KEY]) == 0
    assert actions.admin("GET", "/v1/admin/api-keys").status_code == 200
    [event] = sink.of("api_key.exposed")
    assert (event.target, event.actor, event.address, event.outcome) == ("bootstrap", "report", "203.0.113.7", "bootstrap-not-revocable")


def test_without_a_bootstrap_key_its_text_is_just_unknown(settings, clock, sink):
    client = create_app(with_settings(settings, admin_key=None), clock=clock, audit=sink).test_client()
    assert revoked_count(client, [ADMIN_KEY]) == 0
    assert sink.events == []


def test_unknown_and_malformed_texts_count_zero_and_say_nothing(actions, client, sink):
    key = actions.create_key("secret")
    well_formed_unknown = generate_key_text("secret", "AAAAAAAAAAAAAAAA")
    same_id_other_secret = generate_key_text("secret", key["id"])
    other_kind_same_id = "ak_" + key["key"][3:]  # the checksum covers the prefix: malformed
    bad_checksum = key["key"][:-1] + ("A" if key["key"][-1] != "A" else "B")
    texts = ["", "hello", key["key"] + "\n", key["key"].upper(), well_formed_unknown, same_id_other_secret, other_kind_same_id,
             bad_checksum, key["id"], "x" * 500]
    with store_unchanged(actions):
        responses = [report(client, [text]) for text in texts[:REPORT_LIMIT]]
    assert {r.status_code for r in responses} == {200}
    assert {r.get_data() for r in responses} == {responses[0].get_data()}  # the same bytes, whatever was listed
    assert responses[0].get_json() == {"revoked": 0}
    assert works(client, key)
    assert sink.of("api_key.exposed") == []


def test_revoked_and_expired_keys_count_zero(actions, client, clock, sink):
    revoked = actions.create_key("secret")
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{revoked['id']}").status_code == 204
    expiring = actions.create_key("secret", expires_at=int(clock()) + 10)
    clock.advance(10)
    with store_unchanged(actions):
        assert revoked_count(client, [revoked["key"], expiring["key"]]) == 0
    assert sink.of("api_key.exposed") == []


def test_a_key_in_its_rotation_grace_is_live_and_revoked(actions, client):
    old = actions.create_key("secret")
    new = actions.admin("POST", f"/v1/admin/api-keys/{old['id']}/rotate", json={"grace_seconds": 600}).get_json()
    assert revoked_count(client, [old["key"]]) == 1
    assert not works(client, old)
    assert works(client, {**new, "type": "secret"})


def test_a_mixed_report_counts_only_what_it_revoked(actions, client):
    live = [actions.create_key("secret"), actions.create_key("admin")]
    already = actions.create_key("secret")
    revoked_count(client, [already["key"]])
    texts = [live[0]["key"], ADMIN_KEY, actions.create_key("public")["key"], already["key"], "junk", live[1]["key"]]
    assert revoked_count(client, texts) == 2


def test_reporting_again_revokes_nothing_more(actions, client, clock):
    key = actions.create_key("secret")
    assert revoked_count(client, [key["key"]]) == 1
    first = record(actions, key["id"])["revoked_at"]
    clock.advance(5)
    assert revoked_count(client, [key["key"]]) == 0
    assert record(actions, key["id"])["revoked_at"] == first


# -- tokens of a reported key -----------------------------------------------------------------------


def test_tokens_of_a_reported_key_stay_valid_until_revoked_by_client_id(actions, client):
    key = actions.create_key("secret")
    tokens = [actions.token(key["key"]), actions.token(key["key"], sub="someone-else")]
    assert revoked_count(client, [key["key"]]) == 1
    for token in tokens:
        assert actions.verify(token).status_code == 200
    assert all_items(actions, "/v1/admin/revocations") == []
    assert actions.revoke(client_id=key["id"], reason="leaked key").status_code == 201
    for token in tokens:
        assert_error(actions.verify(token), 401, "invalid_token")


# -- bad requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("request_kwargs", "status", "error"), [
    ({"json": {}}, 400, "invalid_request"),
    ({"json": {"keys": []}}, 400, "invalid_request"),
    ({"json": {"keys": None}}, 400, "invalid_request"),
    ({"json": {"keys": "sk_x"}}, 400, "invalid_request"),
    ({"json": {"keys": [1]}}, 400, "invalid_request"),
    ({"json": {"keys": [["sk_x"]]}}, 400, "invalid_request"),
    ({"json": {"keys": [None]}}, 400, "invalid_request"),
    ({"json": {"keys": ["x"], "source": "github"}}, 400, "invalid_request"),
    ({"json": ["sk_x"]}, 400, "invalid_request"),
    ({"data": b"null", "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": b"{", "content_type": "application/json"}, 400, "invalid_request"),
    ({"data": b'{"keys": ["a"], "keys": ["b"]}', "content_type": "application/json"}, 400, "invalid_request"),
    ({}, 415, "unsupported_media_type"),
    ({"data": b"keys=sk_x", "content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ({"data": b'{"keys": ["sk_x"]}'}, 415, "unsupported_media_type"),
    ({"json": {"keys": ["x" * 17000]}}, 413, "payload_too_large"),
])
def test_bad_bodies_revoke_nothing(actions, client, request_kwargs, status, error):
    key = actions.create_key("secret")
    with store_unchanged(actions):
        assert_error(client.post(PATH, **request_kwargs), status, error)
    assert works(client, key)


def test_an_unknown_field_is_named(client):
    body = assert_error(client.post(PATH, json={"keys": ["x"], "source": "github"}), 400, "invalid_request")
    assert "source" in body["error_description"]


def test_at_most_a_hundred_keys(actions, client):
    key = actions.create_key("secret")
    texts = [generate_key_text("secret", f"{i:016d}") for i in range(100)]
    with store_unchanged(actions):
        assert_error(report(client, [*texts, key["key"]]), 400, "invalid_request")
    assert works(client, key)
    assert revoked_count(client, [*texts[:99], key["key"]]) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(client, method):
    assert_error(client.open(PATH, method=method), 405, "invalid_request")


def test_store_down_is_503(down_client):
    assert_error(report(down_client, ["sk_x"]), 503, "temporarily_unavailable")


# -- rate limit: 10 reports a minute per client address ---------------------------------------------


def test_the_eleventh_report_in_a_minute_is_429_and_revokes_nothing(actions, client, clock):
    key = actions.create_key("secret")
    for _ in range(REPORT_LIMIT):
        assert revoked_count(client, ["junk"], address="198.51.100.1") == 0
    with store_unchanged(actions):
        response = report(client, [key["key"]], address="198.51.100.1")
        assert_error(response, 429, "rate_limited")
    window_left = 60 - int(clock()) % 60
    assert response.headers["Retry-After"] == str(window_left)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert works(client, key)
    # another address has its own count
    assert revoked_count(client, ["junk"], address="198.51.100.2") == 0
    # a new minute: allowed again
    clock.advance(window_left)
    assert revoked_count(client, [key["key"]], address="198.51.100.1") == 1


def test_bad_reports_count_towards_the_limit(actions, client):
    key = actions.create_key("secret")
    for _ in range(REPORT_LIMIT):
        assert_error(client.post(PATH, json={"keys": []}, environ_base={"REMOTE_ADDR": "198.51.100.3"}), 400, "invalid_request")
    assert_error(report(client, [key["key"]], address="198.51.100.3"), 429, "rate_limited")


def test_the_limit_is_shared_by_apps_on_one_redis(redis_url, signing_key_file, clock):
    """As instances on one Redis: reports through one count at the other."""
    settings = Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING")
    first, second = (create_app(settings, clock=clock).test_client() for _ in range(2))
    for i in range(REPORT_LIMIT):
        assert revoked_count(first if i % 2 else second, ["junk"], address="198.51.100.4") == 0
    assert_error(report(first, ["junk"], address="198.51.100.4"), 429, "rate_limited")
    assert_error(report(second, ["junk"], address="198.51.100.4"), 429, "rate_limited")


def test_the_client_address_comes_through_trusted_proxies_only(settings, clock):
    client = create_app(with_settings(settings, trusted_proxies=1), clock=clock).test_client()
    for i in range(REPORT_LIMIT):
        headers = {"X-Forwarded-For": "192.0.2.1"}
        assert client.post(PATH, json={"keys": ["junk"]}, headers=headers, environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code == 200
    limited = client.post(PATH, json={"keys": ["junk"]}, headers={"X-Forwarded-For": "192.0.2.1"})
    assert_error(limited, 429, "rate_limited")
    assert client.post(PATH, json={"keys": ["junk"]}, headers={"X-Forwarded-For": "192.0.2.2"}).status_code == 200


# -- the browser rule is audited as an exposure -----------------------------------------------------


@pytest.mark.parametrize("browser_header", [{"Origin": ORIGIN}, {"Sec-Fetch-Mode": "cors"}])
def test_a_secret_key_from_a_browser_is_audited_as_exposed(actions, client, sink, browser_header):
    key = actions.create_key("secret")
    response = client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers={**bearer(key["key"]), **browser_header},
                           environ_base={"REMOTE_ADDR": "198.51.100.9"})
    assert_error(response, 401, "unauthorized")
    [event] = sink.of("api_key.exposed")
    assert (event.target, event.actor, event.address, event.outcome) == (key["id"], "browser", "198.51.100.9", "revoked")
    assert not works(client, key)


def test_an_admin_key_from_a_browser_is_audited_as_exposed(actions, client, sink):
    admin = actions.create_key("admin")
    assert_error(client.get("/v1/admin/api-keys", headers={**bearer(admin["key"]), "Origin": ORIGIN}), 401, "unauthorized")
    assert [(e.target, e.outcome) for e in sink.of("api_key.exposed")] == [(admin["id"], "revoked")]


def test_when_revoking_is_off_the_exposure_is_audited_as_refused_only(settings, clock, sink):
    app = create_app(with_settings(settings, revoke_keys_from_browsers=False), clock=clock, audit=sink)
    actions = Actions(app.test_client())
    key = actions.create_key("secret")
    assert_error(actions.client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"},
                                     headers={**bearer(key["key"]), "Origin": ORIGIN}), 401, "unauthorized")
    assert [(e.target, e.outcome) for e in sink.of("api_key.exposed")] == [(key["id"], "refused-only")]
    assert works(actions.client, key)


def test_the_bootstrap_key_from_a_browser_is_audited_but_not_revocable(actions, client, sink):
    assert_error(client.get("/v1/admin/api-keys", headers={**bearer(ADMIN_KEY), "Origin": ORIGIN}), 401, "unauthorized")
    [event] = sink.of("api_key.exposed")
    assert (event.target, event.actor, event.outcome) == ("bootstrap", "browser", "bootstrap-not-revocable")
    assert actions.admin("GET", "/v1/admin/api-keys").status_code == 200


def test_a_public_key_from_a_browser_is_not_an_exposure(actions, client, sink):
    assert works(client, actions.create_key("public"))
    assert sink.of("api_key.exposed") == []


def test_a_bad_key_from_a_browser_is_not_audited(actions, client, sink):
    key = actions.create_key("secret")
    wrong = generate_key_text("secret", key["id"])
    assert_error(client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers={**bearer(wrong), "Origin": ORIGIN}),
                 401, "unauthorized")
    assert sink.of("api_key.exposed") == []
    assert works(client, key)


# -- first use --------------------------------------------------------------------------------------


def test_the_first_use_of_a_key_is_audited_once(actions, client, clock, sink):
    key = actions.create_key("secret")
    assert sink.of("api_key.first_use") == []
    client.post("/v1/tokens", json={"personaId": "support-bot", "sub": "u"}, headers=bearer(key["key"]),
                environ_base={"REMOTE_ADDR": "198.51.100.20"})
    clock.advance(120)  # past the once-a-minute resolution: last_used_at is written again, not a first use
    actions.mint(key["key"])
    [event] = sink.of("api_key.first_use")
    assert (event.target, event.actor, event.address, event.outcome) == (key["id"], key["id"], "198.51.100.20", "ok")
    assert record(actions, key["id"])["last_used_at"] == int(clock())


def test_the_first_use_of_an_admin_key_is_audited(actions, client, sink):
    admin = actions.create_key("admin")
    assert client.get("/v1/admin/api-keys", headers=bearer(admin["key"])).status_code == 200
    assert [e.target for e in sink.of("api_key.first_use")] == [admin["id"]]


def test_the_bootstrap_key_has_no_first_use(actions, sink):
    actions.admin("GET", "/v1/admin/api-keys")
    assert sink.of("api_key.first_use") == []


def test_signed_requests_audit_exposure_and_first_use_too(settings, clock, sink):
    """The hmac adapter shares the rule: a key signing in a browser is exposed; a key's first signed use is audited."""
    app = create_app(with_settings(settings, key_encryption_key=secrets.token_bytes(32), auth_adapters=("api_key", "hmac")),
                     clock=clock, audit=sink)
    actions = Actions(app.test_client())
    keys = [actions.create_key("secret"), actions.create_key("secret")]

    def signed(key: dict[str, Any], **headers: str) -> Any:
        body = b'{"personaId":"support-bot","sub":"user-42"}'
        timestamp = str(int(clock()))
        signature = hmac.new(key["key"].encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
        return actions.client.post("/v1/tokens", data=body, content_type="application/json",
                                   headers={"X-Key-Id": key["id"], "X-Timestamp": timestamp, "X-Signature": signature, **headers})

    assert signed(keys[0]).status_code == 200
    assert [e.target for e in sink.of("api_key.first_use")] == [keys[0]["id"]]
    assert_error(signed(keys[1], Origin=ORIGIN), 401, "unauthorized")
    assert [(e.target, e.actor, e.outcome) for e in sink.of("api_key.exposed")] == [(keys[1]["id"], "browser", "revoked")]
    assert record(actions, keys[1]["id"])["revoked_at"] == int(clock())
