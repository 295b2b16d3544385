"""The ``oidc`` adapter: ``Authorization: Bearer <JWT>`` issued by an OpenID Connect / OAuth 2.0
identity provider (an ID token or a JWT access token), checked against the provider's JWKS.

After RFC 8725 (JWT best practices):
- a credential with exactly two dots is ours; anything else (an ``sk_…`` key) is not (None);
- the header is read strictly before any key lookup: ``alg`` must be in ``TOKEN_SERVICE_OIDC_ALGORITHMS``
  (asymmetric only, so ``none`` and ``HS256`` with a public key as secret cannot pass), ``kid`` a
  non-empty string, and ``jku``, ``x5u``, ``jwk``, ``x5c``, ``crit`` (and ``b64``) are refused: keys
  come from the configured JWKS URL only, never from a URL or key the token carries;
- the JWK must fit the alg (its own ``alg``, when it declares one, is the token's; RSA for RS/PS, the
  alg's curve for ES, an Edwards key for EdDSA), and PyJWT verifies with that one algorithm;
- ``iss``, ``aud`` and ``exp`` are required. PyJWT reads the wall clock itself, so its time checks are
  switched off and ``exp``, ``nbf`` and ``iat`` are checked here against the injected clock, with
  ``TOKEN_SERVICE_CLOCK_SKEW`` (the same rule as the service's own tokens).

The user mints for themself only: the principal's subject is the token's subject claim, pseudonymised
with ``TOKEN_SERVICE_SUBJECT_PEPPER`` when set, and ``sub`` in a minting body is refused.
"""

from __future__ import annotations

import binascii
import math
import re
from typing import TYPE_CHECKING, Any

import jwt

from token_service.auth.base import (
    AuthenticationFailed,
    AuthRequest,
    AuthUnavailable,
    Principal,
    bearer_credentials,
    pseudonymous_subject,
)
from token_service.auth.jwks import JwksCache, JwksUnavailable, PublishedKey, UnknownKey
from token_service.claims import valid_sub
from token_service.clock import Clock
from token_service.config import PREFIX, ConfigError, Settings
from token_service.tokens import b64url_decode, json_object

if TYPE_CHECKING:
    from token_service.auth import AdapterContext

MAX_TOKEN_LENGTH = 8192
REFUSED_HEADER_MEMBERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})
_B64URL = re.compile(r"^[A-Za-z0-9_-]*\Z")
_MALFORMED = "The identity token is not a well-formed signed JWT."


class OidcAdapter:
    """Authenticates end users by their identity provider's signed JWT."""

    name = "oidc"
    users_only = True  # authenticates end users only: not asked on admin or introspection endpoints

    def __init__(self, settings: Settings, keys: JwksCache, clock: Clock):
        if settings.oidc_issuer is None or settings.oidc_audience is None:
            raise ConfigError(f"{PREFIX}AUTH_ADAPTERS names oidc but its issuer or audience is not set")
        self._settings = settings
        self._issuer: str = settings.oidc_issuer
        self._audience: str = settings.oidc_audience
        self._keys = keys
        self._clock = clock

    @classmethod
    def from_context(cls, context: AdapterContext) -> OidcAdapter:
        """The adapter for ``context.settings``; ConfigError (one line) when a required setting is missing."""
        settings = context.settings
        # load_settings checks these too; Settings built in code (tests, embedding) come through here only.
        for needed in ("oidc_issuer", "oidc_audience", "oidc_jwks_url"):
            if getattr(settings, needed) is None:
                raise ConfigError(f"{PREFIX}AUTH_ADAPTERS names oidc but {PREFIX}{needed.upper()} is not set")
        url: str = settings.oidc_jwks_url  # type: ignore[assignment]  # checked just above
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"{PREFIX}OIDC_JWKS_URL must be an http:// or https:// URL")
        keys = JwksCache(
            url, context.clock, timeout=settings.oidc_timeout, cache_seconds=settings.oidc_jwks_cache_seconds,
            refresh_interval=settings.oidc_jwks_refresh_interval,
        )
        return cls(settings, keys, context.clock)

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """See AuthAdapter.authenticate."""
        token = bearer_credentials(request.header("authorization"))
        if token is None or token.count(".") != 2:
            return None
        header = self._header(token)
        alg, kid = header["alg"], header["kid"]
        key = self._key(kid, alg)
        claims = self._decode(token, key, alg)
        self._check_times(claims)
        personas, scopes = self._grants(claims)
        return Principal(
            kind="user", client_id=self._settings.oidc_client_id, subject=self._subject(claims),
            personas=personas, scopes=scopes, may_name_sub=False,
        )

    # -- the steps --------------------------------------------------------------------------------

    def _header(self, token: str) -> dict[str, Any]:
        """The JOSE header, checked before any key is looked up."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationFailed(f"The identity token is longer than {MAX_TOKEN_LENGTH} characters.")
        try:
            header = json_object(b64url_decode(token.split(".", 1)[0]))
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise AuthenticationFailed(_MALFORMED) from None
        if REFUSED_HEADER_MEMBERS & header.keys():
            raise AuthenticationFailed("The identity token's header names a key source or extension (jku, x5u, jwk, x5c, crit), "
                                       "which this service does not accept.")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._settings.oidc_algorithms:
            raise AuthenticationFailed("The identity token's algorithm is not allowed.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("The identity token's header has no kid.")
        return header

    def _key(self, kid: str, alg: str) -> PublishedKey:
        """The provider's key for ``kid`` that fits ``alg``."""
        try:
            candidates = self._keys.keys_for(kid)
        except UnknownKey:
            raise AuthenticationFailed("The identity token was signed by a key the identity provider does not publish.") from None
        except JwksUnavailable:
            raise AuthUnavailable("The identity provider's keys cannot be fetched.") from None
        for candidate in candidates:
            if candidate.verifies(alg):
                return candidate
        raise AuthenticationFailed("The identity token's algorithm does not fit its key.")

    def _decode(self, token: str, key: PublishedKey, alg: str) -> dict[str, Any]:
        """The verified claims; PyJWT checks the signature, iss, aud and the presence of exp."""
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[alg], audience=self._audience, issuer=self._issuer,
                leeway=self._settings.clock_skew,
                options={
                    "require": ["exp", "iss", "aud"],
                    # Time is checked in _check_times against the injected clock, not PyJWT's wall clock.
                    "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                    # The subject claim is checked in _subject (it may be another claim, or a number).
                    "verify_sub": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.InvalidIssuerError:
            raise AuthenticationFailed("The identity token was issued by another issuer.") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationFailed("The identity token is meant for another audience.") from None
        except jwt.MissingRequiredClaimError:
            raise AuthenticationFailed("The identity token lacks a required claim (iss, aud and exp are required).") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed("The identity token's signature does not verify.") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("The identity token is not valid.") from None
        return claims

    def _check_times(self, claims: dict[str, Any]) -> None:
        """``exp`` (required), ``nbf`` and ``iat`` (when present) against the injected clock, with the skew."""
        now, skew = self._clock(), self._settings.clock_skew
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_number(claims[name]):
                raise AuthenticationFailed(f"The identity token's {name} is not a number.")
        if claims["exp"] <= now - skew:
            raise AuthenticationFailed("The identity token has expired.")
        if claims.get("nbf", -math.inf) > now + skew or claims.get("iat", -math.inf) > now + skew:
            raise AuthenticationFailed("The identity token is not valid yet.")

    def _subject(self, claims: dict[str, Any]) -> str:
        """The subject of the minted tokens: the subject claim, pseudonymised when a pepper is set."""
        claim = self._settings.oidc_subject_claim
        value = claims.get(claim)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise AuthenticationFailed(f"The identity token has no usable {claim} claim (a non-empty string is needed).")
        if claim == "email" and claims.get("email_verified") is not True:
            # Anyone can sign up at many providers with someone else's address: an unverified e-mail
            # would let them mint tokens as that person (OIDC Core §5.7: only iss + sub are stable).
            raise AuthenticationFailed("The identity token's email is not verified (email_verified is not true).")
        pepper = self._settings.subject_pepper
        if pepper is not None:
            return pseudonymous_subject(pepper, self._issuer, value)
        if not valid_sub(value):
            raise AuthenticationFailed(
                f"The identity token's {claim} claim cannot be a token subject (1 to 256 visible ASCII characters); "
                f"the operator can set {PREFIX}SUBJECT_PEPPER or choose another {PREFIX}OIDC_SUBJECT_CLAIM."
            )
        return value

    def _grants(self, claims: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Personas and scopes: the configured ones plus those of every granted group the user is in."""
        settings = self._settings
        personas = list(settings.oidc_personas)
        scopes = list(settings.default_scopes if settings.oidc_scopes is None else settings.oidc_scopes)
        if settings.oidc_groups_claim and settings.oidc_group_grants:
            groups = _groups(claims.get(settings.oidc_groups_claim))
            for grant in settings.oidc_group_grants:
                if grant.group in groups:
                    personas.extend(grant.personas)
                    scopes.extend(grant.scopes)
        return tuple(dict.fromkeys(personas)), tuple(dict.fromkeys(scopes))


def _groups(value: object) -> frozenset[str]:
    """The groups of a claim: a list of strings, or one space-separated string; anything else grants nothing."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def _is_number(value: object) -> bool:
    """True for a finite JSON number (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and abs(value) < 1e15  # a huge int would overflow float comparisons
    except OverflowError:
        return False


