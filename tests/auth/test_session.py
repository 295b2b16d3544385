"""The ``session`` adapter against a real "who am I" server on loopback (no HTTP mocks), on both backends.

The upstream records the headers it received and counts its calls; its mode decides the answer.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import ORIGIN, Actions, FakeClock, assert_error, bearer, token_parts, with_settings
from token_service import ConfigError, Settings, create_app
from token_service.auth.base import pseudonymous_subject
from token_service.auth.session import SessionAdapter

COOKIE = "product_session=s3cr3t-session-value-0123456789; theme=dark"
TIMEOUT = 0.3
ALLOWED_UPSTREAM_HEADERS = {"host", "accept", "accept-encoding", "connection", "user-agent", "cookie", "authorization", "x-request-id"}


class WhoAmI:
    """The product's "who am I" endpoint: answers by ``mode``, records each request's headers."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.body: Any = {"sub": "user-1", "name": "Ada"}
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()  # wakes "slow" handlers at teardown
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with upstream._lock:
                    upstream.requests.append({name.lower(): value for name, value in self.headers.items()})
                upstream.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet test output

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a "slow" answer written after the client gave up: a broken pipe, expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/me"

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        mode = self.mode
        if mode == "slow":
            self.release.wait(TIMEOUT * 10)
            mode = "ok"
        if mode == "ok":
            self._send(handler, 200, json.dumps(self.body).encode())
        elif mode in ("401", "403", "404", "418", "500", "502"):
            self._send(handler, int(mode), b'{"error": "no"}')
        elif mode == "redirect":
            self._send(handler, 302, b"", {"Location": "/login"})
        elif mode == "garbage":
            self._send(handler, 200, b"<html>welcome back</html>", {"Content-Type": "text/html"})
        elif mode == "no-subject":
            self._send(handler, 200, b'{"name": "Ada"}')
        elif mode == "array":
            self._send(handler, 200, b'["user-1"]')
        elif mode == "no-content":
            self._send(handler, 204, b"")
        elif mode == "nested":
            self._send(handler, 200, b"[" * 50_000)
        elif mode == "huge":
            self._send(handler, 200, json.dumps({"sub": "user-1", "pad": "x" * 70_000}).encode())
        else:  # pragma: no cover
            raise AssertionError(mode)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(name, value)
        if status != 204:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if body:
            handler.wfile.write(body)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def upstream() -> Iterator[WhoAmI]:
    server = WhoAmI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def session_settings(settings: Settings, upstream: WhoAmI) -> Settings:
    return with_settings(
        settings, auth_adapters=("api_key", "session"), session_url=upstream.url, session_personas=("support-bot",),
        session_timeout=TIMEOUT, cors_origins=(ORIGIN,),
    )


ClientFactory = Callable[..., Any]


@pytest.fixture
def make_client(session_settings: Settings, clock: FakeClock) -> ClientFactory:
    """A test client of an app built from the session settings with ``changes``.

    Without a cookie jar: Werkzeug's jar would replace the Cookie header the tests send as a browser does.
    """

    def build(**changes: Any) -> Any:
        return create_app(with_settings(session_settings, **changes), clock=clock).test_client(use_cookies=False)

    return build


@pytest.fixture
def session_client(make_client: ClientFactory) -> Any:
    return make_client()


def mint(client: Any, cookie: str | None = COOKIE, headers: dict[str, str] | None = None, **body: Any) -> Any:
    """POST /v1/tokens from the product's page: its session cookie and its Origin."""
    body.setdefault("personaId", "support-bot")
    all_headers = {"Origin": ORIGIN, **({"Cookie": cookie} if cookie is not None else {}), **(headers or {})}
    return client.post("/v1/tokens", json=body, headers=all_headers)


def session_adapter(app: Any) -> SessionAdapter:
    adapters = [a for a in app.extensions["token_service"].chain.adapters if a.name == "session"]
    assert len(adapters) == 1
    adapter: SessionAdapter = adapters[0]
    return adapter


def assert_nothing_minted(response: Any) -> None:
    body = response.get_json()
    assert "token" not in body
    text = response.get_data(as_text=True) + "".join(f"{k}: {v}" for k, v in response.headers.items())
    assert "s3cr3t" not in text


# -- minting with a session ----------------------------------------------------------------------


def test_a_session_cookie_mints_a_chat_token(session_client, upstream):
    response = mint(session_client)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["personaId"] == "support-bot" and body["scope"] == "chat:read chat:write"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    _, claims = token_parts(body["token"])
    assert claims["sub"] == "user-1"
    assert claims["client_id"] == "session"
    assert "name" not in claims  # nothing of the upstream's answer but the subject
    verified = session_client.get("/v1/verify", headers=bearer(body["token"]))
    assert verified.status_code == 200 and verified.get_json()["sub"] == "user-1"
    assert upstream.calls == 1


def test_a_server_side_call_without_origin_is_accepted(session_client):
    response = session_client.post("/v1/tokens", json={"personaId": "support-bot"}, headers={"Cookie": COOKIE})
    assert response.status_code == 200, response.get_json()


def test_sub_in_the_body_is_refused(session_client):
    assert_nothing_minted(response := mint(session_client, sub="someone-else"))
    assert_error(response, 400, "invalid_request")


def test_a_persona_the_session_may_not_use_is_refused(session_client):
    assert_nothing_minted(response := mint(session_client, personaId="billing-bot"))
    assert_error(response, 403, "access_denied")


def test_scopes_default_to_the_default_scopes_and_session_scopes_narrow_them(make_client):
    narrow = make_client(session_scopes=("chat:read",))
    assert_error(mint(narrow), 403, "access_denied")  # the default request asks for chat:write too
    response = mint(narrow, scopes=["chat:read"])
    assert response.status_code == 200 and response.get_json()["scope"] == "chat:read"


def test_the_custom_client_id_goes_into_the_token(make_client):
    response = mint(make_client(session_client_id="product-web"))
    assert token_parts(response.get_json()["token"])[1]["client_id"] == "product-web"


def test_without_session_headers_the_adapter_does_not_decide(session_client, upstream):
    response = mint(session_client, cookie=None)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert upstream.calls == 0


def test_an_api_key_still_works_beside_the_session_adapter(session_client, upstream):
    actions = Actions(session_client)
    key = actions.create_key("secret")
    actions.mint(key["key"], headers={"Cookie": COOKIE})  # api_key comes first and decides
    assert upstream.calls == 0


# -- what the upstream receives --------------------------------------------------------------------


def test_the_upstream_receives_the_cookie_and_none_of_the_other_headers(session_client, upstream):
    response = mint(session_client, headers={
        "Authorization": "Bearer opaque-product-token", "X-Custom": "private", "X-Forwarded-For": "203.0.113.9",
        "User-Agent": "Mozilla/5.0 test", "Accept-Language": "fr", "X-Request-Id": "req-123",
    })
    assert response.status_code == 200, response.get_json()
    [received] = upstream.requests
    assert set(received) <= ALLOWED_UPSTREAM_HEADERS - {"authorization"}, received
    assert received["cookie"] == COOKIE
    assert received["accept"] == "application/json"
    assert received["x-request-id"] == "req-123"
    assert "Mozilla" not in received["user-agent"]


def test_an_insane_request_id_is_replaced_by_the_generated_one(session_client, upstream):
    response = mint(session_client, headers={"X-Request-Id": "has spaces and\ttabs"})
    sent = upstream.requests[0]["x-request-id"]
    assert sent == response.headers["X-Request-Id"] and "\t" not in sent


def test_authorization_is_forwarded_when_configured(make_client, upstream):
    client = make_client(session_forward=("authorization",))
    response = mint(client, headers={"Authorization": "Bearer opaque-product-token"})
    assert response.status_code == 200, response.get_json()
    [received] = upstream.requests
    assert received["authorization"] == "Bearer opaque-product-token"
    assert "cookie" not in received  # cookie is not in session_forward
    assert_error(mint(client), 401, "unauthorized")  # a cookie alone is not this adapter's credential now
    assert upstream.calls == 1


@pytest.mark.parametrize("adapters", [("api_key", "session"), ("session", "api_key")])
def test_the_service_own_keys_are_never_forwarded_whatever_the_chain_order(make_client, upstream, adapters):
    client = make_client(session_forward=("cookie", "authorization"), auth_adapters=adapters)
    actions = Actions(client)
    key = actions.create_key("secret")  # with the bootstrap admin key, which has no prefix
    actions.mint(key["key"])
    assert_error(actions.mint("sk_not_a_real_key", expect=401), 401, "unauthorized")
    assert_error(mint(client, cookie=None, headers={"Authorization": "Token " + key["key"]}), 401, "unauthorized")
    assert upstream.calls == 0


# -- fields of the answer ----------------------------------------------------------------------------


def test_subject_personas_and_scopes_come_from_the_configured_fields(make_client, upstream):
    upstream.body = {"user": {"id": "u-9", "personas": ["billing-bot", "*", "bad persona"]}, "grants": "chat:read"}
    client = make_client(
        session_subject_field="user.id", session_personas_field="user.personas", session_scopes_field="grants", session_cache_seconds=60,
    )
    response = mint(client, personaId="billing-bot", scopes=["chat:read"])
    assert response.status_code == 200, response.get_json()
    assert token_parts(response.get_json()["token"])[1]["sub"] == "u-9"
    assert_error(mint(client, personaId="support-bot", scopes=["chat:read"]), 403, "access_denied")  # the field replaces the setting
    assert_error(mint(client, personaId="billing-bot"), 403, "access_denied")  # chat:write is not granted
    assert_error(mint(client, personaId="other-bot", scopes=["chat:read"]), 403, "access_denied")  # "*" from upstream: no


def test_a_literal_dotted_member_wins_over_the_path(make_client, upstream):
    upstream.body = {"user.id": "literal", "user": {"id": "nested"}}
    response = mint(make_client(session_subject_field="user.id"))
    assert token_parts(response.get_json()["token"])[1]["sub"] == "literal"


def test_an_absent_field_falls_back_to_the_setting_and_an_empty_one_grants_nothing(make_client, upstream):
    client = make_client(session_personas_field="personas", session_scopes_field="scopes", session_scopes=("chat:read",))
    response = mint(client, scopes=["chat:read"])  # neither field in the answer: the settings apply
    assert response.status_code == 200, response.get_json()
    upstream.body = {"sub": "user-1", "personas": None, "scopes": None}  # null is absent
    assert mint(client, scopes=["chat:read"]).status_code == 200
    upstream.body = {"sub": "user-1", "personas": [], "scopes": ["chat:read"]}
    assert_error(mint(client, scopes=["chat:read"]), 403, "access_denied")
    upstream.body = {"sub": "user-1", "personas": ["support-bot"], "scopes": []}
    assert_error(mint(client, scopes=["chat:read"]), 403, "access_denied")


def test_a_personas_field_of_the_wrong_type_is_a_broken_answer(make_client, upstream):
    upstream.body = {"sub": "user-1", "personas": "support-bot"}
    assert_nothing_minted(response := mint(make_client(session_personas_field="personas")))
    assert_error(response, 503, "temporarily_unavailable")


def test_the_pepper_makes_the_subject_pseudonymous(make_client, upstream):
    pepper = b"a-pepper-of-at-least-32-characters-long"
    upstream.body = {"sub": "Ada Lovelace <ada@example.com>"}
    response = mint(make_client(subject_pepper=pepper))
    assert response.status_code == 200, response.get_json()
    sub = token_parts(response.get_json()["token"])[1]["sub"]
    assert sub == pseudonymous_subject(pepper, upstream.url, "Ada Lovelace <ada@example.com>")
    assert sub.startswith("u_") and "@" not in sub and "example.com" not in sub  # no personal data left


def test_without_pepper_a_subject_that_is_not_a_sub_is_refused(session_client, upstream):
    upstream.body = {"sub": "Ada Lovelace"}
    assert_nothing_minted(response := mint(session_client))
    body = assert_error(response, 401, "unauthorized")
    assert "PEPPER" in body["error_description"]


# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "status", "error"), [
    ("401", 401, "unauthorized"),
    ("403", 401, "unauthorized"),
    ("404", 401, "unauthorized"),
    ("418", 401, "unauthorized"),
    ("redirect", 401, "unauthorized"),
    ("500", 503, "temporarily_unavailable"),
    ("502", 503, "temporarily_unavailable"),
    ("slow", 503, "temporarily_unavailable"),
    ("garbage", 503, "temporarily_unavailable"),
    ("no-subject", 503, "temporarily_unavailable"),
    ("array", 503, "temporarily_unavailable"),
    ("no-content", 503, "temporarily_unavailable"),
    ("huge", 503, "temporarily_unavailable"),
    ("nested", 503, "temporarily_unavailable"),
])
def test_each_upstream_failure_has_its_status_and_mints_nothing(session_client, upstream, mode, status, error):
    upstream.mode = mode
    response = mint(session_client)
    assert_nothing_minted(response)
    assert_error(response, status, error)
    if status == 401:
        assert "WWW-Authenticate" in response.headers
    else:
        assert response.headers["Retry-After"] == "1"
    assert upstream.calls == 1  # a redirect is an answer, not a hop


def test_a_subject_of_the_wrong_type_is_a_broken_answer(session_client, upstream):
    upstream.body = {"sub": 42}
    assert_error(mint(session_client), 503, "temporarily_unavailable")
    upstream.body = {"sub": ""}
    assert_error(mint(session_client), 503, "temporarily_unavailable")


def test_a_session_service_that_is_down_is_503(make_client, closed_port):
    client = make_client(session_url=f"http://127.0.0.1:{closed_port}/api/me")
    assert_nothing_minted(response := mint(client))
    assert_error(response, 503, "temporarily_unavailable")


def test_the_credential_never_reaches_the_logs(session_client, upstream, caplog):
    service_log = logging.getLogger("token_service")  # it does not propagate: listen to it directly
    service_log.addHandler(caplog.handler)
    try:
        for mode in ("ok", "401", "500", "garbage", "slow"):
            upstream.mode = mode
            mint(session_client)
    finally:
        service_log.removeHandler(caplog.handler)
    assert any("session upstream" in record.getMessage() for record in caplog.records)
    assert "s3cr3t" not in caplog.text


# -- cross-site requests -----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example.net"},
    {"Origin": "null"},
    {"Origin": ORIGIN + ".evil.example.net"},
])
def test_a_foreign_origin_is_refused_before_the_upstream_is_asked(session_client, upstream, headers):
    assert_nothing_minted(response := mint(session_client, headers=headers))
    assert_error(response, 401, "unauthorized")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert upstream.calls == 0


def test_a_cross_site_request_without_origin_is_refused(session_client, upstream):
    response = session_client.post("/v1/tokens", json={"personaId": "support-bot"},
                                    headers={"Cookie": COOKIE, "Sec-Fetch-Site": "cross-site"})
    assert_error(response, 401, "unauthorized")
    assert upstream.calls == 0


# -- the cache -------------------------------------------------------------------------------------


def test_answers_are_cached_for_the_configured_lifetime(make_client, upstream, clock):
    client = make_client(session_cache_seconds=30)
    assert mint(client).status_code == 200
    clock.advance(29)
    assert mint(client).status_code == 200
    assert upstream.calls == 1
    clock.advance(1)
    assert mint(client).status_code == 200
    assert upstream.calls == 2


def test_another_session_is_not_served_from_the_cache(make_client, upstream):
    client = make_client(session_cache_seconds=30)
    mint(client)
    upstream.body = {"sub": "user-2"}
    response = mint(client, cookie="product_session=another-one")
    assert token_parts(response.get_json()["token"])[1]["sub"] == "user-2"
    assert upstream.calls == 2


@pytest.mark.parametrize("mode", ["401", "500", "garbage"])
def test_refusals_and_failures_are_not_cached(make_client, upstream, mode):
    client = make_client(session_cache_seconds=30)
    upstream.mode = mode
    first = mint(client)
    assert first.status_code in (401, 503)
    assert mint(client).status_code == first.status_code
    assert upstream.calls == 2
    upstream.mode = "ok"
    assert mint(client).status_code == 200
    assert upstream.calls == 3


def test_a_logout_is_seen_once_the_cached_answer_expires(make_client, upstream, clock):
    client = make_client(session_cache_seconds=30)
    assert mint(client).status_code == 200
    upstream.mode = "401"  # the user logged out of the product
    assert mint(client).status_code == 200  # within the lifetime: the documented lag
    clock.advance(30)
    assert_error(mint(client), 401, "unauthorized")


def test_a_cached_session_is_still_refused_from_a_foreign_origin(make_client, upstream):
    client = make_client(session_cache_seconds=30)
    assert mint(client).status_code == 200
    assert_error(mint(client, headers={"Origin": "https://evil.example.net"}), 401, "unauthorized")


def test_the_cache_is_keyed_by_digests_never_by_the_cookie(make_client, upstream):
    client = make_client(session_cache_seconds=30)
    mint(client)
    mint(client, cookie="product_session=another-one")
    cache = session_adapter(client.application).cache
    assert cache is not None
    keys = cache.keys()
    assert len(keys) == 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in keys)
    assert all("s3cr3t" not in key and COOKIE not in key for key in keys)


def test_the_cache_is_bounded_and_drops_the_oldest(clock):
    from token_service.auth.base import Principal
    from token_service.auth.session import SessionCache

    cache = SessionCache(30, clock, max_entries=3)
    principal = Principal(kind="user", client_id="session", subject="u")
    for key in "abcd":
        cache.put(key, principal)
    assert cache.keys() == ("b", "c", "d")
    assert cache.get("a") is None and cache.get("d") == principal


def test_without_a_cache_every_mint_asks_the_upstream(session_client, upstream):
    assert session_adapter(session_client.application).cache is None
    mint(session_client)
    mint(session_client)
    assert upstream.calls == 2


# -- configuration ---------------------------------------------------------------------------------


def test_the_adapter_needs_a_session_url(signing_key_file):
    with pytest.raises(ConfigError, match="SESSION_URL"):
        create_app(Settings(signing_key_file=signing_key_file, auth_adapters=("session",), log_level="WARNING"))


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/admin/api-keys"), ("POST", "/v1/introspect")])
def test_the_upstream_is_not_asked_where_a_user_can_never_be_allowed(session_client, upstream, method, path):
    """An anonymous cookie on admin or introspection endpoints costs no upstream call: 401, nobody decided."""
    response = session_client.open(path, method=method, headers={"Cookie": COOKIE}, data={"token": "x"} if method == "POST" else None)
    assert_error(response, 401, "unauthorized")
    assert upstream.requests == []
