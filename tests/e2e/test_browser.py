"""The browser example (examples/browser/) in a real Chromium, driven by Playwright: the chat page,
served through nginx (examples/nginx/nginx.conf with its `location /` proxying to the page server, so
page and gateway share one origin), gets a token from the token service (another origin, CORS) with a
public key, calls the protected chat route, renews the token, and logs out with /v1/revoke. The
provider variant (?provider=1) gets the user's token from a loopback identity provider (the one of
tests/auth/test_oidc.py) and mints with it through the service's oidc adapter instead.

Skipped when chromium or playwright (or nginx) is missing, unless TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1
(as in .ci/run). Never runs `playwright install`: it uses the system Chromium (apt-get install chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.auth.test_oidc import AUDIENCE, IdentityProvider
from tests.conftest import ADMIN_KEY, RedisServer, free_port, missing
from tests.e2e.servers import ROOT, Instance
from tests.e2e.test_nginx import EXAMPLE, _nginx_binary, _start_nginx, _stop, render

BROWSER = ROOT / "examples" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 10_000  # every wait on the page is bounded
NGINX_PAGE_LOCATION = "        location / {\n            return 404;\n        }\n"
IDP_USER = "browser-user"  # the identity provider's logged-in user


def _require(what: str, found: bool) -> None:
    if not found:
        missing(f"{what} is not installed")


def _chromium() -> str:
    found = shutil.which("chromium")
    _require("chromium (Debian/Ubuntu: apt-get install chromium)", found is not None)
    assert found is not None
    return found


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("playwright (pip install -r requirements-dev.txt)", False)
    return sync_playwright


def _serve(args: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    """A stdlib example server as a subprocess, waited for until ``url`` answers (bounded)."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback test server
                if resp.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(0.05)
    _stop(process)
    raise RuntimeError(f"{args[0]} did not start: " + log.read_text(errors="replace"))


@dataclass
class Setup:
    service: Instance
    gateway: str  # the page's origin: nginx, with the page server behind `location /`
    other: str  # the same page from another origin: the second page server, reached directly
    public_key: str
    browser: Any
    idp: IdentityProvider

    def service_requests(self, method: str, path: str) -> int:
        """How many ``method path`` requests the token service logged (its access log: JSON lines on Redis)."""
        count = 0
        for line in self.service.output().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                count += f" {method} {path} " in line  # the text format
                continue
            count += isinstance(record, dict) and record.get("method") == method and record.get("route") == path
        return count


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, signing_key_file: str) -> Iterator[Setup]:
    chromium = _chromium()
    sync_playwright = _playwright()
    nginx_binary = _nginx_binary()
    tmp = tmp_path_factory.mktemp("browser")
    redis_server = RedisServer(tmp_path_factory.mktemp("browser-redis"))
    gateway_port, page_port, other_port, app_port = free_port(), free_port(), free_port(), free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    other = f"http://127.0.0.1:{other_port}"
    # The identity provider: publishes its keys and, at /token, a signed token for IDP_USER (CORS: the page).
    idp = IdentityProvider(pool="browser")
    idp.add_key("RS256")
    idp.login_origin, idp.login_sub = gateway, IDP_USER
    service = Instance({
        "TOKEN_SERVICE_REDIS_URL": redis_server.url,
        "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_LOG_LEVEL": "INFO",  # the access log shows which requests reached the service
        "TOKEN_SERVICE_AUTH_ADAPTERS": "api_key,oidc",
        "TOKEN_SERVICE_OIDC_ISSUER": idp.issuer,
        "TOKEN_SERVICE_OIDC_AUDIENCE": AUDIENCE,
        "TOKEN_SERVICE_OIDC_JWKS_URL": idp.jwks_url,
        "TOKEN_SERVICE_OIDC_PERSONAS": "support-bot",
        # the provider variant has no public key to name the page's origin: the service lists it
        "TOKEN_SERVICE_CORS_ORIGINS": gateway,
    })
    processes: list[subprocess.Popen[bytes]] = []
    nginx: subprocess.Popen[bytes] | None = None
    playwright = browser = None
    try:
        redis_server.start()
        service.start()
        status, _, body = service.request("POST", "/v1/admin/api-keys", {
            "type": "public", "name": "browser example", "personas": ["support-bot"],
            "scopes": ["chat:read", "chat:write"], "origins": [gateway],
        }, token=ADMIN_KEY)
        assert status == 201, body
        public_key = str(body["key"])
        assert public_key.startswith("pk_")
        page_args = [str(BROWSER / "serve.py"), "--service", service.base, "--key", public_key,
                     "--provider-token-url", f"http://127.0.0.1:{idp.port}/token"]
        processes.append(_serve([*page_args, "--port", str(page_port)], f"http://127.0.0.1:{page_port}/", tmp / "page.log"))
        processes.append(_serve([*page_args, "--port", str(other_port), "--gateway", gateway], f"{other}/", tmp / "other.log"))
        processes.append(_serve([str(BROWSER / "chat_upstream.py"), "--port", str(app_port)],
                                f"http://127.0.0.1:{app_port}/healthz", tmp / "app.log"))
        prefix = tmp / "nginx"
        (prefix / "logs").mkdir(parents=True)
        # One instance: both upstream lines of the example name it (nginx accepts the duplicate).
        text = render(EXAMPLE.read_text(), gateway_port, (service.port, service.port), app_port)
        assert text.count(NGINX_PAGE_LOCATION) == 1, "examples/nginx/nginx.conf no longer has `location / { return 404; }`"
        page_location = f"        location / {{\n            proxy_pass http://127.0.0.1:{page_port};\n        }}\n"
        text = text.replace(NGINX_PAGE_LOCATION, page_location)
        conf = prefix / "nginx.conf"
        conf.write_text(text)
        nginx = _start_nginx(nginx_binary, prefix, conf, gateway_port)
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=30_000)
        yield Setup(service, gateway, other, public_key, browser, idp)
    finally:
        try:
            if browser is not None:
                browser.close()
        finally:
            if playwright is not None:
                playwright.stop()
            if nginx is not None:
                _stop(nginx)
            for process in processes:
                _stop(process)
            service.close()
            redis_server.stop()
            idp.stop()


@dataclass
class Page:
    page: Any
    console: list[str]
    chat_tokens: list[str | None]  # the Authorization of every call to the chat route
    mint_credentials: list[str | None]  # the Authorization of every POST /v1/tokens


@pytest.fixture
def open_page(setup: Setup) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_(url: str) -> Page:
        context = setup.browser.new_context()
        contexts.append(context)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        seen = Page(page, [], [], [])
        page.on("console", lambda message: seen.console.append(message.text))
        page.on("request", lambda request: seen.chat_tokens.append(request.headers.get("authorization"))
                if "/chat/support-bot/" in request.url else None)
        page.on("request", lambda request: seen.mint_credentials.append(request.headers.get("authorization"))
                if request.url == f"{setup.service.base}/v1/tokens" and request.method == "POST" else None)
        response = page.goto(url, wait_until="load")
        assert response is not None and response.status == 200
        csp = response.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp
        assert f"connect-src 'self' {setup.service.base}" in csp
        assert "frame-ancestors 'self'" in csp
        return seen

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()


def _send(page: Any, text: str) -> None:
    page.fill("#message", text)
    page.click("#send")


def _no_token_stored(page: Any) -> None:
    """The token lives in memory only: nothing in localStorage, sessionStorage or cookies."""
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.context.cookies() == []


def _gateway_status(setup: Setup, token: str) -> int:
    request = urllib.request.Request(f"{setup.gateway}/chat/support-bot/messages", data=b"{}", method="POST",
                                     headers={"Authorization": token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback test server
            return int(resp.status)
    except urllib.error.HTTPError as err:
        err.close()
        return int(err.code)


def test_the_allowed_origin_gets_a_token_and_a_chat_reply(setup: Setup, open_page: Any) -> None:
    seen = open_page(f"{setup.gateway}/")
    page = seen.page
    page.wait_for_selector("#status[data-state=ready]")
    assert page.text_content("#mode") == "public key"
    assert seen.mint_credentials == [f"Bearer {setup.public_key}"]
    _send(page, "hello from the browser")
    page.wait_for_selector("#messages li.bot")
    assert page.text_content("#messages li.bot") == "Bot: support-bot received: hello from the browser"
    assert page.is_hidden("#error")
    assert len(seen.chat_tokens) == 1 and (seen.chat_tokens[0] or "").startswith("Bearer ey")
    _no_token_stored(page)


def test_the_token_is_renewed_before_it_expires(setup: Setup, open_page: Any) -> None:
    # A 3-second token: the page renews it after 2.4 s (80%), and the chat keeps working with the new one.
    seen = open_page(f"{setup.gateway}/?ttl=3")
    page = seen.page
    page.wait_for_selector("#status[data-state=ready]")
    assert page.text_content("#expires-in") == "3"
    _send(page, "first")
    page.wait_for_selector("#messages li.bot >> nth=0")
    # (the page's CSP forbids eval, so no wait_for_function: poll the text, bounded)
    deadline = time.monotonic() + WAIT_MS / 1000
    while int(page.text_content("#renewals") or 0) < 2:
        assert time.monotonic() < deadline, "the token was not renewed"
        page.wait_for_timeout(100)
    _send(page, "second")
    page.wait_for_selector("#messages li.bot >> nth=1")
    assert page.text_content("#messages li.bot >> nth=1") == "Bot: support-bot received: second"
    assert page.is_hidden("#error")
    first, second = seen.chat_tokens
    assert first != second  # the second call carried a renewed token
    _no_token_stored(page)


def test_the_sandboxed_iframe_variant_works(setup: Setup, open_page: Any) -> None:
    seen = open_page(f"{setup.gateway}/iframe.html")
    assert seen.page.get_attribute("iframe#chat", "sandbox") == "allow-scripts allow-same-origin allow-forms"
    frame = seen.page.frame_locator("iframe#chat")
    frame.locator("#status[data-state=ready]").wait_for()
    frame.locator("#message").fill("from the iframe")
    frame.locator("#send").click()
    assert frame.locator("#messages li.bot").text_content() == "Bot: support-bot received: from the iframe"


def test_another_origin_with_the_same_public_key_is_blocked_by_cors(setup: Setup, open_page: Any) -> None:
    posts_before = setup.service_requests("POST", "/v1/tokens")
    preflights_before = setup.service_requests("OPTIONS", "/v1/tokens")
    seen = open_page(f"{setup.other}/")
    page = seen.page
    page.wait_for_selector("#status[data-state=failed]")
    error = page.text_content("#error") or ""
    assert error.startswith("Could not get a token: ") and "Failed to fetch" in error, error
    assert page.is_hidden("#token-info")
    # The browser, not CSP, refused it: the preflight reached the service, got no CORS headers, and the
    # POST carrying the public key was never sent.
    assert any("blocked by CORS policy" in message for message in seen.console), seen.console
    deadline = time.monotonic() + 5
    while setup.service_requests("OPTIONS", "/v1/tokens") == preflights_before and time.monotonic() < deadline:
        time.sleep(0.05)  # the access log line may trail the browser's verdict by a moment
    assert setup.service_requests("OPTIONS", "/v1/tokens") == preflights_before + 1
    assert setup.service_requests("POST", "/v1/tokens") == posts_before
    # and no token reached the page: a chat call goes out without one
    _send(page, "anyone there?")
    page.wait_for_selector("#error:has-text('The chat could not be reached')")
    assert seen.chat_tokens == [None]
    _no_token_stored(page)


def test_logout_revokes_the_token_and_the_next_call_is_401(setup: Setup, open_page: Any) -> None:
    seen = open_page(f"{setup.gateway}/")
    page = seen.page
    page.wait_for_selector("#status[data-state=ready]")
    _send(page, "before logout")
    page.wait_for_selector("#messages li.bot")
    token = seen.chat_tokens[0]
    assert token is not None and _gateway_status(setup, token) == 200
    revokes_before = setup.service_requests("POST", "/v1/revoke")
    with page.expect_response(lambda response: response.url.endswith("/v1/revoke") and response.request.method == "POST") as revoke:
        page.click("#logout")
    assert revoke.value.status == 200
    page.wait_for_selector("#status[data-state=logged-out]")
    assert page.text_content("#status") == "Logged out."
    _send(page, "after logout")
    page.wait_for_selector("#error:has-text('HTTP 401')")
    assert (page.text_content("#error") or "").startswith("HTTP 401 unauthorized")
    assert page.locator("#messages li.bot").count() == 1
    # the service saw the revocation, and the revoked token is refused by the gateway from now on
    assert setup.service_requests("POST", "/v1/revoke") == revokes_before + 1
    assert _gateway_status(setup, token) == 401


def _claims(authorization: str | None) -> dict[str, Any]:
    """The claims of a ``Bearer <JWT>`` header, unverified (the test only reads them)."""
    assert authorization is not None and authorization.startswith("Bearer ")
    claims: dict[str, Any] = jwt.decode(authorization.removeprefix("Bearer "), options={"verify_signature": False})
    return claims


def test_the_provider_variant_mints_with_the_identity_provider_token(setup: Setup, open_page: Any) -> None:
    logins_before = setup.idp.requests["/token"]
    seen = open_page(f"{setup.gateway}/?provider=1")
    page = seen.page
    page.wait_for_selector("#status[data-state=ready]")
    assert page.text_content("#mode") == "identity provider"
    # The page got the user's token from the provider and minted with it, not with the public key.
    assert setup.idp.requests["/token"] == logins_before + 1
    assert len(seen.mint_credentials) == 1
    assert setup.public_key not in (seen.mint_credentials[0] or "")
    provider_claims = _claims(seen.mint_credentials[0])
    assert provider_claims["iss"] == setup.idp.issuer and provider_claims["sub"] == IDP_USER
    with page.expect_response(lambda response: "/chat/support-bot/" in response.url) as reply:
        _send(page, "hello as a provider user")
    page.wait_for_selector("#messages li.bot")
    assert page.text_content("#messages li.bot") == "Bot: support-bot received: hello as a provider user"
    assert page.is_hidden("#error")
    # The chat token is the provider user's: its sub, and the X-Auth-Subject nginx passed upstream.
    assert reply.value.json()["subject"] == IDP_USER
    chat_claims = _claims(seen.chat_tokens[0])
    assert chat_claims["sub"] == IDP_USER and chat_claims["client_id"] == "oidc"
    _no_token_stored(page)
