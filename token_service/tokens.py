"""Encoding and strict checking of access tokens (RFC 9068 JWTs), after RFC 8725.

``inspect`` parses a compact JWS itself (strict base64url, JSON objects without duplicate members,
a size limit checked before any decoding), looks the ``kid`` up in the ring only, verifies the
signature with the algorithm bound to that key (PyJWT's algorithm objects), then checks each claim.
It returns every reason the token fails, so that operators can be shown the whole verdict;
``verify`` raises the first. Revocation is not decided here: see ``revocation.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from jwt.algorithms import Algorithm as JwtAlgorithm

from token_service.claims import AccessClaims
from token_service.keys import KeyRing, SigningKey

MAX_TOKEN_LENGTH = 4096
ACCEPTED_TYP = ("at+jwt", "application/at+jwt")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_HEADER_MEMBERS = frozenset({"alg", "typ", "kid"})

ReasonCode = Literal[
    "malformed", "unknown_key", "key_revoked", "bad_signature", "expired", "not_yet_valid",
    "wrong_issuer", "wrong_audience", "revoked",
]


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a token fails: a code from the contract and a detail for humans (never the token)."""

    code: ReasonCode
    detail: str
    revocation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``inspect`` found: the header (when it parsed), the claims (when the signature holds), the reasons."""

    header: dict[str, Any] | None
    claims: AccessClaims | None
    reasons: tuple[Reason, ...] = field(default=())
    raw_claims: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        """True when no reason applies."""
        return not self.reasons and self.claims is not None


class TokenRejected(Exception):
    """The token fails; ``reason`` says why. The message never holds the token."""

    def __init__(self, reason: Reason):
        self.reason = reason
        super().__init__(reason.detail)


class _DuplicateMember(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateMember(key)
        result[key] = value
    return result


def b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): only the canonical encoding; ValueError otherwise."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise ValueError("not canonical base64url")  # spare bits set: strict base64url is the canonical encoding only
    return raw


def json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object without duplicate members (no other parser can read another alg or kid); ValueError otherwise."""
    try:
        value = json.loads(raw, object_pairs_hook=_object_without_duplicates)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a verified token's signature check established: the key that verified it, its header and claims."""

    key: SigningKey
    header: dict[str, Any]
    claims: AccessClaims
    raw_claims: dict[str, Any]


class VerifiedCache:
    """A bounded LRU of tokens whose signature verified, keyed by the BLAKE2b digest of the whole token text
    (any change to the token misses; the token itself is never held as a key). Thread-safe.

    A hit skips parsing and the signature check only: the caller re-checks that the key is still in the
    ring and re-applies the time checks; revocation is never decided here."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def digest(token: str) -> bytes:
        """The cache key of ``token``."""
        return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=32).digest()

    def get(self, digest: bytes) -> _Verified | None:
        """The entry of ``digest`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries.move_to_end(digest)
            return entry

    def put(self, digest: bytes, entry: _Verified) -> None:
        """Remember ``entry``; the least recently used entry goes when the cache is full."""
        with self._lock:
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def discard(self, digest: bytes) -> None:
        """Forget ``digest`` (an expired token, a key that left the ring)."""
        with self._lock:
            self._entries.pop(digest, None)


_MALFORMED = Verdict(header=None, claims=None, reasons=(Reason("malformed", "The token is not a well-formed signed JWT."),))


class TokenCodec:
    """Signs and checks access tokens for one issuer and audience, with a clock skew allowance."""

    def __init__(self, issuer: str, audience: str, clock_skew: int, cache_size: int = 0):
        self.issuer = issuer
        self.audience = audience
        self.clock_skew = clock_skew
        self._algorithms: dict[str, JwtAlgorithm] = {}
        self.cache = VerifiedCache(cache_size) if cache_size > 0 else None

    def _algorithm(self, name: str) -> JwtAlgorithm:
        algorithm = self._algorithms.get(name)
        if algorithm is None:
            algorithm = self._algorithms[name] = jwt.get_algorithm_by_name(name)
        return algorithm

    def encode(self, claims: AccessClaims, key: SigningKey) -> str:
        """Sign ``claims`` with ``key`` (header: alg of the key, typ at+jwt, kid)."""
        if key.private_key is None:
            raise ValueError("this key cannot sign")
        return jwt.encode(dict(claims.to_dict()), key.private_key, algorithm=key.alg, headers={"typ": "at+jwt", "kid": key.kid})

    def inspect(self, token: str, ring: KeyRing, now: float, use_cache: bool = True) -> Verdict:
        """Every reason ``token`` fails, apart from revocation entries; claims only when the signature holds.
        ``use_cache=False``: the full check whatever the cache holds (operators' verdicts, revocation by token)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            return _MALFORMED
        cache = self.cache
        if cache is None or not use_cache:
            return self._check(token, ring, now)
        # The dot count is checked by _check on a miss: a hit is a token that passed it (the cache holds verified
        # tokens only), so a repeated token skips that scan of its text.
        digest = cache.digest(token)
        entry = cache.get(digest)
        if entry is not None:
            current = ring.get(entry.key.kid)
            if current is not None and (current is entry.key or current == entry.key):
                claims, skew = entry.claims, self.clock_skew
                # The time checks on every hit; issuer and audience too, in case the codec's were changed.
                if claims.exp > now - skew and claims.nbf <= now + skew and claims.iat <= now + skew \
                        and claims.iss == self.issuer and claims.aud == self.audience:
                    reasons: tuple[Reason, ...] = ()
                else:
                    reasons = tuple(self._claim_reasons(claims, now))
                    if reasons[0].code == "expired":
                        cache.discard(digest)
                return Verdict(header=dict(entry.header), claims=claims, reasons=reasons, raw_claims=dict(entry.raw_claims))
            cache.discard(digest)  # the key left the ring or was replaced: check the token again from scratch
        verdict = self._check(token, ring, now)
        if verdict.valid and verdict.header is not None and verdict.raw_claims is not None:
            key = ring.get(verdict.header["kid"])  # the key whose signature check just passed
            if key is not None and verdict.claims is not None:
                cache.put(digest, _Verified(key, dict(verdict.header), verdict.claims, dict(verdict.raw_claims)))
        return verdict

    def _check(self, token: str, ring: KeyRing, now: float) -> Verdict:
        """The full check of ``token``, without the cache."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            return _MALFORMED
        header_segment, payload_segment, signature_segment = token.split(".")
        try:
            header = json_object(b64url_decode(header_segment))
            payload_bytes = b64url_decode(payload_segment)  # parsed only once the signature holds
            signature = b64url_decode(signature_segment)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            return _MALFORMED
        problem = self._header_problem(header)
        if problem:
            return Verdict(header=header, claims=None, reasons=(Reason("malformed", problem),))
        key = ring.get(header["kid"])
        if key is None:
            reason = Reason("unknown_key", "The token was signed by a key this service does not know (never, or no longer: "
                                           "a key leaves the ring once every token it signed has expired).")
            return Verdict(header=header, claims=None, reasons=(reason,))
        reasons: list[Reason] = []
        if header["alg"] != key.alg:
            reasons.append(Reason("bad_signature", "The token's algorithm is not the one bound to its key."))
            return Verdict(header=header, claims=None, reasons=tuple(reasons))
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        algorithm = self._algorithm(key.alg)
        try:
            good = algorithm.verify(signing_input, key.public_key, signature)
        except Exception:  # noqa: BLE001 - any failure inside the primitive is a bad signature
            good = False
        if not good:
            reasons.append(Reason("bad_signature", "The token's signature does not verify."))
            return Verdict(header=header, claims=None, reasons=tuple(reasons))
        try:
            payload = json_object(payload_bytes)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            reasons.insert(0, Reason("malformed", "The token's payload is not a JSON object."))
            return Verdict(header=header, claims=None, reasons=tuple(reasons))
        claims = AccessClaims.from_dict(payload)
        if claims is None:
            reasons.insert(0, Reason("malformed", "The token lacks a required claim or has one of the wrong type."))
            return Verdict(header=header, claims=None, reasons=tuple(reasons), raw_claims=payload)
        reasons.extend(self._claim_reasons(claims, now))
        return Verdict(header=header, claims=claims, reasons=tuple(reasons), raw_claims=payload)

    def verify(self, token: str, ring: KeyRing, now: float) -> AccessClaims:
        """The claims of a token that passes every check but revocation entries; else raise TokenRejected."""
        verdict = self.inspect(token, ring, now)
        if verdict.reasons or verdict.claims is None:
            raise TokenRejected(verdict.reasons[0])
        return verdict.claims

    @staticmethod
    def _header_problem(header: dict[str, Any]) -> str | None:
        if "crit" in header:
            return "The token has a crit header, which is not supported."
        extra = set(header) - _HEADER_MEMBERS
        if extra:
            return "The token's header has members this service does not accept."
        typ, kid, alg = header.get("typ"), header.get("kid"), header.get("alg")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYP:
            return "The token's typ is not at+jwt."
        if not isinstance(alg, str) or not isinstance(kid, str) or not kid:
            return "The token's header lacks alg or kid."
        return None

    def _claim_reasons(self, claims: AccessClaims, now: float) -> list[Reason]:
        reasons: list[Reason] = []
        skew = self.clock_skew
        if claims.exp <= now - skew:
            reasons.append(Reason("expired", f"The token expired {int(now - claims.exp)} s ago (allowed skew {skew} s)."))
        early = max(claims.nbf, claims.iat) - now
        if claims.nbf > now + skew or claims.iat > now + skew:
            reasons.append(Reason("not_yet_valid", f"The token is valid only in {int(early)} s (allowed skew {skew} s)."))
        if claims.iss != self.issuer:
            reasons.append(Reason("wrong_issuer", "The token was issued by another issuer."))
        if claims.aud != self.audience:
            reasons.append(Reason("wrong_audience", "The token is meant for another audience."))
        return reasons
