"""protect (WSGI middleware) and require_token (Flask views) in front of a tiny chat app: the contract's
401/403/503 answers with WWW-Authenticate, and the claims in the environ."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from flask import Flask, jsonify, request

from tests.verifier.conftest import AUDIENCE, ISSUER, Service
from tests.verifier.test_verifier import DownRevocations, NoRevocations
from token_service.verifier import CLAIMS_KEY, Verifier, protect, require_token
from token_service.verifier.sources import RevocationSource


def chat_app(verifier: Verifier) -> Flask:
    app = Flask("chat")

    @app.get("/chat")
    @require_token(verifier, persona_id="support-bot", scopes=("chat:read",))
    def read() -> Any:
        claims = request.environ[CLAIMS_KEY]
        return jsonify(sub=claims.sub, persona=claims.persona_id)

    @app.get("/open")
    def open_view() -> Any:
        return jsonify(ok=True)

    return app


def plain_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    claims = environ[CLAIMS_KEY]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [claims.sub.encode()]


def make_verifier(live: Service, source: RevocationSource | None = None) -> Verifier:
    return Verifier(ISSUER, AUDIENCE, live.jwks_url, revocations=source or NoRevocations())


def assert_refusal(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == error and body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    return dict(body)


@pytest.mark.parametrize("mode", ["decorator", "middleware"])
def test_the_chat_app_answers_as_the_contract(live: Service, mode: str) -> None:
    verifier = make_verifier(live)
    if mode == "decorator":
        client = chat_app(verifier).test_client()
    else:
        flask_app = chat_app(verifier)
        flask_app.wsgi_app = protect(plain_app, verifier, persona_id="support-bot", scopes=("chat:read",))  # type: ignore[method-assign,assignment]
        client = flask_app.test_client()
    ok = client.get("/chat", headers={"Authorization": f"Bearer {live.mint(sub='wsgi-user')}"})
    assert ok.status_code == 200
    assert (ok.get_json() or {"sub": ok.get_data(as_text=True)})["sub"] == "wsgi-user"

    missing = client.get("/chat")
    assert_refusal(missing, 401, "unauthorized")
    assert missing.headers["WWW-Authenticate"] == f'Bearer realm="{ISSUER}"'

    bad = client.get("/chat", headers={"Authorization": "Bearer not.a.token"})
    assert_refusal(bad, 401, "invalid_token")
    assert bad.headers["WWW-Authenticate"].startswith(f'Bearer realm="{ISSUER}", error="invalid_token", error_description=')

    other = client.get("/chat", headers={"Authorization": f"Bearer {live.mint(persona='sales-bot')}"})
    body = assert_refusal(other, 403, "insufficient_scope")
    assert "support-bot" in body["error_description"]
    assert 'error="insufficient_scope"' in other.headers["WWW-Authenticate"]
    assert 'scope="chat:read"' in other.headers["WWW-Authenticate"]


@pytest.mark.parametrize("mode", ["decorator", "middleware"])
def test_unavailable_revocations_are_503(live: Service, mode: str) -> None:
    verifier = make_verifier(live, DownRevocations())
    if mode == "decorator":
        client = chat_app(verifier).test_client()
    else:
        flask_app = Flask("plain")
        flask_app.wsgi_app = protect(plain_app, verifier)  # type: ignore[method-assign,assignment]
        client = flask_app.test_client()
    response = client.get("/chat", headers={"Authorization": f"Bearer {live.mint()}"})
    assert_refusal(response, 503, "temporarily_unavailable")
    assert response.headers["Retry-After"] == "1"


def test_unprotected_views_are_untouched(live: Service) -> None:
    assert chat_app(make_verifier(live)).test_client().get("/open").status_code == 200
