"""/metrics (docs/operations/observability.md): the counters move with real requests on a real Redis, label
values stay bounded, the setting turns the route off or moves it to a listener of its own, and the key
ring's gauges are computed at scrape time."""

from __future__ import annotations

import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, Actions, FakeClock, RedisServer, bearer, free_port
from token_service import Settings, create_app
from token_service.stores.redis import observe_calls
from token_service.web.rate_limits import UNLIMITED

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client: Any) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture
def redis_settings(redis_url: str, signing_key_file: str) -> Settings:
    return Settings(redis_url=redis_url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING")


@pytest.fixture
def client(redis_settings: Settings, clock: FakeClock) -> Iterator[Any]:
    yield create_app(redis_settings, clock=clock).test_client()
    observe_calls(None)


def test_counters_follow_real_requests(client: Any, clock: FakeClock) -> None:
    actions = Actions(client)
    before = scrape(client)
    key = actions.create_key("secret", permissions=["introspect"])["key"]
    token = actions.token(key)
    assert actions.verify(token).status_code == 200
    assert client.post("/v1/introspect", data={"token": token}, headers=bearer(key)).get_json()["active"] is True
    stolen = actions.token(key)
    assert actions.revoke(token=stolen).status_code == 201
    assert actions.verify(stolen).status_code == 401
    assert client.post("/v1/revoke", data={"token": actions.token(key)}).status_code == 200
    assert actions.verify(token[:-4] + "AAAA").status_code == 401
    assert client.get("/v1/verify").status_code == 401
    assert client.post("/v1/introspect", data={"token": token}).status_code == 401
    assert client.post("/v1/tokens", json={"personaId": "support-bot"}, headers=bearer(key[:-1] + "x")).status_code == 401
    clock.advance(2000)
    assert actions.verify(token).status_code == 401
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("token_service_mint_requests_total", outcome="minted", credential="secret") == 3
    assert moved("token_service_mint_requests_total", outcome="refused:unauthorized", credential="none") == 1
    assert moved("token_service_token_verifications_total", endpoint="verify", result="valid") == 1
    assert moved("token_service_token_verifications_total", endpoint="verify", result="revoked") == 1
    assert moved("token_service_token_verifications_total", endpoint="verify", result="bad_signature") == 1
    assert moved("token_service_token_verifications_total", endpoint="verify", result="missing") == 1
    assert moved("token_service_token_verifications_total", endpoint="verify", result="expired") == 1
    assert moved("token_service_token_verifications_total", endpoint="introspect", result="valid") == 1
    assert moved("token_service_token_verifications_total", endpoint="introspect", result="unauthenticated") == 1
    assert moved("token_service_auth_failures_total", adapter="none", reason="missing") == 1
    assert moved("token_service_revocations_total", type="jti", by="admin") == 1
    assert moved("token_service_revocations_total", type="jti", by="holder") == 1
    assert moved("token_service_auth_failures_total", adapter="api_key", reason="invalid_credential") == 1
    assert moved("token_service_http_requests_total", route="/v1/verify", method="GET", status="401") == 4
    assert moved("token_service_http_requests_total", route="/v1/admin/api-keys", method="POST", status="201") == 1
    assert moved("token_service_http_request_duration_seconds_count", route="/v1/tokens") == 4
    # Every guarded Redis call is timed (the revocation lookups of each verification among them), none failed.
    timed = "token_service_store_call_duration_seconds_count"
    assert total(after, timed) > total(before, timed)
    assert total(after, "token_service_store_errors_total") == 0
    assert value(after, "token_service_build_info", version=_any_version(after), signing_alg="ES256", stores="shared", ring="static") == 1


def _any_version(samples: Samples) -> str:
    return next(dict(labels)["version"] for (name, labels) in samples if name == "token_service_build_info")


def test_rate_limit_refusals_are_counted_by_limit(redis_settings: Settings, clock: FakeClock) -> None:
    settings = Settings(**{**_fields(redis_settings), "rate_limit_failed_auth": "2/minute"})
    client = create_app(settings, clock=clock).test_client()
    try:
        bad = bearer("sk_" + secrets.token_urlsafe(24))
        statuses = [client.post("/v1/tokens", json={"personaId": "support-bot"}, headers=bad).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        samples = scrape(client)
    finally:
        observe_calls(None)
    assert value(samples, "token_service_rate_limited_total", limit="failed_auth") == 1
    assert value(samples, "token_service_mint_requests_total", outcome="refused:rate_limited", credential="none") == 1


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.__dataclass_fields__}


def test_a_store_outage_counts_store_errors(tmp_path: Path, signing_key_file: str, clock: FakeClock) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        settings = Settings(redis_url=server.url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="ERROR",
                            redis_connect_timeout=0.2, redis_socket_timeout=0.2)
        client = create_app(settings, clock=clock).test_client()
        actions = Actions(client)
        token = actions.token(actions.create_key("secret")["key"])
        assert actions.verify(token).status_code == 200
        assert total(scrape(client), "token_service_store_errors_total") == 0
        server.stop()
        assert actions.verify(token).status_code == 503
        samples = scrape(client)
    finally:
        server.stop()
        observe_calls(None)
    assert total(samples, "token_service_store_errors_total") >= 1
    assert value(samples, "token_service_token_verifications_total", endpoint="verify", result="temporarily_unavailable") == 1
    assert value(samples, "token_service_http_requests_total", route="/v1/verify", method="GET", status="503") == 1


def test_label_values_stay_bounded(client: Any) -> None:
    """Paths, personas, methods and tokens chosen by clients never become label values."""
    actions = Actions(client)
    key = actions.create_key("secret")["key"]
    token = actions.token(key)

    def burst(start: int, count: int) -> None:
        for i in range(start, start + count):
            client.get(f"/bogus/{i}/{secrets.token_hex(4)}")
            actions.verify(token, f"?personaId=persona-{i}")
            client.open("/v1/verify", method=f"X{i}")
            client.post("/v1/tokens", json={"personaId": f"persona-{i}", "sub": f"user-{i}"}, headers=bearer(key))
            client.get(f"/v1/admin/api-keys/key{i}", headers=bearer(ADMIN_KEY))

    burst(0, 3)
    scrape(client)  # a scrape is a request too: its own series exist from the second one on
    series = set(scrape(client))
    burst(3, 200)
    samples = scrape(client)
    assert set(samples) == series
    labels = {v for (_, pairs) in samples for (_, v) in pairs}
    assert not any("bogus" in v or "persona-" in v or "user-" in v or v.startswith("X") for v in labels)


def test_metrics_are_unauthenticated_and_unlimited(client: Any) -> None:
    assert "metrics" in UNLIMITED
    for _ in range(5):
        response = client.get("/metrics")
        assert response.status_code == 200 and "RateLimit-Limit" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def test_off_means_no_route_and_no_collection(signing_key_file: str, clock: FakeClock) -> None:
    app = create_app(Settings(signing_key_file=signing_key_file, metrics=False, log_level="WARNING"), clock=clock)
    assert app.test_client().get("/metrics").status_code == 404
    assert "token_service.metrics" not in app.extensions
    assert "/metrics" not in {rule.rule for rule in app.url_map.iter_rules()}


def test_host_port_serves_on_a_listener_of_its_own(signing_key_file: str, clock: FakeClock) -> None:
    port = free_port()
    app = create_app(Settings(signing_key_file=signing_key_file, metrics=f"127.0.0.1:{port}", log_level="WARNING"), clock=clock)
    metrics = app.extensions["token_service.metrics"]
    try:
        client = app.test_client()
        assert client.get("/metrics").status_code == 404  # not on the app
        client.get("/healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:  # noqa: S310 - loopback
            samples = parse(answer.read().decode())
    finally:
        metrics.listener[0].shutdown()
        metrics.listener[0].server_close()
    assert value(samples, "token_service_http_requests_total", route="/healthz", method="GET", status="200") == 1


def test_the_managed_ring_gauges_are_computed_at_scrape_time(redis_url: str, clock: FakeClock) -> None:
    settings = Settings(redis_url=redis_url, admin_key=ADMIN_KEY, key_encryption_key=secrets.token_bytes(32), log_level="WARNING",
                        signing_key_rotation=30 * 86400)
    client = create_app(settings, clock=clock).test_client()
    try:
        clock.advance(86400)
        first = scrape(client)
        assert value(first, "token_service_signing_keys", status="current") == 1
        assert value(first, "token_service_signing_keys", status="next") == 0
        assert value(first, "token_service_signing_key_age_seconds") == pytest.approx(86400, abs=2)
        # no successor yet: the scheduled rotation's, 30 days after activation plus the activation delay
        assert value(first, "token_service_signing_key_retirement_seconds") == pytest.approx(
            29 * 86400 + settings.activation_delay, abs=2)
        assert Actions(client).admin("POST", "/v1/admin/signing-keys/rotate").status_code == 201
        second = scrape(client)
    finally:
        observe_calls(None)
    assert value(second, "token_service_signing_keys", status="next") == 1
    assert value(second, "token_service_signing_key_retirement_seconds") == pytest.approx(settings.activation_delay, abs=2)
    assert value(second, "token_service_signing_key_next_stage_seconds") == pytest.approx(settings.activation_delay, abs=2)
