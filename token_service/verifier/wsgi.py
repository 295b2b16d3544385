"""``protect``: WSGI middleware, and ``require_token``: a decorator for Flask views, both refusing as
``/v1/verify`` does (401/403/503, the contract's JSON error body, ``WWW-Authenticate``) and passing the
verified claims on in ``environ["token_service.claims"]``. Flask is imported only by the decorator, when a
decorated view runs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from token_service.claims import AccessClaims
from token_service.errors import ServiceError
from token_service.verifier.core import Verifier
from token_service.verifier.errors import TokenMissing

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

CLAIMS_KEY = "token_service.claims"
F = TypeVar("F", bound=Callable[..., Any])
_REASONS = {401: "Unauthorized", 403: "Forbidden", 503: "Service Unavailable"}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def check(verifier: Verifier, authorization: str | None, persona_id: str | None, scopes: Sequence[str]) -> AccessClaims:
    """The claims for an ``Authorization`` header value; a ServiceError (401/403/503) otherwise."""
    token = bearer_token(authorization)
    if token is None:
        raise TokenMissing("Authentication is required.", headers=verifier.challenge())
    return verifier.verify(token, persona_id=persona_id, scopes=scopes)


def error_response(error: ServiceError) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a refusal."""
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
               ("X-Content-Type-Options", "nosniff"), *error.headers.items()]
    if error.status_code == 503:
        headers.append(("Retry-After", "1"))
    return error.status_code, headers, body


def protect(app: WSGIApplication, verifier: Verifier, persona_id: str | None = None, scopes: Sequence[str] = ()) -> WSGIApplication:
    """``app`` behind the verifier: every request needs a valid bearer token meeting the requirements."""
    required = tuple(scopes)

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            claims = check(verifier, environ.get("HTTP_AUTHORIZATION"), persona_id, required)
        except ServiceError as error:
            status, headers, body = error_response(error)
            start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
            return [body]
        environ[CLAIMS_KEY] = claims
        return app(environ, start_response)

    return middleware


def require_token(verifier: Verifier, persona_id: str | None = None, scopes: Sequence[str] = ()) -> Callable[[F], F]:
    """A decorator for Flask views: the view runs only for a valid token; the claims are in
    ``flask.request.environ["token_service.claims"]``."""
    required = tuple(scopes)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import flask  # only here: the verifier itself never needs Flask

            try:
                claims = check(verifier, flask.request.headers.get("Authorization"), persona_id, required)
            except ServiceError as error:
                status, headers, body = error_response(error)
                return flask.Response(body, status=status, headers=headers)
            flask.request.environ[CLAIMS_KEY] = claims
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
