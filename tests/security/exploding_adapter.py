"""A buggy third-party auth adapter for tests/security/test_no_secret_leaks.py: on a request carrying
``X-Explode`` it raises an unexpected exception whose text holds the caller's credential and body, as
a careless plugin would. The service must answer API.md's ``server_error`` and log neither."""

from __future__ import annotations

from typing import Any

from token_service.auth.base import AuthRequest, Principal

EXPLODE_HEADER = "X-Explode"


class ExplodingAdapter:
    """None for every request, except one with ``X-Explode``: then a RuntimeError quoting its secrets."""

    name = "exploding"

    def __init__(self, context: Any):
        self.context = context

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """None, or an unexpected error whose message leaks the credential (the service must contain it)."""
        if request.header(EXPLODE_HEADER) is None:
            return None
        raise RuntimeError(f"cannot parse {request.header('authorization')!r} with body {request.body!r}")
