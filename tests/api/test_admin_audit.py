"""GET /v1/admin/audit: the audit log as API.md shows it (admin key; since, action, cursor, limit; oldest first;
never a secret), what is recorded there (every change, refused admin calls) and what only in the log (reads),
and the failure policy when the record cannot be stored after the action succeeded. Both backends."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.conftest import ADMIN_KEY, ORIGIN, Actions, assert_error, bearer, store_unchanged
from token_service import Settings, create_app
from token_service.audit_chain import verify_log

PATH = "/v1/admin/audit"
FIELDS = {"id", "at", "actor", "address", "action", "target", "outcome"}


def audit(actions: Actions, **query: Any) -> list[dict[str, Any]]:
    """Every item of the audit listing for ``query``, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = actions.admin("GET", PATH, query_string={**query, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"items", "next_cursor"}
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def audit_lines() -> Iterator[list[logging.LogRecord]]:
    """The records of the ``token_service.audit`` logger (its JSON lines and the admin calls' lines)."""
    logger = logging.getLogger("token_service.audit")
    handler, level = Collected(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_admin_key_is_required_and_refusals_are_audited(actions, client):
    secret = actions.create_key("secret")
    assert_error(client.get(PATH), 401, "unauthorized")
    assert_error(client.get(PATH, headers=bearer("sk_nope_" + "x" * 49)), 401, "unauthorized")
    assert_error(client.get(PATH, headers=bearer(secret["key"])), 403, "access_denied")
    assert_error(client.delete("/v1/admin/api-keys/abc", headers=bearer(secret["key"])), 403, "access_denied")
    refused = audit(actions, action="auth.refused")
    assert [(r["actor"], r["target"], r["outcome"]) for r in refused] == [
        ("anonymous", "GET /v1/admin/audit", "unauthenticated"),
        ("anonymous", "GET /v1/admin/audit", "unauthenticated"),
        (secret["id"], "GET /v1/admin/audit", "not-admin"),
        (secret["id"], "DELETE /v1/admin/api-keys/<key_id>", "not-admin"),  # the route, not the path
    ]
    assert all(r["address"] == "127.0.0.1" for r in refused)


def test_lifecycle_events_oldest_first_with_the_api_fields(actions, client, clock):
    admin = actions.create_key("admin")
    secret = actions.create_key("secret")
    token = actions.token(secret["key"])
    clock.advance(10)
    revocation = actions.revoke(sub="user-42").get_json()
    assert actions.admin("DELETE", f"/v1/admin/revocations/{revocation['id']}").status_code == 204
    rotated = actions.admin("POST", f"/v1/admin/api-keys/{secret['id']}/rotate", json={"grace_seconds": 0}).get_json()
    assert client.post("/v1/keys/exposed", json={"keys": [admin["key"]]}).get_json() == {"revoked": 1}
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{rotated['id']}?revoke_tokens=true").status_code == 204
    assert actions.verify(token).status_code == 200  # minted before the rotation, by the old key: not covered

    items = audit(actions)
    assert all(set(item) == FIELDS for item in items)
    assert [(i["action"], i["actor"], i["target"]) for i in items] == [
        ("api_key.create", "bootstrap", f"{admin['id']} admin"),
        ("api_key.create", "bootstrap", f"{secret['id']} secret"),
        ("api_key.first_use", secret["id"], secret["id"]),
        ("revocation.create", "bootstrap", f"{revocation['id']} sub"),
        ("revocation.lift", "bootstrap", f"{revocation['id']} sub"),
        ("api_key.rotate", "bootstrap", f"{secret['id']} -> {rotated['id']}"),
        ("api_key.exposed", "report", admin["id"]),
        ("api_key.revoke", "bootstrap", rotated["id"]),
        ("revocation.create", "bootstrap", items[-1]["target"]),
    ]
    assert items[-1]["target"].endswith(" client_id")
    ats = [item["at"] for item in items]
    assert ats == sorted(ats) and ats[3] == ats[0] + 10
    assert all(item["outcome"] in ("ok", "revoked") for item in items)
    assert [item["id"] for item in items] == sorted(item["id"] for item in items)  # ids of the same length here: sortable


def test_pages_follow_the_cursor(actions):
    for _ in range(5):
        actions.create_key("secret")
    whole = actions.admin("GET", PATH, query_string={"limit": 100}).get_json()
    assert len(whole["items"]) == 5 and whole["next_cursor"] is None
    first = actions.admin("GET", PATH, query_string={"limit": 2}).get_json()
    assert len(first["items"]) == 2 and isinstance(first["next_cursor"], str)
    assert audit(actions, limit=2) == whole["items"] == audit(actions, limit=1)
    default = actions.admin("GET", PATH).get_json()  # limit 50 by default
    assert default == whole


def test_since_and_action_filters(actions, clock):
    actions.create_key("secret")
    clock.advance(60)
    middle = int(clock())
    revoked = actions.revoke(jti="j-1").get_json()
    later = actions.create_key("public")
    assert [i["target"] for i in audit(actions, action="api_key.create")][1] == f"{later['id']} public"
    assert [i["action"] for i in audit(actions, since=middle)] == ["revocation.create", "api_key.create"]
    assert audit(actions, since=middle + 1) == []
    from datetime import UTC, datetime

    rfc3339 = datetime.fromtimestamp(middle, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert audit(actions, since=rfc3339) == audit(actions, since=middle)
    assert audit(actions, since=rfc3339.replace("Z", "+00:00")) == audit(actions, since=middle)
    assert [i["target"] for i in audit(actions, since=middle, action="revocation.create")] == [f"{revoked['id']} jti"]
    assert audit(actions, action="api_key.created") == [] and audit(actions, action="api_key.create.x") == []


@pytest.mark.parametrize("query, named", [
    ({"since": "yesterday"}, "since"), ({"since": "-1"}, "since"), ({"since": "1.5"}, "since"),
    ({"since": "2026-12-04T22:00:00"}, "since"),  # no offset: ambiguous
    ({"since": "9" * 13}, "since"), ({"since": "２０２６"}, "since"),
    ({"action": "API_KEY.CREATE"}, "action"), ({"action": "api_key"}, "action"), ({"action": "api_key.create "}, "action"),
    ({"action": "a." + "b" * 64}, "action"), ({"action": "api_key.*"}, "action"),
    ({"cursor": "nope"}, "cursor"), ({"cursor": "czE"}, "cursor"),  # a revocation listing's cursor is not the audit's
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit"),
])
def test_bad_parameters_are_400_and_change_nothing(actions, query, named):
    actions.create_key("secret")
    before = audit(actions)
    with store_unchanged(actions):
        body = assert_error(actions.admin("GET", PATH, query_string=query), 400, "invalid_request")
    assert named in body["error_description"]
    assert audit(actions) == before  # a bad read records nothing (reads are in the log only)


def test_no_secret_in_any_item_nor_log_line(actions, client, audit_lines):
    public = actions.create_key("public")
    secret = actions.create_key("secret", permissions=["introspect"])
    admin = actions.create_key("admin")
    tokens = [actions.token(secret["key"]), actions.token(public["key"], headers={"Origin": ORIGIN})]
    actions.revoke(token=tokens[0])
    assert client.post("/v1/revoke", data={"token": tokens[1]}).status_code == 200
    actions.admin("POST", "/v1/admin/token-status", json={"token": tokens[0]})
    rotated = actions.admin("POST", f"/v1/admin/api-keys/{secret['id']}/rotate").get_json()
    client.get(PATH, headers=bearer(secret["key"]))  # refused: audited
    client.get(PATH, headers=bearer(tokens[1]))
    client.post("/v1/keys/exposed", json={"keys": [admin["key"], ADMIN_KEY]})
    items = audit(actions)
    assert {"api_key.create", "api_key.rotate", "revocation.create", "auth.refused", "api_key.exposed"} <= {i["action"] for i in items}
    text = json.dumps(items) + "\n".join(r.getMessage() for r in audit_lines)
    for key_text in (public["key"], secret["key"], admin["key"], rotated["key"]):
        assert key_text not in text
        assert key_text.split("_")[-1] not in text  # nor the random part alone
    assert ADMIN_KEY not in text
    for token in tokens:  # base64url holds "_": a token's signature is its part that must never show
        assert token not in text and token.rsplit(".", 1)[1] not in text


def test_the_audit_read_is_in_the_log_and_not_in_the_store(actions, audit_lines):
    actions.create_key("secret")
    assert len(audit(actions)) == 1
    assert len(audit(actions)) == 1  # reading did not add a record
    reads = [r.getMessage() for r in audit_lines if r.getMessage().startswith("admin GET /v1/admin/audit")]
    assert reads and all("-> 200 actor=bootstrap" in line for line in reads)


def test_each_stored_record_is_logged_with_its_place_in_the_chain(actions, audit_lines, app):
    actions.create_key("secret")
    actions.revoke(sub="user-1")
    lines = [json.loads(r.getMessage()) for r in audit_lines if r.getMessage().startswith("{")]
    items = audit(actions)
    assert [(line["id"], line["action"]) for line in lines] == [(i["id"], i["action"]) for i in items]
    assert lines[1]["prev"] == lines[0]["hash"] and [line["seq"] for line in lines] == [1, 2]
    result = verify_log(app.extensions["token_service"].stores.audit.chain)
    assert (result.checked, result.broken) == (2, None)


def test_a_record_that_cannot_be_stored_is_logged_at_error_and_the_action_stands(clock, audit_lines, redis_url, signing_key_file):
    """The audit stream itself broken (a key of the wrong type), the rest of Redis fine: the key is created
    and works, and the record is not lost: it is logged at ERROR with ``stored: false``."""
    settings = Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING")
    raw = redis.Redis.from_url(redis_url)
    raw.set("{ts}:audit", "not a stream")
    raw.close()
    actions = Actions(create_app(settings, clock=clock).test_client())
    created = actions.create_key("secret")
    actions.mint(created["key"])
    failed = [r for r in audit_lines if r.levelno == logging.ERROR and r.name == "token_service.audit"]
    assert failed, [r.getMessage() for r in audit_lines]
    line = json.loads(failed[0].getMessage())
    assert (line["action"], line["target"], line["stored"]) == ("api_key.create", f"{created['id']} secret", False)
    assert line["error"].startswith("redis: ") and created["key"] not in failed[0].getMessage()
    assert_error(actions.admin("GET", PATH), 503, "temporarily_unavailable")  # the listing cannot be read: it says so


def test_refused_admin_calls_are_stored_up_to_a_budget_a_minute_and_logged_beyond_it(actions, client, clock, audit_lines):
    """Anyone can cause an auth.refused: beyond TOKEN_SERVICE_AUDIT_REFUSALS_PER_MINUTE (10) a minute they are log
    lines only, so a flood cannot push the admin records out of the capped store."""
    actions.create_key("secret")
    for _ in range(14):
        assert_error(client.get(PATH), 401, "unauthorized")
    assert len(audit(actions, action="auth.refused")) == 10
    over = [json.loads(r.getMessage()) for r in audit_lines if r.getMessage().startswith('{"action":"auth.refused"')]
    assert len(over) == 14 and sum(1 for line in over if line.get("stored") is False) == 4
    assert {"api_key.create"} <= {i["action"] for i in audit(actions)}  # the other records are stored as ever
    clock.advance(60)  # a new minute: stored again
    assert_error(client.get(PATH), 401, "unauthorized")
    assert len(audit(actions, action="auth.refused")) == 11
