"""CORS with credentials: only for configured origins, only when the session adapter is on."""

from __future__ import annotations

import pytest

from tests.conftest import ORIGIN, Actions, with_settings
from token_service import create_app

SITE = "https://app.example.com"


def _preflight(client, origin):
    return client.options("/v1/tokens", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})


@pytest.mark.parametrize("adapters", [("api_key", "session"), ("api_key",)])
def test_credentials_are_allowed_for_configured_origins_with_the_session_adapter(settings, clock, adapters):
    app = create_app(with_settings(settings, auth_adapters=adapters, cors_origins=(SITE,), session_url="http://127.0.0.1:9/me"),
                     clock=clock)
    client = app.test_client()
    Actions(client).create_key("public")  # brings ORIGIN in, without credentials
    configured = _preflight(client, SITE)
    assert configured.headers["Access-Control-Allow-Origin"] == SITE
    assert configured.headers.get("Access-Control-Allow-Credentials") == ("true" if "session" in adapters else None)
    by_key = _preflight(client, ORIGIN)
    assert by_key.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in by_key.headers
    stranger = _preflight(client, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in stranger.headers and "Access-Control-Allow-Credentials" not in stranger.headers
