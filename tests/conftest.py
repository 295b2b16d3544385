"""Shared fixtures: a real redis-server on a free loopback port, a controllable clock, settings and
apps built from Settings (never from the process environment), and helpers for repeated steps."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis

from token_service import Settings, create_app
from token_service.keys import SigningKey

ADMIN_KEY = "test-bootstrap-admin-key-0123456789abcdef"
ORIGIN = "https://chat.example.com"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server the tests own: started on a free loopback port, stopped at the end."""

    def __init__(self, workdir: Path, extra: tuple[str, ...] = ()):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.workdir = workdir
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning", *extra]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a real, empty Redis."""
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


class FakeClock:
    """A clock the test drives: ``clock()`` is now, ``advance(s)`` moves it."""

    def __init__(self, start: float | None = None):
        self.now = float(int(time.time())) + 0.25 if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PEM ES256 key shared by every app of the session (as instances share a mounted key)."""
    path = tmp_path_factory.mktemp("keys") / "signing.pem"
    path.write_bytes(SigningKey.generate("ES256").private_pem())
    return str(path)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Runs a test on the embedded stores and on a real Redis."""
    return str(request.param)


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest, signing_key_file: str) -> Settings:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    return Settings(redis_url=url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="WARNING")


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Any:
    return create_app(settings, clock=clock)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


class Actions:
    """Repeated steps of the API tests (after flaskr's AuthActions)."""

    def __init__(self, client: Any, admin_key: str = ADMIN_KEY):
        self.client = client
        self.admin_key = admin_key

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_key}", **kwargs.pop("headers", {})}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def create_key(self, type: str = "secret", **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"type": type, "name": f"test {type}"}
        if type != "admin":
            body["personas"] = ["support-bot"]
        if type == "public":
            body["origins"] = [ORIGIN]
        body.update(fields)
        response = self.admin("POST", "/v1/admin/api-keys", json=body)
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def mint(self, key: str, expect: int = 200, headers: dict[str, str] | None = None, **body: Any) -> Any:
        body.setdefault("personaId", "support-bot")
        if key.startswith("sk_"):
            body.setdefault("sub", "user-42")
        response = self.client.post("/v1/tokens", json=body, headers={"Authorization": f"Bearer {key}", **(headers or {})})
        assert response.status_code == expect, response.get_json()
        return response

    def token(self, key: str, **body: Any) -> str:
        return str(self.mint(key, **body).get_json()["token"])

    def verify(self, token: str, query: str = "") -> Any:
        return self.client.get(f"/v1/verify{query}", headers={"Authorization": f"Bearer {token}"})

    def revoke(self, **body: Any) -> Any:
        return self.admin("POST", "/v1/admin/revocations", json=body)


@pytest.fixture
def actions(client: Any) -> Actions:
    return Actions(client)


def with_settings(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes``."""
    return replace(settings, **changes)


def assert_error(response: Any, status: int, error: str) -> dict[str, Any]:
    """The response is the contract's error body with this status and code."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers.get("X-Request-Id")
    return dict(body)


# -- helpers of the API tests (tests/api/) ----------------------------------------------------------


def bearer(credentials: str) -> dict[str, str]:
    """The Authorization header for ``credentials``."""
    return {"Authorization": f"Bearer {credentials}"}


def all_items(actions: Actions, path: str) -> list[dict[str, Any]]:
    """Every item of an admin listing, following ``next_cursor`` page by page."""
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        response = actions.admin("GET", path, query_string={"limit": 100, "cursor": cursor})
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        items.extend(body["items"])
        if body["next_cursor"] is None:
            return items
        cursor = body["next_cursor"]


def store_snapshot(actions: Actions) -> dict[str, list[dict[str, Any]]]:
    """What the stores hold, as the admin API shows it: every revocation and every API key."""
    return {"revocations": all_items(actions, "/v1/admin/revocations"), "api_keys": all_items(actions, "/v1/admin/api-keys")}


@contextmanager
def store_unchanged(actions: Actions) -> Iterator[None]:
    """Asserts that the block leaves the revocations and the API keys exactly as they were."""
    before = store_snapshot(actions)
    yield
    assert store_snapshot(actions) == before


def token_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the claims of a JWT, read without checking anything (to look at what was signed)."""
    return dict(jwt.get_unverified_header(token)), dict(jwt.decode(token, options={"verify_signature": False}))


def write_signing_key(directory: Path, alg: str = "ES256") -> str:
    """A new PEM private key in ``directory`` (another key than the session's); its path."""
    path = directory / f"other-{alg}.pem"
    path.write_bytes(SigningKey.generate(alg).private_pem())  # type: ignore[arg-type]
    return str(path)


def unreachable_store_settings(signing_key_file: str, port: int, **changes: Any) -> Settings:
    """Settings naming a Redis on a loopback ``port`` nobody listens on (the store is down), short timeouts."""
    return Settings(
        redis_url=f"redis://127.0.0.1:{port}/0", admin_key=ADMIN_KEY, signing_key_file=signing_key_file,
        redis_connect_timeout=0.2, redis_socket_timeout=0.2, log_level="WARNING", **changes,
    )


@pytest.fixture(scope="session")
def closed_port() -> Iterator[int]:
    """A loopback port held bound but never listening: connections are refused, and no other process can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def down_client(signing_key_file: str, closed_port: int, clock: FakeClock) -> Any:
    """A test client of an app whose Redis cannot be reached (same signing key and clock as ``app``)."""
    return create_app(unreachable_store_settings(signing_key_file, closed_port), clock=clock).test_client()


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every ES256 signature check made from now on, by its signing input (the real check still runs):
    how the verify-cache tests tell a cache hit from a full check."""
    from jwt.algorithms import ECAlgorithm

    calls: list[bytes] = []
    real = ECAlgorithm.verify

    def counting(self: ECAlgorithm, msg: bytes, key: Any, sig: bytes) -> bool:
        calls.append(msg)
        return real(self, msg, key, sig)

    monkeypatch.setattr(ECAlgorithm, "verify", counting)
    return calls


def require_binary(name: str, package: str, also: tuple[str, ...] = ()) -> str:
    """The path of an end-to-end test's binary (on PATH, or one of ``also``). Missing: the test is skipped,
    or fails when TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1 (as `.ci/run` sets it)."""
    found = shutil.which(name) or next((path for path in also if os.access(path, os.X_OK)), None)
    if found is None:
        missing(f"{name} is not installed (Debian/Ubuntu: apt-get install {package})")
    assert found is not None
    return found


def missing(reason: str) -> None:
    """Skip for ``reason``, or fail when TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1."""
    if os.environ.get("TOKEN_SERVICE_REQUIRE_E2E_BINARIES") == "1":
        pytest.fail(reason + "; TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1 requires it")
    pytest.skip(reason)
