"""``Verifier``: checks a token locally, as ``/v1/verify`` does, from the service's JWKS and a revocation source.

Signature and claims: ``TokenCodec.inspect`` (the service's own strict checks) with a verify-only
``KeyRing`` built from the JWKS. The JWKS is fetched from the configured URL only, cached, refetched when
older than ``jwks_max_age`` and when a token names an unknown ``kid`` (a rotation), at most once per
``jwks_refresh_interval``: made-up kids cost the service one request per interval. When a fetch fails,
the cached keys stay in use; a kid that is not cached is then a 503 (KeysUnavailable), never a guess.

Revocation: the source answers the markers of the token's five targets; the rules are the service's
(``revocation.covers``: a watermark refuses ``iat <= revoked_at``; a jti or kid marker refuses the token).
A source that cannot answer raises RevocationUnavailable: the token is refused (fail closed).

Repeated tokens: the codec keeps the last ``cache_size`` verified tokens (digest-keyed LRU, see
``tokens.VerifiedCache``); a hit skips the signature check only: the key must still be in the ring, the time
checks and the revocation source are applied on every call.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

from token_service.claims import AccessClaims, unmet_requirement
from token_service.errors import bearer_challenge
from token_service.keys import KeyMaterialError, KeyRing
from token_service.revocation import covers, targets_of
from token_service.tokens import TokenCodec, Verdict
from token_service.verifier.errors import KeysUnavailable, TokenInsufficient, TokenInvalid
from token_service.verifier.sources import RevocationSource

MAX_JWKS_BYTES = 256 * 1024
USER_AGENT = "persona-token-service verifier"

Fetcher = Callable[[], bytes]


def require_http(url: str) -> None:
    """ValueError unless ``url`` is http(s) (no ``file:`` or other scheme can be configured by mistake)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("the URL must be http or https")


def http_fetcher(url: str, timeout: float) -> Fetcher:
    """GET ``url`` (the body, at most MAX_JWKS_BYTES); KeysUnavailable on any failure, with a safe message."""

    require_http(url)

    def fetch() -> bytes:
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the configured URL only
                body: bytes = response.read(MAX_JWKS_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise KeysUnavailable(f"The JWKS cannot be fetched ({type(exc).__name__}).") from None
        if len(body) > MAX_JWKS_BYTES:
            raise KeysUnavailable("The JWKS document is too large.")
        return body

    return fetch


class JwksCache:
    """The service's public keys as a verify-only KeyRing, fetched on demand (thread-safe)."""

    def __init__(self, fetch: Fetcher, refresh_interval: float, max_age: float, monotonic: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None
        self._fetched_at: float | None = None  # the last attempt, successful or not
        self._loaded_at: float | None = None  # the last success
        self.fetches = 0

    def ring(self) -> KeyRing:
        """The cached ring; refetched first when none is cached or it is older than max_age (throttled)."""
        ring = self._ring
        if ring is not None and self._loaded_at is not None and self._monotonic() - self._loaded_at < self._max_age:
            return ring
        return self.refresh()

    def refresh(self) -> KeyRing:
        """Refetch, unless the last attempt is younger than refresh_interval (one second while nothing is
        cached); the cached ring when the fetch fails or is not allowed yet, KeysUnavailable when none is."""
        with self._lock:
            now, ring = self._monotonic(), self._ring
            interval = self._refresh_interval if ring is not None else min(1.0, self._refresh_interval)
            if self._fetched_at is not None and now - self._fetched_at < interval:
                if ring is None:
                    raise KeysUnavailable("The JWKS could not be fetched; retry shortly.")
                return ring
            self._fetched_at = now
            self.fetches += 1
            try:
                fetched = KeyRing.from_jwks(json.loads(self._fetch()))
            except (KeysUnavailable, ValueError, UnicodeDecodeError, RecursionError, KeyMaterialError) as exc:
                if ring is not None:
                    return ring  # stale keys cannot widen what is accepted; an unknown kid stays unknown
                if isinstance(exc, KeysUnavailable):
                    raise
                raise KeysUnavailable("The JWKS document is not a JWK Set.") from None
            self._ring, self._loaded_at = fetched, now
            return fetched


class Verifier:
    """Verifies access tokens of one issuer and audience locally; see the module docstring."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        revocations: RevocationSource,
        clock_skew: int = 30,
        jwks_refresh_interval: float = 60,
        jwks_max_age: float = 300,
        http_timeout: float = 5,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        fetch: Fetcher | None = None,
        cache_size: int = 10000,
    ):
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.revocations = revocations
        self.codec = TokenCodec(self.issuer, audience, clock_skew, cache_size)  # cache_size 0: no verified-token cache
        self.keys = JwksCache(fetch or http_fetcher(jwks_url, http_timeout), jwks_refresh_interval, jwks_max_age, monotonic)
        self._clock = clock

    def challenge(self, error: str | None = None, description: str | None = None, scope: str | None = None) -> dict[str, str]:
        """The ``WWW-Authenticate`` header of a refusal (RFC 6750 §3), as the service writes it."""
        return bearer_challenge(self.issuer, error, description, scope)

    def _invalid(self, code: str, description: str) -> TokenInvalid:
        return TokenInvalid(code, description, headers=self.challenge("invalid_token", description))

    def _inspect(self, token: str) -> Verdict:
        verdict = self.codec.inspect(token, self.keys.ring(), self._clock())
        if verdict.reasons and verdict.reasons[0].code == "unknown_key":
            verdict = self.codec.inspect(token, self.keys.refresh(), self._clock())  # a rotation: refetch (throttled)
        return verdict

    def verify(self, token: str, persona_id: str | None = None, scopes: Sequence[str] = ()) -> AccessClaims:
        """The claims of a valid, unrevoked token meeting the requirements.

        Raises TokenInvalid (401), TokenInsufficient (403), RevocationUnavailable or KeysUnavailable (503)."""
        verdict = self._inspect(token)
        if verdict.reasons or verdict.claims is None or verdict.header is None:
            reason = verdict.reasons[0]
            raise self._invalid(reason.code, reason.detail)
        claims = verdict.claims
        targets = targets_of(claims, verdict.header["kid"])
        markers = self.revocations.markers(targets)  # RevocationUnavailable propagates: fail closed
        for target, marker in zip(targets, markers, strict=True):
            if marker is None:
                continue
            if target[0] == "kid":
                raise self._invalid("key_revoked", "The key that signed the token has been revoked.")
            if covers(target, marker, claims):
                raise self._invalid("revoked", "The token has been revoked.")
        self.check_requirements(claims, persona_id, scopes)
        return claims

    def check_requirements(self, claims: AccessClaims, persona_id: str | None, scopes: Sequence[str]) -> None:
        """TokenInsufficient when the token is not bound to ``persona_id`` or lacks one of ``scopes``."""
        description = unmet_requirement(claims, persona_id, scopes)
        if description is not None:
            scope_text = " ".join(scopes) or None
            raise TokenInsufficient(description, headers=self.challenge("insufficient_scope", description, scope_text))

    def close(self) -> None:
        """Stop the revocation source."""
        self.revocations.close()
