"""A real nginx, configured by examples/nginx/nginx.conf (only its ports substituted), in front of two
gunicorn instances on one real Redis and a tiny application that echoes the X-Auth-* headers it gets.

Skipped when nginx is not installed, unless TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1 (as in .ci/run)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, RedisServer, free_port, require_binary
from tests.e2e.servers import ROOT, Instance

EXAMPLE = ROOT / "examples" / "nginx" / "nginx.conf"


def _nginx_binary() -> str:
    return require_binary("nginx", "nginx-light", also=("/usr/sbin/nginx",))


class _Echo(BaseHTTPRequestHandler):
    """The protected application: answers 200 with the path and the gateway's headers as JSON."""

    def _answer(self) -> None:
        seen = {k: v for k, v in self.headers.items() if k.lower().startswith("x-auth-") or k.lower() == "x-request-id"}
        body = json.dumps({"path": self.path, "headers": seen}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Response:
    status: int
    headers: Any  # http.client.HTTPMessage: get_all() sees repeated headers
    body: Any


@dataclass
class Gateway:
    redis: RedisServer
    a: Instance
    b: Instance
    port: int
    error_log: Path

    def request(self, path: str, token: str | None = None, headers: dict[str, str] | None = None,
                method: str = "GET") -> Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test server
                return Response(resp.status, resp.headers, _json(resp.read()))
        except urllib.error.HTTPError as err:
            try:
                return Response(err.code, err.headers, _json(err.read()))
            finally:
                err.close()

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, answer = self.a.request(method, path, body, token=ADMIN_KEY)
        return status, answer

    def key(self) -> str:
        status, body = self.admin("POST", "/v1/admin/api-keys", {
            "type": "secret", "name": "gateway-test", "personas": ["support-bot", "sales-bot"],
            "scopes": ["chat:read", "chat:write"],
        })
        assert status == 201, body
        return str(body["key"])

    def mint(self, key: str, persona: str = "support-bot", sub: str = "user-42", scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"personaId": persona, "sub": sub}
        if scopes is not None:
            body["scopes"] = scopes
        status, _, answer = self.a.request("POST", "/v1/tokens", body, token=key)
        assert status == 200, answer
        return str(answer["token"])


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def render(text: str, gateway: int, instances: tuple[int, int], app: int) -> str:
    """The example with its placeholder ports replaced; fails if the example no longer has them."""
    replacements = {
        "listen 127.0.0.1:8080;": f"listen 127.0.0.1:{gateway};",
        "server 127.0.0.1:8001 ": f"server 127.0.0.1:{instances[0]} ",
        "server 127.0.0.1:8002 ": f"server 127.0.0.1:{instances[1]} ",
        "server 127.0.0.1:9000;": f"server 127.0.0.1:{app};",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{EXAMPLE} should contain {old!r} exactly once"
        text = text.replace(old, new)
    return text


def _start_nginx(binary: str, prefix: Path, conf: Path, port: int) -> subprocess.Popen[bytes]:
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    process = subprocess.Popen(
        [binary, "-p", f"{prefix}/", "-e", str(prefix / "logs" / "error.log"), "-c", str(conf), "-g", directives],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(0.1)
    _stop(process)
    log = prefix / "logs" / "error.log"
    raise RuntimeError("nginx did not start: " + (log.read_text() if log.exists() else "no error log"))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # SIGTERM: fast shutdown of master and workers
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, signing_key_file: str) -> Iterator[Gateway]:
    binary = _nginx_binary()
    # A Redis of its own: the Redis test stops it, which the session's shared one must not suffer.
    redis_server = RedisServer(tmp_path_factory.mktemp("nginx-redis"))
    redis_server.start()
    env = {
        "TOKEN_SERVICE_REDIS_URL": redis_server.url,
        "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
    }
    a, b = Instance(env), Instance(env)
    app = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    app.daemon_threads = True
    app_thread = threading.Thread(target=app.serve_forever, daemon=True)
    app_thread.start()
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(render(EXAMPLE.read_text(), port, (a.port, b.port), app.server_address[1]))
    nginx: subprocess.Popen[bytes] | None = None
    try:
        a.start()
        b.start()
        nginx = _start_nginx(binary, prefix, conf, port)
        yield Gateway(redis_server, a, b, port, prefix / "logs" / "error.log")
    finally:
        if nginx is not None:
            _stop(nginx)
        a.close()
        b.close()
        app.shutdown()
        app.server_close()
        app_thread.join(timeout=10)
        redis_server.stop()


def _challenge(response: Response) -> str:
    values = response.headers.get_all("WWW-Authenticate") or []
    assert len(values) == 1, values
    return str(values[0])


def test_a_good_token_reaches_the_application_with_who_it_is(gateway: Gateway) -> None:
    token = gateway.mint(gateway.key())
    # the client's own X-Auth-* headers are replaced by the gateway's
    got = gateway.request("/chat/support-bot/send", token, {"X-Request-Id": "req-nginx-1", "X-Auth-Subject": "admin"})
    assert got.status == 200, got.body
    seen = got.body["headers"]
    assert got.body["path"] == "/chat/support-bot/send"
    assert seen["X-Auth-Subject"] == "user-42"
    assert seen["X-Auth-Persona"] == "support-bot"
    assert set(seen["X-Auth-Scope"].split()) == {"chat:read", "chat:write"}
    assert int(seen["X-Auth-Expires"]) > time.time()
    assert seen["X-Auth-Token-Id"]
    assert seen["X-Request-Id"] == "req-nginx-1"
    # the persona taken from the path, and a POST (its method does not reach /v1/verify)
    assert gateway.request("/personas/support-bot/messages", token, method="POST").status == 200
    assert gateway.request("/personas/sales-bot/messages", token).status == 403
    # a public route: no token needed, and a client cannot pose as someone
    public = gateway.request("/healthz", headers={"X-Auth-Subject": "admin", "X-Auth-Persona": "support-bot"})
    assert public.status == 200
    assert "X-Auth-Subject" not in public.body["headers"] and "X-Auth-Persona" not in public.body["headers"]


def test_no_token_is_401_with_the_challenge(gateway: Gateway) -> None:
    got = gateway.request("/chat/support-bot/send")
    assert got.status == 401
    challenge = _challenge(got)
    assert challenge.startswith("Bearer realm=") and "error=" not in challenge
    assert got.body == {"active": False, "error": "unauthorized"}
    assert got.headers.get_content_type() == "application/json"


def test_a_bad_token_is_401_invalid_token(gateway: Gateway) -> None:
    got = gateway.request("/chat/support-bot/send", "not-a-jwt")
    assert got.status == 401
    assert 'error="invalid_token"' in _challenge(got)
    assert got.body == {"active": False, "error": "invalid_token"}


def test_a_revoked_token_is_401(gateway: Gateway) -> None:
    token = gateway.mint(gateway.key())
    got = gateway.request("/chat/support-bot/send", token)
    assert got.status == 200
    jti = got.body["headers"]["X-Auth-Token-Id"]
    status, body = gateway.admin("POST", "/v1/admin/revocations", {"jti": jti, "reason": "nginx e2e"})
    assert status == 201, body
    # whichever instance nginx picks, the revocation holds
    for _ in range(4):
        got = gateway.request("/chat/support-bot/send", token)
        assert got.status == 401
        assert 'error="invalid_token"' in _challenge(got)


def test_a_token_for_another_persona_is_403_insufficient_scope(gateway: Gateway) -> None:
    token = gateway.mint(gateway.key(), persona="sales-bot")
    got = gateway.request("/chat/support-bot/send", token)
    assert got.status == 403
    assert 'error="insufficient_scope"' in _challenge(got)
    assert got.body == {"active": False, "error": "insufficient_scope"}


def test_a_token_without_the_route_scope_is_403(gateway: Gateway) -> None:
    token = gateway.mint(gateway.key(), scopes=["chat:read"])
    got = gateway.request("/chat/support-bot/send", token)  # needs chat:write
    assert got.status == 403
    challenge = _challenge(got)
    assert 'error="insufficient_scope"' in challenge and 'scope="chat:write"' in challenge
    assert gateway.request("/history/support-bot/today", token).status == 200  # needs chat:read


def test_one_instance_stopping_does_not_fail_requests(gateway: Gateway) -> None:
    token = gateway.mint(gateway.key())
    try:
        gateway.b.stop()
        for _ in range(10):
            got = gateway.request("/chat/support-bot/send", token)
            assert got.status == 200, got.body
        gateway.a.stop()
        # no instance answers at all: 503 for the client (nginx's 502 mapped), never 500
        got = gateway.request("/chat/support-bot/send", token)
        assert got.status == 503, got.body
    finally:
        for instance in (gateway.a, gateway.b):
            if instance.process is None:
                instance.start()
    # nginx leaves a failed instance out for fail_timeout (5 s in the example), then tries it again
    _eventually_200(gateway, token, within=15)


def _eventually_200(gateway: Gateway, token: str, within: float) -> None:
    deadline = time.monotonic() + within
    while gateway.request("/chat/support-bot/send", token).status != 200:
        assert time.monotonic() < deadline, "the gateway did not recover"
        time.sleep(0.2)


def test_redis_down_is_503_for_the_client_not_500(gateway: Gateway) -> None:
    token = gateway.mint(gateway.key())
    assert gateway.request("/chat/support-bot/send", token).status == 200
    try:
        gateway.redis.stop()
        statuses = [gateway.request("/chat/support-bot/send", token).status for _ in range(4)]
        assert statuses == [503] * 4
        got = gateway.request("/chat/support-bot/send", token)
        assert got.body == {"error": "temporarily_unavailable"}
    finally:
        gateway.redis.start()
    # back: the service reconnects on its own (the token's revocation state is checkable again)
    _eventually_200(gateway, token, within=10)
