"""Revocation rules (pure): what an entry covers, which entries a token is checked against, and
when an entry may be forgotten.

- ``jti``: that one token.
- ``sub`` / ``personaId`` / ``client_id``: a watermark; every token of that subject / persona /
  credential with ``iat`` at or before the revocation second is refused. Minting never issues a token
  whose ``iat`` falls at or before a watermark (it moves ``iat`` one second past it), so "tokens minted
  afterwards are accepted" holds even within the same second.
- ``kid``: every token signed by that key; the key leaves the JWKS and signs no more.

An entry is forgotten once no token it covers can pass verification: a jti entry when the token's
``exp`` plus the skew has passed (max TTL plus twice the skew when the token is unknown), a watermark at
``revoked_at + max_ttl + skew``. ``kid`` entries are kept (the ring is small and bounded).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, TypedDict

from token_service.claims import AccessClaims

RevocationType = Literal["jti", "sub", "personaId", "client_id", "kid"]
REVOCATION_TYPES: tuple[RevocationType, ...] = ("jti", "sub", "personaId", "client_id", "kid")
WATERMARK_TYPES: frozenset[str] = frozenset({"sub", "personaId", "client_id"})
Target = tuple[RevocationType, str]


class RevocationDict(TypedDict):
    """A revocation as the admin API shows it."""

    id: str
    type: str
    value: str
    reason: str | None
    revoked_at: int
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revocation entry."""

    id: str
    type: RevocationType
    value: str
    reason: str | None
    revoked_at: int
    expires_at: int | None

    def to_dict(self) -> RevocationDict:
        """The admin API's JSON shape."""
        return {
            "id": self.id, "type": self.type, "value": self.value, "reason": self.reason,
            "revoked_at": self.revoked_at, "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class Marker:
    """What the store keeps per target for the check: the strongest entry in force for it."""

    revocation_id: str
    revoked_at: int


def jti_digest(jti: str) -> bytes:
    """16 bytes of BLAKE2b of a jti: where the Redis store keeps a jti entry (``token_service.jti_buckets``)."""
    return hashlib.blake2b(jti.encode(), digest_size=16).digest()


def new_revocation_id(target: Target | None = None) -> str:
    """A fresh revocation id: ``rev_`` and 20 hex digits (opaque to clients).

    For a jti entry the last 4 digits are the first two bytes of ``jti_digest(jti)`` and the other 16 are
    random, so that a store keeping jti entries in buckets (the Redis one) finds an entry from its id
    alone; for the other types all 20 are random."""
    if target is not None and target[0] == "jti":
        return "rev_" + secrets.token_hex(8) + jti_digest(target[1])[:2].hex()
    return "rev_" + secrets.token_hex(10)


def targets_of(claims: AccessClaims, kid: str) -> tuple[Target, ...]:
    """The targets a token is checked against, in a fixed order (one store round trip for all)."""
    return (
        ("jti", claims.jti),
        ("sub", claims.sub),
        ("personaId", claims.persona_id),
        ("client_id", claims.client_id),
        ("kid", kid),
    )


def mint_targets(sub: str, persona_id: str, client_id: str) -> tuple[Target, ...]:
    """The watermarks a new token must be issued after."""
    return (("sub", sub), ("personaId", persona_id), ("client_id", client_id))


def covers(target: Target, marker: Marker, claims: AccessClaims) -> bool:
    """True when the entry ``marker`` for ``target`` refuses a token with ``claims``."""
    if target[0] in WATERMARK_TYPES:
        return claims.iat <= marker.revoked_at
    return True


def issue_time_after(now: int, markers: list[Marker | None]) -> int:
    """The ``iat`` for a new token: now, or one second past the newest watermark in that second."""
    newest = max((m.revoked_at for m in markers if m is not None), default=None)
    if newest is not None and newest >= now:
        return newest + 1
    return now


def expiry_of(rtype: RevocationType, revoked_at: int, horizon: int, token_exp: int | None = None, clock_skew: int = 0) -> int | None:
    """When an entry of this type can be forgotten (None: never, for kid)."""
    if rtype == "kid":
        return None
    if rtype == "jti":
        if token_exp is not None:
            return max(revoked_at, token_exp + clock_skew)
        # An unknown token may have been issued up to a second late (a bumped iat, see above) or by an
        # instance whose clock runs ahead: keep the entry one skew longer than a watermark.
        return revoked_at + horizon + clock_skew
    return revoked_at + horizon
