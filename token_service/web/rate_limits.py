"""Rate limits (API.md "Rate limits"), with Flask-Limiter on the shared store.

The Limiter is built by ``install_rate_limits`` inside ``create_app`` (nothing at import time), its
counters in the Redis of TOKEN_SERVICE_REDIS_URL (so every instance shares them) or in memory on the
embedded stores. Fixed windows, as the settings name them ("30/minute").

- minting with a public key: per key and client address; with a secret key or a signed request: per key;
- admin calls: per admin key;
- failed authentication: per client address, checked before authenticating and counted on every 401 of
  the authenticating routes (minting, introspection, the revocation feed, admin), so that once over the
  limit even a good credential from that address is refused until the window passes;
- ``/v1/verify``, ``/v1/introspect`` and discovery have no limit of their own.

The client address is ``request.remote_addr``: the socket's peer, or what ProxyFix took from
X-Forwarded-For when TOKEN_SERVICE_TRUSTED_PROXIES is above 0. A key is identified by its id (never its
text); a credential that is not a well-formed key by the SHA-256 of its text.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_qualified_name

from token_service.apikeys import parse_key_text
from token_service.auth.base import bearer_credentials
from token_service.config import Settings
from token_service.errors import RateLimited
from token_service.web.errors import render

FAILED_AUTH_SCOPE = "failed-auth"
# Endpoints that authenticate a caller with a credential: their 401s count as failed authentication.
AUTHENTICATING = ("public.mint", "public.introspect", "public.revocation_feed")
# Endpoints without any limit: the Limiter's per-request machinery (resolving and evaluating limits) is
# skipped for them, which costs about a sixth of a /v1/verify otherwise. That skip would also skip a limit
# put on one of them, so install_rate_limits refuses to start when one of them has a limit (remove it from
# here first).
UNLIMITED = frozenset({"public.verify", "public.jwks", "public.metadata", "public.openapi", "public.healthz", "public.readyz", "metrics"})
# Authenticating endpoints whose only limit is the failed-authentication lockout: no RateLimit-* headers.
LOCKOUT_ONLY = frozenset({"public.introspect", "public.revocation_feed"})
_SCHEMES = {"sentinel": "redis+sentinel", "cluster": "redis+cluster"}


def client_address() -> str:
    """The client's address: the socket peer, unless trusted proxies are configured (ProxyFix)."""
    return request.remote_addr or "-"


def _credential_kind() -> tuple[str, str]:
    """(kind, identity) of the request's credential: ``public``/``secret``/``admin`` and the key id, ``signed``
    and the X-Key-Id of a signed request, ``other`` and a digest, or ``none``."""
    key_id = request.headers.get("X-Key-Id")
    if key_id is not None and request.headers.get("X-Signature") is not None:
        return "signed", f"secret:{key_id[:64]}"
    credentials = bearer_credentials(request.headers.get("Authorization"))
    if credentials is None:
        return "none", ""
    parsed = parse_key_text(credentials)
    if parsed is not None:
        return parsed.kind, f"{parsed.kind}:{parsed.key_id}"
    return "other", "h:" + hashlib.sha256(credentials.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _public_key() -> str:
    return f"{_credential_kind()[1]}@{client_address()}"


def _secret_key() -> str:
    return _credential_kind()[1]


def _admin_key() -> str:
    kind, identity = _credential_kind()
    return identity if kind != "none" else f"anonymous@{client_address()}"


def _not_public() -> bool:
    return _credential_kind()[0] != "public"


def _not_secret() -> bool:
    return _credential_kind()[0] not in ("secret", "signed")


def _failed_authentication(response: Response) -> bool:
    return response.status_code == 401


class _NoTraceback(logging.Filter):
    """Flask-Limiter logs a store failure with its traceback; the service's logs never carry one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def _storage_uri(settings: Settings) -> str:
    if not settings.redis_url or settings.redis_url == "memory://":
        return "memory://"
    scheme, sep, rest = settings.redis_url.partition("://")
    return f"{_SCHEMES.get(scheme, scheme)}{sep}{rest}"


class _Limiter(Limiter):
    """Flask-Limiter's Limiter, whose before-request check returns at once on UNLIMITED endpoints: with only a
    request filter, it would still evaluate an empty list of limits (about 7 % of a /v1/verify)."""

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        if in_middleware and request.endpoint in UNLIMITED:
            return
        super()._check_request_limit(callable_name=callable_name, in_middleware=in_middleware)


def _limit_headers(limiter: Limiter) -> Callable[[Response], Response]:
    def add_headers(response: Response) -> Response:
        """RateLimit-* and X-RateLimit-* on limited routes (Retry-After is the 429 renderer's alone). None on
        introspection and the revocation feed, unlimited by the contract: their only limit is the failed
        authentication lockout, and reading its window would cost two store round trips per call."""
        if request.endpoint in LOCKOUT_ONLY:
            return response
        current = limiter.current_limit
        if current is None:
            return response
        try:
            values = {"Limit": str(current.limit.amount), "Remaining": str(current.remaining),
                      "Reset": str(int(current.reset_at))}
        except Exception:  # noqa: BLE001 - the store failed after the check: no headers rather than a 500
            return response
        for name, value in values.items():
            response.headers[f"RateLimit-{name}"] = value
            response.headers[f"X-RateLimit-{name}"] = value
        return response

    return add_headers


def install_rate_limits(app: Flask, settings: Settings) -> Limiter:
    """Create the app's Limiter and attach the contract's limits to its routes."""
    options: dict[str, Any] = {}
    uri = _storage_uri(settings)
    if uri != "memory://":
        options = {"socket_connect_timeout": settings.redis_connect_timeout, "socket_timeout": settings.redis_socket_timeout}
    # Flask-Limiter's own headers are off: it would rewrite the Retry-After of every answer (a 503's too).
    # Its after-request hook still counts the conditional (failed authentication) deductions.
    # A store that cannot be reached skips the limits (logged) rather than refusing every call.
    limiter = _Limiter(
        key_func=client_address, storage_uri=uri, storage_options=options, strategy="fixed-window",
        headers_enabled=False, key_prefix="token-service:rl", swallow_errors=True,
    )
    # Registered before the Limiter's after-request hook, so it runs after it (Flask runs them in reverse):
    # the headers show the count with the failed authentication of this request included.
    app.after_request(_limit_headers(limiter))
    limiter.init_app(app)
    if not any(isinstance(f, _NoTraceback) for f in limiter.logger.filters):
        limiter.logger.addFilter(_NoTraceback())

    def handle_exceeded(exc: RateLimitExceeded) -> Response:
        g.rate_limit = _limit_name(exc.limit.shared, exc.limit.scope, exc.limit.key_func)  # the metrics' and log's label
        error = RateLimited()
        current = limiter.current_limit
        retry_after = int(current.reset_at - time.time()) if current is not None else 1
        error.headers["Retry-After"] = str(max(1, retry_after))
        return render(error)

    app.register_error_handler(RateLimitExceeded, handle_exceeded)

    failed_auth = limiter.shared_limit(
        settings.rate_limit_failed_auth, scope=FAILED_AUTH_SCOPE, key_func=client_address,
        deduct_when=_failed_authentication,
    )
    public_mint = limiter.limit(settings.rate_limit_public_mint, key_func=_public_key, exempt_when=_not_public)
    secret_mint = limiter.limit(settings.rate_limit_secret_mint, key_func=_secret_key, exempt_when=_not_secret)
    admin = limiter.shared_limit(settings.rate_limit_admin, scope="admin", key_func=_admin_key)

    # A view's limits are recorded against its name and checked by the wrapper the decorator returns (which
    # replaces the registered view); a blueprint's are checked before its own before-request hooks.
    views = app.view_functions
    views["public.mint"] = secret_mint(public_mint(failed_auth(views["public.mint"])))  # type: ignore[assignment]
    for endpoint in AUTHENTICATING[1:]:
        views[endpoint] = failed_auth(views[endpoint])  # type: ignore[assignment]
    for name, blueprint in app.blueprints.items():
        if name in ("admin", "signing_keys"):
            failed_auth(blueprint)  # type: ignore[call-overload]
            admin(blueprint)  # type: ignore[call-overload]
    _check_unlimited(app, limiter)
    return limiter


def _limit_name(shared: bool, scope: object, key_func: object) -> str:
    """The name of a limit, as the metrics and the request log call it: failed_auth, admin, public_mint, secret_mint."""
    if shared:
        return {FAILED_AUTH_SCOPE: "failed_auth", "admin": "admin"}.get(scope if isinstance(scope, str) else "", "other")
    return "public_mint" if key_func is _public_key else "secret_mint" if key_func is _secret_key else "other"


def _check_unlimited(app: Flask, limiter: Limiter) -> None:
    """Refuse to start when an UNLIMITED endpoint has a limit: _Limiter would silently skip it."""
    manager = limiter.limit_manager
    for endpoint in UNLIMITED:
        view = app.view_functions.get(endpoint)
        blueprint = endpoint.rpartition(".")[0]
        named = manager.decorated_limits(get_qualified_name(view)) if view is not None else []
        if named or manager.blueprint_limits(app, blueprint):
            raise RuntimeError(f"{endpoint} has a rate limit but is listed in UNLIMITED, which skips limits")
