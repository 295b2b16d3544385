"""Local verification of the service's access tokens, for gateways and services (see docs/verifier.md).

``Verifier`` checks signature and claims against the service's JWKS and revocations against a source:
``RedisRevocations`` (the service's Redis, kept current by pub/sub) or ``FeedRevocations`` (polling
``/v1/revocations/feed``). ``protect`` (WSGI) and ``require_token`` (Flask views) answer refusals as
``/v1/verify`` does. Importing this package never imports Flask; Redis is imported when
``RedisRevocations`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from token_service.verifier.core import JwksCache, Verifier
from token_service.verifier.errors import (
    KeysUnavailable,
    RevocationsStale,
    RevocationUnavailable,
    TokenInsufficient,
    TokenInvalid,
    TokenMissing,
)
from token_service.verifier.feed import FeedRevocations
from token_service.verifier.sources import RevocationSource
from token_service.verifier.wsgi import CLAIMS_KEY, protect, require_token

if TYPE_CHECKING:
    from token_service.verifier.redis_source import RedisRevocations

__all__ = [
    "CLAIMS_KEY", "FeedRevocations", "JwksCache", "KeysUnavailable", "RedisRevocations", "RevocationSource",
    "RevocationUnavailable", "RevocationsStale", "TokenInsufficient", "TokenInvalid", "TokenMissing", "Verifier",
    "protect", "require_token",
]


def __getattr__(name: str) -> Any:
    if name == "RedisRevocations":
        from token_service.verifier.redis_source import RedisRevocations

        return RedisRevocations
    raise AttributeError(f"module 'token_service.verifier' has no attribute {name!r}")
