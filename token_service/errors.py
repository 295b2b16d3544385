"""Errors as data: each carries its OAuth error code, HTTP status and a one-sentence description.

The description is written for a human and never holds a token, key or secret. One renderer in
``token_service.web.errors`` turns every ServiceError into the contract's JSON body.
"""

from __future__ import annotations

from typing import ClassVar


def bearer_challenge(realm: str, error: str | None = None, description: str | None = None, scope: str | None = None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a Bearer refusal (RFC 6750 §3)."""
    parts = [f'Bearer realm="{realm}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return {"WWW-Authenticate": ", ".join(parts)}


class ServiceError(Exception):
    """A refusal the client is told about: ``{"error": code, "error_description": description}``."""

    error: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 500
    default_description: ClassVar[str] = "The server failed to handle the request."

    def __init__(self, description: str | None = None, headers: dict[str, str] | None = None):
        self.description = description or self.default_description
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.description)

    def body(self) -> dict[str, object]:
        """The JSON body of the contract."""
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(ServiceError):
    """400: the request is malformed or carries a bad value."""

    error = "invalid_request"
    status_code = 400
    default_description = "The request is malformed."


class InvalidScope(ServiceError):
    """400: a requested scope is unknown."""

    error = "invalid_scope"
    status_code = 400
    default_description = "A requested scope is unknown."


class Unauthorized(ServiceError):
    """401: the caller is not authenticated."""

    error = "unauthorized"
    status_code = 401
    default_description = "Authentication is required."


class InvalidToken(ServiceError):
    """401: the presented token is invalid, expired or revoked."""

    error = "invalid_token"
    status_code = 401
    default_description = "The token is invalid."


class AccessDenied(ServiceError):
    """403: authenticated, but not permitted."""

    error = "access_denied"
    status_code = 403
    default_description = "The caller is not permitted to do this."


class InsufficientScope(ServiceError):
    """403: the token is valid but lacks a required persona or scope."""

    error = "insufficient_scope"
    status_code = 403
    default_description = "The token lacks a required scope."


class NotFound(ServiceError):
    """404: no such resource."""

    error = "not_found"
    status_code = 404
    default_description = "No such resource."


class MethodNotAllowed(ServiceError):
    """405: the path exists but not with this method (Werkzeug's 405, in the contract's shape)."""

    error = "invalid_request"
    status_code = 405
    default_description = "This method is not allowed on this path."


class Conflict(ServiceError):
    """409: the request conflicts with the current state."""

    error = "conflict"
    status_code = 409
    default_description = "The request conflicts with the current state."


class PayloadTooLarge(ServiceError):
    """413: the body is over the limit."""

    error = "payload_too_large"
    status_code = 413
    default_description = "The request body is larger than 16 KiB."


class UnsupportedMediaType(ServiceError):
    """415: the body is not of an accepted content type."""

    error = "unsupported_media_type"
    status_code = 415
    default_description = "The request body must be application/json."


class RateLimited(ServiceError):
    """429: too many requests; carries Retry-After."""

    error = "rate_limited"
    status_code = 429
    default_description = "Too many requests; retry later."


class TemporarilyUnavailable(ServiceError):
    """503: a dependency the decision needs cannot be reached; the service fails closed."""

    error = "temporarily_unavailable"
    status_code = 503
    default_description = "A dependency is unavailable; retry later."


class ServerError(ServiceError):
    """500: an unexpected failure (details go to the log, never to the client)."""
