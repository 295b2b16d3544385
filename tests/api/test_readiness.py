"""GET /readyz per dependency (issue 8, item 5): every check with its reason, the 503 of API.md when one fails,
bounded by the store's timeouts, and never the store's URL or password; GET /healthz stays trivial.

The store outages are real: a redis-server of the test's own, killed (SIGKILL) or frozen (SIGSTOP), as in
tests/reliability/test_fail_closed.py."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Actions, FakeClock, RedisServer, assert_error, with_settings
from token_service import create_app
from token_service.config import Settings

KEK = secrets.token_bytes(32)
PASSWORD = "readyz-" + secrets.token_hex(16)


def ready(client: Any) -> dict[str, Any]:
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["status"] == "ready"
    return body


def not_ready(client: Any, response: Any = None) -> dict[str, Any]:
    body = assert_error(response or client.get("/readyz"), 503, "temporarily_unavailable")
    assert body["status"] == "not_ready"
    assert body["error_description"].startswith("Not ready: ")
    return body


def test_ready_reports_the_store_and_the_signing_key(client, actions):
    body = ready(client)
    store, signing = body["checks"]["store"], body["checks"]["signing_key"]
    assert store["ok"] is True and isinstance(store["latency_ms"], float) and store["latency_ms"] >= 0
    [published] = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert signing == {
        "ok": True, "ring": "static", "kid": published["kid"], "alg": "ES256", "published_keys": 1,
        "seconds_until_next_stage": None, "can_sign": True,
    }
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_a_revoked_static_key_keeps_the_instance_ready_and_says_minting_is_off(client, actions):
    secret = actions.create_key("secret")["key"]
    kid = ready(client)["checks"]["signing_key"]["kid"]
    assert actions.revoke(kid=kid).status_code == 201

    signing = ready(client)["checks"]["signing_key"]  # verification and the admin API still work
    assert signing["ok"] is True and signing["kid"] == kid and signing["can_sign"] is False
    assert "TOKEN_SERVICE_SIGNING_KEY_FILE" in signing["detail"]
    assert_error(actions.mint(secret, expect=503), 503, "temporarily_unavailable")


def test_a_managed_ring_without_a_signing_key_is_not_ready_until_a_key_signs(settings, clock):
    """An interrupted revocation (the signer marked revoked, no successor promoted): no key signs, so 503 naming
    the signing key; the scheduled repair stages a key, and once it activates the instance is ready again."""
    app = create_app(with_settings(settings, key_encryption_key=KEK, signing_key_file=None), clock=clock)
    client = app.test_client()
    signing = ready(client)["checks"]["signing_key"]
    assert signing["ring"] == "managed" and signing["can_sign"] is True
    app.extensions["token_service"].stores.signing_keys.update(signing["kid"], revoked_at=int(clock()))
    clock.advance(settings.signing_key_refresh + 1)  # the ring's next read sees it

    body = not_ready(client)
    assert body["error_description"] == "Not ready: no signing key is loaded."
    assert body["checks"]["store"]["ok"] is True
    assert body["checks"]["signing_key"]["ok"] is False and body["checks"]["signing_key"]["reason"] == "no signing key is loaded"
    staged = [k for k in Actions(client).admin("GET", "/v1/admin/signing-keys").get_json()["keys"] if k["status"] == "next"]
    assert len(staged) == 1, staged  # the ring's schedule staged a successor; it signs after the activation delay

    clock.advance(staged[0]["activates_at"] - clock() + 1)
    signing = ready(client)["checks"]["signing_key"]
    assert signing["kid"] == staged[0]["kid"] and signing["can_sign"] is True


def test_a_managed_ring_reports_the_time_to_its_next_stage_and_rotation(settings, clock):
    managed = with_settings(settings, key_encryption_key=KEK, signing_key_file=None, signing_key_rotation=7 * 86400)
    client = create_app(managed, clock=clock).test_client()
    signing = ready(client)["checks"]["signing_key"]
    assert signing["seconds_until_next_stage"] is None and signing["seconds_until_rotation"] == 7 * 86400
    clock.advance(86400)
    assert ready(client)["checks"]["signing_key"]["seconds_until_rotation"] == 6 * 86400

    staged = Actions(client).admin("POST", "/v1/admin/signing-keys/rotate").get_json()
    signing = ready(client)["checks"]["signing_key"]
    assert signing["published_keys"] == 2  # the staged key is published before it signs
    assert signing["seconds_until_next_stage"] == staged["activates_at"] - int(clock())
    assert "seconds_until_rotation" not in ready(create_app(settings, clock=clock).test_client())["checks"]["signing_key"]


# -- a real Redis that goes away ------------------------------------------------------------------


class Outage:
    """The test's own Redis, with a password (set after start-up: RedisServer pings without one)."""

    def __init__(self, workdir: Path):
        self.server = RedisServer(workdir)
        self.server.start()
        admin = self.server.client()
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.server.port}/0"

    def begin(self, mode: str) -> None:
        assert self.server.process is not None
        if mode == "killed":
            self.server.process.kill()
            self.server.process.wait(timeout=10)
        else:
            os.kill(self.server.process.pid, signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen and self.server.process is not None:
            os.kill(self.server.process.pid, signal.SIGCONT)
        self.frozen = False

    def end(self) -> None:
        self.thaw()
        self.server.stop()


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    store = Outage(tmp_path)
    try:
        yield store
    finally:
        store.end()


class Counted:
    """Counts the connections the app's Redis pool hands out: one per command or pipeline sent."""

    def __init__(self, client: Any):
        self.calls = 0
        pool = client.connection_pool
        original = pool.get_connection

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        pool.get_connection = counted


@pytest.mark.parametrize("mode", ["killed", "hanging"])
def test_a_store_outage_is_503_with_the_store_named_after_one_bounded_call(outage, signing_key_file, mode):
    settings = Settings(redis_url=outage.url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file,
                        redis_connect_timeout=0.2, redis_socket_timeout=0.2, log_level="WARNING")
    app = create_app(settings, clock=FakeClock())
    client = app.test_client()
    assert ready(client)["checks"]["store"]["ok"] is True
    calls = Counted(app.extensions["token_service"].stores.client)

    outage.begin(mode)
    response = client.get("/readyz")
    body = not_ready(client, response)
    assert body["error_description"] == "Not ready: the store cannot be reached."
    store = body["checks"]["store"]
    assert store["ok"] is False and store["reason"] == "the store cannot be reached"
    assert store["error"] == ("ConnectionError" if mode == "killed" else "TimeoutError")
    # the static key is still loaded; whether it was revoked cannot be known without the store
    assert body["checks"]["signing_key"]["ok"] is True and body["checks"]["signing_key"]["can_sign"] is None
    # one Redis call per probe (the ping): a dead or hanging store costs one timeout, never more
    assert calls.calls == 1, calls.calls
    for text in (response.get_data(as_text=True), str(body)):
        assert PASSWORD not in text and str(outage.server.port) not in text and "redis://" not in text
    assert client.get("/healthz").status_code == 200  # liveness stays trivial: no restart is wanted


def test_readiness_returns_when_the_store_does(outage, signing_key_file):
    settings = Settings(redis_url=outage.url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file,
                        redis_connect_timeout=0.2, redis_socket_timeout=0.2, log_level="WARNING")
    client = create_app(settings, clock=FakeClock()).test_client()
    outage.begin("hanging")
    not_ready(client)
    outage.thaw()  # SIGCONT: the same Redis answers again
    body = ready(client)
    assert body["checks"]["store"]["ok"] is True and body["checks"]["signing_key"]["can_sign"] is True


def test_a_directory_ring_whose_only_key_is_revoked_is_not_ready_until_a_file_is_added(settings, clock, tmp_path):
    from token_service.keys import SigningKey

    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / f"{int(clock()) - 60}.pem").write_bytes(SigningKey.generate("ES256").private_pem())
    actions = Actions(create_app(with_settings(settings, signing_key_file=None, signing_key_dir=str(directory)),
                                 clock=clock).test_client())
    signing = ready(actions.client)["checks"]["signing_key"]
    assert signing["ring"] == "directory"
    assert actions.revoke(kid=signing["kid"]).status_code == 201

    body = not_ready(actions.client)
    assert body["error_description"] == "Not ready: no signing key is loaded."
    assert body["checks"]["signing_key"] == {"ok": False, "ring": "directory", "reason": "no signing key is loaded",
                                             "published_keys": 0}
    (directory / f"{int(clock())}-successor.pem").write_bytes(SigningKey.generate("ES256").private_pem())
    clock.advance(settings.signing_key_refresh + 1)
    signing = ready(actions.client)["checks"]["signing_key"]
    assert signing["kid"] != body["checks"]["signing_key"].get("kid") and signing["can_sign"] is True
