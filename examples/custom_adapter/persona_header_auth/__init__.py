"""A worked example of a third-party auth adapter for the Persona token service.

It trusts an ``X-Authenticated-User`` header set by an authenticating reverse proxy in front of the
service (for example oauth2-proxy or an SSO gateway) — and only from the proxy's shared secret in
``X-Proxy-Secret``, compared in constant time. Install the package next to the service and add
``demo_header`` to ``TOKEN_SERVICE_AUTH_ADAPTERS``.
"""

from __future__ import annotations

import hmac
from typing import Any

from token_service.auth import AdapterContext
from token_service.auth.base import AuthenticationFailed, AuthRequest, Principal


class HeaderAdapter:
    """Authenticates end users named by a trusted proxy."""

    name = "demo_header"

    def __init__(self, proxy_secret: str, user_header: str, personas: tuple[str, ...], scopes: tuple[str, ...]):
        self._secret = proxy_secret.encode()
        self._user_header = user_header.lower()
        self._personas = personas
        self._scopes = scopes

    @classmethod
    def from_context(cls, context: AdapterContext) -> HeaderAdapter:
        """Build from the ``[adapters.demo_header]`` table of the service's TOML file."""
        options: dict[str, Any] = context.options
        secret = options.get("proxy_secret")
        if not isinstance(secret, str) or len(secret) < 32:
            raise ValueError("proxy_secret must be at least 32 characters")
        return cls(
            proxy_secret=secret,
            user_header=str(options.get("user_header", "X-Authenticated-User")),
            personas=tuple(options.get("personas", ())),
            scopes=tuple(options.get("scopes", context.settings.default_scopes)),
        )

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """None without the user header; a user Principal when the proxy secret matches."""
        user = request.header(self._user_header)
        if user is None:
            return None
        presented = (request.header("x-proxy-secret") or "").encode()
        if not hmac.compare_digest(presented, self._secret):
            raise AuthenticationFailed("The proxy's secret does not match.")
        if not user or len(user) > 256 or not all("!" <= c <= "~" for c in user):
            raise AuthenticationFailed("The proxy named no valid user.")
        return Principal(kind="user", client_id="demo_header", subject=user, personas=self._personas, scopes=self._scopes)
