"""The request log (docs/operations/observability.md): one record per request with the route template, the
status, the latency, the truncated client address, the authenticated client id and a bounded outcome,
as JSON lines or text; never a token or a key."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Actions, FakeClock, bearer
from token_service import Settings, create_app
from token_service.logs import JsonLines, TextLines, client_address, configure
from token_service.stores.redis import observe_calls


class Captured:
    """The package's log records, formatted by the service's own formatter into a buffer."""

    def __init__(self, formatter: logging.Formatter):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)

    @property
    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def access(self) -> list[dict[str, Any]]:
        return [record for record in map(json.loads, self.lines) if record["logger"] == "token_service.access"]


@pytest.fixture
def captured() -> Iterator[Captured]:
    logger = logging.getLogger("token_service")
    capture = Captured(JsonLines())
    logger.addHandler(capture.handler)
    try:
        yield capture
    finally:
        logger.removeHandler(capture.handler)
        observe_calls(None)


def _app(settings: Settings, clock: FakeClock, **changes: Any) -> Any:
    values = {name: getattr(settings, name) for name in Settings.__dataclass_fields__}
    return create_app(Settings(**{**values, "log_level": "INFO", **changes}), clock=clock)


def test_one_json_record_per_request_with_the_contract_fields(settings: Settings, clock: FakeClock, captured: Captured) -> None:
    client = _app(settings, clock, rate_limit_failed_auth="2/minute").test_client()
    actions = Actions(client)
    key = actions.create_key("secret")
    token = actions.token(key["key"])
    actions.verify(token, "?personaId=support-bot")
    client.delete(f"/v1/admin/api-keys/{key['id']}", headers={**bearer(ADMIN_KEY), "X-Request-Id": "trace-42"})
    clock.advance(2000)
    actions.verify(token)
    bad = bearer("sk_" + secrets.token_urlsafe(24))
    for _ in range(3):
        client.post("/v1/tokens", json={"personaId": "support-bot"}, headers=bad)
    records = captured.access()
    assert len(records) == 8  # one per request: create key, mint, verify, delete, verify, three refused mints
    for record in records:
        assert {"time", "level", "logger", "message", "request_id", "method", "route", "status", "latency_ms", "client",
                "outcome"} <= set(record)
        assert record["time"].endswith("Z") and record["level"] == "INFO"
        assert record["client"] == "127.0.0.0/24"  # truncated by default
        assert isinstance(record["latency_ms"], float) and record["latency_ms"] >= 0
    created, minted, verified, deleted, expired, *refused = records
    assert created["client_id"] == "bootstrap" and created["outcome"] == "ok" and created["status"] == 201
    assert minted["route"] == "/v1/tokens" and minted["outcome"] == "minted" and minted["client_id"] == key["id"]
    assert verified["outcome"] == "verified" and verified["verdict"] == "valid" and "client_id" not in verified
    assert deleted["route"] == "/v1/admin/api-keys/<key_id>" and deleted["request_id"] == "trace-42"  # the template, not the id
    assert expired["outcome"] == "refused:invalid_token" and expired["verdict"] == "expired" and expired["status"] == 401
    assert [r["outcome"] for r in refused] == ["refused:unauthorized", "refused:unauthorized", "refused:rate_limited"]
    assert refused[0]["auth_failure"] == "api_key:invalid_credential"
    assert refused[2]["rate_limit"] == "failed_auth"
    text = captured.stream.getvalue()
    for secret_text in (token, key["key"], ADMIN_KEY, bad["Authorization"].split()[1], token.split(".")[2]):
        assert secret_text not in text


def test_the_client_address_setting(settings: Settings, clock: FakeClock, captured: Captured) -> None:
    for mode, expected in (("full", "203.0.113.77"), ("truncated", "203.0.113.0/24"), ("off", None)):
        client = _app(settings, clock, log_client_address=mode).test_client()
        client.get("/healthz", environ_base={"REMOTE_ADDR": "203.0.113.77"})
        assert captured.access()[-1].get("client") == expected, mode


def test_addresses_are_truncated_to_their_network() -> None:
    assert client_address("203.0.113.77", "truncated") == "203.0.113.0/24"
    assert client_address("2001:db8:1234:5678::1", "truncated") == "2001:db8:1234::/48"
    assert client_address("::ffff:198.51.100.7", "truncated") == "198.51.100.0/24"
    assert client_address("not an address", "truncated") is None
    assert client_address("2001:db8::1", "full") == "2001:db8::1"
    assert client_address("2001:db8::1", "off") is None
    assert client_address(None, "full") is None


def test_the_text_format_is_one_readable_line(settings: Settings, clock: FakeClock) -> None:
    logger = logging.getLogger("token_service")
    capture = Captured(TextLines())
    logger.addHandler(capture.handler)
    try:
        _app(settings, clock).test_client().get("/v1/verify", headers={"X-Request-Id": "abc"})
    finally:
        logger.removeHandler(capture.handler)
    line = next(line for line in capture.lines if " token_service.access " in line)
    assert " INFO token_service.access GET /v1/verify 401 " in line
    assert "request_id=abc" in line and "outcome=refused:unauthorized" in line and "client=127.0.0.0/24" in line
    assert "route=" not in line  # said once, in the message


def test_the_format_follows_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert Settings().log_json is False  # the embedded default: text for a developer's terminal
    assert Settings(redis_url="redis://127.0.0.1:1/0").log_json is True
    assert Settings(log_format="json").log_json is True
    assert Settings(redis_url="redis://127.0.0.1:1/0", log_format="text").log_json is False
    logger = logging.getLogger("token_service")
    try:
        configure("INFO", True)
        ours = [h for h in logger.handlers if type(h).__name__ == "_OurHandler"]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonLines)
        configure("WARNING", False)
        assert [h for h in logger.handlers if type(h).__name__ == "_OurHandler"] == ours  # re-formatted, not added
        assert isinstance(ours[0].formatter, TextLines) and logger.level == logging.WARNING
    finally:
        configure("INFO", False)


def test_other_loggers_share_the_formatter(captured: Captured) -> None:
    logging.getLogger("token_service.web").warning("store unavailable on %s %s (%s)", "GET", "/v1/verify", "redis: ConnectionError")
    record = json.loads(captured.lines[-1])
    assert record["logger"] == "token_service.web" and record["level"] == "WARNING"
    assert record["message"] == "store unavailable on GET /v1/verify (redis: ConnectionError)"
