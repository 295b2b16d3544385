"""Lifecycle events leave one structured audit record each, with the actor and never a secret."""

from __future__ import annotations

import json
import logging

from tests.conftest import ADMIN_KEY, Actions
from token_service import create_app
from token_service.audit import AuditEvent


class Collect:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)


def test_admin_lifecycle_events_are_audited_with_their_actor(settings, clock):
    sink = Collect()
    actions = Actions(create_app(settings, clock=clock, audit=sink).test_client())
    created = actions.create_key("secret")
    token = actions.token(created["key"])
    revocation = actions.revoke(sub="user-42").get_json()
    assert actions.admin("DELETE", f"/v1/admin/revocations/{revocation['id']}").status_code == 204
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{created['id']}?revoke_tokens=true").status_code == 204
    assert [(e.action, e.actor) for e in sink.events] == [
        ("api_key.create", "bootstrap"), ("api_key.first_use", created["id"]), ("revocation.create", "bootstrap"),
        ("revocation.lift", "bootstrap"),
        ("api_key.revoke", "bootstrap"), ("revocation.create", "bootstrap"),
    ]
    assert sink.events[0].target == f"{created['id']} secret" and sink.events[0].address == "127.0.0.1"
    text = repr(sink.events)
    for secret in (created["key"], token, ADMIN_KEY):
        assert secret not in text


def test_the_default_sink_writes_one_json_line_per_event(settings, clock, caplog):
    actions = Actions(create_app(settings, clock=clock).test_client())
    logger = logging.getLogger("token_service")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="token_service.audit")
    try:
        logging.getLogger("token_service.audit").setLevel(logging.INFO)
        actions.create_key("admin")
    finally:
        logger.removeHandler(caplog.handler)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "token_service.audit" and r.getMessage().startswith("{")]
    assert lines and lines[0]["action"] == "api_key.create" and lines[0]["actor"] == "bootstrap"
    # the event's fields, and its place in the stored chain (the off-host copy a rewritten chain is compared with)
    assert set(lines[0]) == {"at", "actor", "address", "action", "target", "outcome", "id", "seq", "prev", "hash"}
    assert lines[0]["seq"] == 1 and lines[0]["prev"] == "0" * 64 and len(lines[0]["hash"]) == 64


def test_the_first_use_of_an_expired_key_is_audited_once(settings, clock):
    sink = Collect()
    actions = Actions(create_app(settings, clock=clock, audit=sink).test_client())
    created = actions.create_key("secret", expires_at=int(clock()) + 60)
    clock.advance(61)
    for _ in range(3):
        actions.mint(created["key"], expect=401)
    expired = [e for e in sink.events if e.action == "api_key.expired"]
    assert [(e.target, e.outcome) for e in expired] == [(created["id"], "refused")]
