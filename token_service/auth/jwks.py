"""An identity provider's JSON Web Key Set (RFC 7517): fetched over HTTP(S), cached per process.

The only module of the ``oidc`` adapter that does I/O (as ``jwks_client.py`` is PyJWT's). The set is
fetched from the configured URL only, never from a URL a token names. It is refetched when older than
``cache_seconds``, and when a token names a ``kid`` the set lacks (a key rotation), but never more than
once per ``refresh_interval``: a stream of tokens with made-up ``kid`` values costs the provider one
request per interval. Time is the injected clock's.

Failure policy (fail closed): when a fetch fails, keys already cached stay usable (a stale key is
better than an outage, and cannot widen what is accepted); a ``kid`` that is not cached then raises
JwksUnavailable (503), never a guess.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from token_service.clock import Clock
from token_service.config import OIDC_ALGORITHMS

MAX_JWKS_BYTES = 256 * 1024
USER_AGENT = "persona-token-service oidc adapter"
_KEY_TYPES = ("RSA", "EC", "OKP")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVES: dict[str, type[ec.EllipticCurve]] = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}

log = logging.getLogger("token_service.auth.jwks")

Fetcher = Callable[[], bytes]
"""Returns the body of the JWKS document; raises JwksUnavailable."""


class JwksUnavailable(Exception):
    """The key set cannot be fetched or parsed now. The message is safe to log (no body, no token)."""


class UnknownKey(Exception):
    """The current key set has no usable key with this ``kid``, and a refetch is not allowed yet."""


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """One public key of the set: its ``kid``, the ``alg`` its JWK declares (None when it declares none), the key."""

    kid: str
    alg: str | None
    key: Any = field(repr=False)

    def verifies(self, alg: str) -> bool:
        """True when this key may check a signature made with ``alg``: the declared alg matches and the key type fits."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg.startswith(("RS", "PS")):
            return isinstance(self.key, rsa.RSAPublicKey)
        if alg in _CURVES:
            return isinstance(self.key, ec.EllipticCurvePublicKey) and isinstance(self.key.curve, _CURVES[alg])
        if alg == "EdDSA":
            return isinstance(self.key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
        return False


def parse_jwks(body: bytes) -> dict[str, tuple[PublishedKey, ...]]:
    """The usable signing keys of a JWKS document by ``kid``; JwksUnavailable when there are none.

    Skipped: members without a ``kid``, keys for encryption (``use`` other than ``sig``, ``key_ops``
    without ``verify``), symmetric keys, keys carrying private parameters, algorithms outside the
    asymmetric ones this service knows, and anything PyJWT cannot build a key from.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise JwksUnavailable("the JWKS document is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable("the JWKS document has no keys array")
    keys: dict[str, list[PublishedKey]] = {}
    for member in document["keys"]:
        published = _published_key(member)
        if published is not None:
            keys.setdefault(published.kid, []).append(published)
    if not keys:
        raise JwksUnavailable("the JWKS document holds no usable signing key")
    return {kid: tuple(found) for kid, found in keys.items()}


def _published_key(member: object) -> PublishedKey | None:
    if not isinstance(member, dict):
        return None
    kid, kty, alg = member.get("kid"), member.get("kty"), member.get("alg")
    if not isinstance(kid, str) or not kid or kty not in _KEY_TYPES:
        return None
    if alg is not None and alg not in OIDC_ALGORITHMS:
        return None
    if member.get("use", "sig") != "sig":
        return None
    key_ops = member.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    if _PRIVATE_MEMBERS & member.keys():
        # A provider publishing private parameters is broken; using the key would still be safe, but
        # a JWKS should never hold them and the operator should hear about it.
        log.warning("the identity provider's JWKS publishes private key parameters for a key; that key is ignored")
        return None
    try:
        # PyJWT derives RS256/ESxxx from kty/crv when the JWK declares no alg; OKP keys are EdDSA.
        jwk = jwt.PyJWK(member, algorithm="EdDSA" if kty == "OKP" and alg is None else None)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, NotImplementedError):
        return None
    return PublishedKey(kid=kid, alg=alg, key=jwk.key)


def _http_opener() -> urllib.request.OpenerDirector:
    """An opener for http(s) only (no file:, ftp: or data:), honouring proxy variables, following no redirect:
    the configured URL is the one the keys come from, and a 3xx is a failed fetch."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What the cache holds; replaced whole, so a reader never sees half an update."""

    keys: Mapping[str, tuple[PublishedKey, ...]] = field(default_factory=dict)
    fetched_at: float | None = None  # the last successful fetch
    attempted_at: float | None = None  # the last attempt, successful or not
    failed: bool = False  # whether that attempt failed
    unknown_kid_at: float | None = None  # the last fetch made because a token named a kid the set lacked


class JwksCache:
    """The provider's keys, fetched from ``url`` and cached (thread-safe; one fetch at a time).

    A fetch is made when the cache is empty or older than ``cache_seconds``, or when a ``kid`` is not in
    a fresh cache and no such unknown-``kid`` fetch was made in the last ``refresh_interval``. After a
    failed fetch, none is tried again for ``refresh_interval`` (a provider that is down is not asked on
    every request, each costing up to ``timeout``).
    """

    def __init__(self, url: str, clock: Clock, *, timeout: float = 2.0, cache_seconds: float = 300,
                 refresh_interval: float = 60, fetch: Fetcher | None = None):
        if not url.startswith(("https://", "http://")):
            raise ValueError("the JWKS URL must be an http:// or https:// URL")
        self.url = url
        self._clock = clock
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._refresh_interval = refresh_interval
        self._fetch = fetch or self._http_get
        self._opener = _http_opener()
        self._lock = threading.Lock()
        self._snapshot = _Snapshot()

    def keys_for(self, kid: str) -> tuple[PublishedKey, ...]:
        """The keys published under ``kid``.

        Raises UnknownKey when the set (fetched successfully) lacks it, JwksUnavailable when it is not
        cached and the set cannot be fetched.
        """
        snapshot = self._snapshot
        if self._fresh(snapshot, self._clock()) and kid in snapshot.keys:
            return snapshot.keys[kid]
        with self._lock:
            # Re-read under the lock: a thread that waited here sees the fetch the previous holder made.
            snapshot = self._snapshot
            now = self._clock()
            backing_off = snapshot.failed and not self._elapsed(snapshot.attempted_at, now)
            if not self._fresh(snapshot, now):
                if not backing_off:  # empty or old: fetch
                    snapshot = self._snapshot = self._refresh(snapshot, now)
            elif kid not in snapshot.keys and not backing_off and self._elapsed(snapshot.unknown_kid_at, now):
                # Perhaps a rotation: refetch, at most once per interval whatever kids tokens make up.
                snapshot = self._snapshot = replace(self._refresh(snapshot, now), unknown_kid_at=now)
        found = snapshot.keys.get(kid)
        if found:
            return found
        if snapshot.failed:
            raise JwksUnavailable("the identity provider's keys cannot be fetched")
        raise UnknownKey(kid)

    def _fresh(self, snapshot: _Snapshot, now: float) -> bool:
        return snapshot.fetched_at is not None and 0 <= now - snapshot.fetched_at < self._cache_seconds

    def _elapsed(self, since: float | None, now: float) -> bool:
        """True when ``refresh_interval`` has passed since ``since`` (or never, or the clock was set back)."""
        return since is None or not 0 <= now - since < self._refresh_interval

    def _refresh(self, snapshot: _Snapshot, now: float) -> _Snapshot:
        try:
            keys = parse_jwks(self._fetch())
        except JwksUnavailable as exc:
            log.warning("cannot refresh the identity provider's keys from %s: %s", self.url, exc)
            return replace(snapshot, attempted_at=now, failed=True)
        return replace(snapshot, keys=keys, fetched_at=now, attempted_at=now, failed=False)

    def _http_get(self) -> bytes:
        # S310: the opener has http and https handlers only, so no other scheme can be opened.
        headers = {"Accept": "application/jwk-set+json, application/json", "User-Agent": USER_AGENT}
        request = urllib.request.Request(self.url, headers=headers)  # noqa: S310
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status = response.status
                body: bytes = response.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise JwksUnavailable(f"the JWKS endpoint answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise JwksUnavailable(f"the JWKS endpoint cannot be reached ({type(exc).__name__})") from None
        if status != 200:
            raise JwksUnavailable(f"the JWKS endpoint answered HTTP {status}")
        if len(body) > MAX_JWKS_BYTES:
            raise JwksUnavailable(f"the JWKS document is larger than {MAX_JWKS_BYTES} bytes")
        return body

