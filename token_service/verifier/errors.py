"""What a local verifier refuses with: the service's errors (status, OAuth code, one-sentence description),
so that ``protect`` answers exactly as ``/v1/verify`` does. No message ever holds the token."""

from __future__ import annotations

from token_service.errors import InsufficientScope, InvalidToken, TemporarilyUnavailable, Unauthorized


class TokenMissing(Unauthorized):
    """401 ``unauthorized``: the request carries no bearer token."""


class TokenInvalid(InvalidToken):
    """401 ``invalid_token``: bad, expired, not yet valid, wrong issuer or audience, unknown key, or revoked.

    ``code`` is the reason (``tokens.ReasonCode``: ``malformed``, ``expired``, ``revoked``, ``key_revoked``...)."""

    def __init__(self, code: str, description: str, headers: dict[str, str] | None = None):
        self.code = code
        super().__init__(description, headers)


class TokenInsufficient(InsufficientScope):
    """403 ``insufficient_scope``: a valid token not bound to the required persona or lacking a scope."""


class RevocationUnavailable(TemporarilyUnavailable):
    """503: revocations cannot be checked now (store unreachable, copy not current); the token is refused."""


class RevocationsStale(RevocationUnavailable):
    """503: the feed copy is older than the staleness bound; every token is refused until a poll succeeds."""


class KeysUnavailable(TemporarilyUnavailable):
    """503: the JWKS cannot be fetched and the token's key is not cached."""
