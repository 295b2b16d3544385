"""Two gunicorn instances (two workers each) on one real Redis act as one service: what is revoked or
deleted through one is refused by the other as soon as the admin call has returned."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ADMIN_KEY, RedisServer
from tests.e2e.servers import ROOT, Instance, two_instances


@pytest.fixture
def pair(redis_server: RedisServer, redis_url: str, signing_key_file: str) -> Iterator[tuple[Instance, Instance]]:
    env = {
        "TOKEN_SERVICE_REDIS_URL": redis_url,
        "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
    }
    with two_instances(env) as pair:
        yield pair


def _secret_key(instance: Instance) -> dict[str, str]:
    status, _, body = instance.request("POST", "/v1/admin/api-keys", {
        "type": "secret", "name": "backend", "personas": ["support-bot"], "permissions": ["introspect"],
    }, token=ADMIN_KEY)
    assert status == 201, body
    return dict(body)


def _mint(instance: Instance, key: str, sub: str = "user-1") -> str:
    status, _, body = instance.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": sub}, token=key)
    assert status == 200, body
    return str(body["token"])


def _verify(instance: Instance, token: str) -> int:
    return instance.request("GET", "/v1/verify", token=token)[0]


def test_tokens_minted_by_one_are_accepted_by_the_other(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    key = _secret_key(a)["key"]
    assert _verify(b, _mint(a, key)) == 200
    assert _verify(a, _mint(b, key)) == 200
    assert a.request("GET", "/.well-known/jwks.json")[2] == b.request("GET", "/.well-known/jwks.json")[2]


def test_admin_revocation_through_one_is_enforced_by_the_other(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    key = _secret_key(a)["key"]
    token = _mint(a, key)
    status, _, body = b.request("POST", "/v1/introspect", {"token": token}, token=key)
    assert status == 200 and body["active"] is True
    jti = body["jti"]
    status, _, entry = a.request("POST", "/v1/admin/revocations", {"jti": jti, "reason": "drill"}, token=ADMIN_KEY)
    assert status == 201, entry
    assert _verify(b, token) == 401
    assert b.request("POST", "/v1/introspect", {"token": token}, token=key)[2] == {"active": False}
    # lifted through b, accepted again by a
    assert b.request("DELETE", f"/v1/admin/revocations/{entry['id']}", token=ADMIN_KEY)[0] == 204
    assert _verify(a, token) == 200


def test_subject_watermark_through_one_is_enforced_by_the_other(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    key = _secret_key(a)["key"]
    before = _mint(a, key, sub="mallory")
    assert b.request("POST", "/v1/admin/revocations", {"sub": "mallory"}, token=ADMIN_KEY)[0] == 201
    assert _verify(a, before) == 401
    after = _mint(a, key, sub="mallory")
    assert _verify(b, after) == 200


def test_api_key_deletion_through_one_is_enforced_by_the_other(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    created = _secret_key(a)
    token = _mint(b, created["key"])
    assert a.request("DELETE", f"/v1/admin/api-keys/{created['id']}?revoke_tokens=true", token=ADMIN_KEY)[0] == 204
    status, _, body = b.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": "u"}, token=created["key"])
    assert status == 401 and body["error"] == "unauthorized"
    assert _verify(b, token) == 401


def test_self_revocation_through_one_is_enforced_by_the_other(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    key = _secret_key(a)["key"]
    token = _mint(a, key)
    assert _verify(b, token) == 200
    status, _, body = a.request("POST", "/v1/revoke", {"token": token})
    assert status == 200 and body == {}
    assert _verify(b, token) == 401


def test_embedded_stores_refuse_several_workers(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py"), "--workers", "2",
         "--bind", "127.0.0.1:0", "wsgi:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "one process only" in result.stderr
    assert "Traceback" not in result.stderr


def test_redis_without_a_signing_key_stops_start_up_with_one_line(redis_url: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "TOKEN_SERVICE_REDIS_URL": redis_url}
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TOKEN_SERVICE_SIGNING_KEY_FILE" in lines[0]
