"""Use cases: mint, verify, introspect, revoke, and the admin operations. Core + stores, no Flask.

Failure policy: the revocation store and the key registry are needed for every decision here. When
either cannot be reached, a use case raises TemporarilyUnavailable (503): nothing is ever called valid
without revocation having been checked (fail closed).
"""

from __future__ import annotations

import functools
import hmac
import math
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from token_service import health
from token_service.apikeys import (
    BOOTSTRAP_ID,
    PERMISSIONS,
    ApiKey,
    KeyKind,
    digest_of,
    digests_match,
    generate_key_text,
    new_key_id,
    parse_key_text,
    seal,
)
from token_service.audit import SYSTEM_ACTOR, Actor, AuditSink, AuditTrail, LogAuditSink
from token_service.audit_chain import AuditRecord, Verification, verify_log
from token_service.auth import AuthChain, AuthenticationFailed, AuthRequest, AuthUnavailable, Principal
from token_service.claims import AccessClaims, unmet_requirement, valid_client_id, valid_jti, valid_persona_id, valid_sub
from token_service.clock import Clock
from token_service.config import ORIGIN_RE, Settings
from token_service.errors import (
    AccessDenied,
    Conflict,
    InsufficientScope,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    NotFound,
    RateLimited,
    TemporarilyUnavailable,
    Unauthorized,
    bearer_challenge,
)
from token_service.events import Events, NoEvents
from token_service.health import Readiness, RingKind
from token_service.keys import KeyRing, SigningKey
from token_service.revocation import (
    Marker,
    Revocation,
    RevocationType,
    covers,
    expiry_of,
    issue_time_after,
    mint_targets,
    new_revocation_id,
    targets_of,
)
from token_service.signing import SigningKeys
from token_service.stores.base import Stores, StoreUnavailable
from token_service.stores.cursor import decode_cursor, encode_cursor
from token_service.stores.durability import ReplicationIncomplete, confirmed_writes
from token_service.tokens import Reason, TokenCodec, Verdict

MAX_PAGE = 100
DEFAULT_PAGE = 50
DEFAULT_GRACE = 86400
"""Seconds an API key keeps working after its rotation when the request names no grace_seconds."""
MAX_GRACE = 30 * 86400
MAX_REPORTED_KEYS = 100
REPORT_LIMIT = 10
"""Exposure reports a client address may make per REPORT_WINDOW seconds (API.md)."""
REPORT_WINDOW = 60
ANONYMOUS = "anonymous"
"""The audit actor of a refused admin call that presented no valid credential."""
REPORTER = "report"
"""The audit actor of a key revoked because someone reported it exposed."""


AUDIT_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
_MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z


def audit_filters(since: str | None, action: str | None) -> tuple[int | None, str | None]:
    """The audit log's filters parsed: ``since`` (Unix seconds, or RFC 3339 with its offset, rounded up to the
    second) and ``action`` (a dotted name); InvalidRequest when malformed. Empty means no filter."""
    at: int | None = None
    if since:
        if since.isascii() and since.isdigit() and len(since) <= 12 and int(since) <= _MAX_TIME:
            at = int(since)
        elif since.isascii() and len(since) <= 40 and "T" in since.upper():
            try:
                moment = datetime.fromisoformat(since)
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is not None:
                at = max(0, math.ceil(moment.timestamp()))
        if at is None:
            raise InvalidRequest("since must be a Unix time in seconds or an RFC 3339 time with its offset, like 2026-12-04T22:00:00Z.")
    if action and (len(action) > 64 or not AUDIT_ACTION_RE.match(action)):
        raise InvalidRequest("action must be a dotted name like api_key.create (lower case, at most 64 characters).")
    return at, action or None


@dataclass(frozen=True, slots=True)
class Minted:
    """A new token and what the client is told about it."""

    token: str
    claims: AccessClaims
    ttl: int


def _unavailable(exc: StoreUnavailable) -> TemporarilyUnavailable:
    if isinstance(exc, ReplicationIncomplete):
        return TemporarilyUnavailable(
            "The change is in force on the primary store, but fewer of its replicas than required confirmed it in time "
            "(it was not undone): a failover now could lose it; check the replicas, then retry or list to confirm."
        )
    return TemporarilyUnavailable("The revocation and key store cannot be reached; retry shortly.")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _confirmed(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """A use case whose writes must not be lost: with TOKEN_SERVICE_REDIS_WAIT_REPLICAS set, it does every step,
    then answers 503 when a write of it was not acknowledged by enough replicas (see stores/durability.py)."""

    @functools.wraps(method)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            with confirmed_writes():
                return method(*args, **kwargs)
        except ReplicationIncomplete as exc:
            raise _unavailable(exc) from None

    return run


class TokenService:
    """The service's use cases over the key ring, the codec, the stores and the auth chain."""

    def __init__(self, settings: Settings, stores: Stores, keys: SigningKeys, chain: AuthChain, clock: Clock,
                 audit: AuditSink | None = None):
        self.settings = settings
        self.audit = audit or LogAuditSink()
        self.trail = AuditTrail(self.audit, clock)
        self._bootstrap_digest = digest_of(settings.admin_key) if settings.admin_key else None
        self.stores = stores
        self.keys = keys
        self.chain = chain
        self.clock = clock
        self.codec = TokenCodec(settings.issuer, settings.audience, settings.clock_skew, settings.verify_cache_size)
        self.events: Events = NoEvents()
        """Told who authenticated, each token's verdict and each revocation (the request log and metrics)."""

    @property
    def ring(self) -> KeyRing:
        """The key ring at this moment."""
        return self.keys.ring()

    def record(self, action: str, target: str | None, actor: Actor = SYSTEM_ACTOR, outcome: str = "ok") -> None:
        """Write one audit record (never a secret: ``target`` is an id)."""
        self.trail.record(action, target, actor, outcome)

    # -- authentication -------------------------------------------------------------------------

    def authenticate(self, request: AuthRequest, users: bool = True) -> Principal:
        """The caller's Principal; Unauthorized (401) when there is none or it is bad. ``users=False``
        where end users can never be allowed (adapters that only authenticate users are skipped)."""
        try:
            principal = self.chain.authenticate(request, users)
        except AuthenticationFailed as exc:
            self.events.authentication_failed(exc.adapter or "unknown", "invalid_credential")
            raise Unauthorized(exc.description, headers=self.challenge(error="invalid_token", description=exc.description)) from None
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        except AuthUnavailable as exc:
            self.events.authentication_failed(exc.adapter or "unknown", "unavailable")
            raise TemporarilyUnavailable("The credential cannot be checked right now; retry shortly.") from None
        if principal is None:
            self.events.authentication_failed("none", "missing")
            raise Unauthorized("Authentication is required.", headers=self.challenge())
        self.events.authenticated(principal.kind, principal.client_id)
        return principal

    def challenge(self, error: str | None = None, description: str | None = None, scope: str | None = None) -> dict[str, str]:
        """The ``WWW-Authenticate`` header of a refusal (RFC 6750 §3)."""
        return bearer_challenge(self.settings.issuer, error, description, scope)

    def require_admin(self, request: AuthRequest, route: str | None = None) -> Principal:
        """The admin Principal of the request; 401 unauthenticated, 403 for a non-admin credential. Each refusal
        is audited as ``auth.refused`` on ``route`` (the route template: never the credential)."""
        try:
            principal = self.authenticate(request, users=False)
        except Unauthorized:
            self.record("auth.refused", route, Actor(ANONYMOUS, request.remote_addr), "unauthenticated")
            raise
        if not principal.is_admin:
            self.record("auth.refused", route, Actor(principal.client_id, request.remote_addr), "not-admin")
            raise AccessDenied("This endpoint needs an admin key.")
        return principal

    # -- minting --------------------------------------------------------------------------------

    def mint(self, principal: Principal, persona_id: str, scopes: Sequence[str] | None, ttl: int | None,
             sub: str | None, origin: str | None) -> Minted:
        """Mint a token for ``principal``; the checks follow API.md's order of errors."""
        if principal.is_admin:
            raise AccessDenied("Admin keys cannot mint tokens.")
        if principal.kind == "public" and (origin is None or origin not in principal.origins):
            raise AccessDenied("This public key may not be used from this origin.")
        if principal.may_name_sub and sub is None:
            raise InvalidRequest("sub is required for secret keys: name the user the token is for.")
        if not principal.may_name_sub and sub is not None:
            raise InvalidRequest("sub may only be given by secret keys and signed requests.")
        requested = tuple(dict.fromkeys(scopes)) if scopes is not None else self.settings.default_scopes
        unknown = [s for s in requested if s not in self.settings.scopes]
        if unknown:
            raise InvalidScope(f"Unknown scope: {unknown[0]}.")
        lifetime = self.settings.max_ttl if ttl is None else ttl
        if not 1 <= lifetime <= self.settings.max_ttl:
            raise InvalidRequest(f"ttl must be from 1 to {self.settings.max_ttl} seconds.")
        if not principal.allows_persona(persona_id):
            raise AccessDenied("This credential may not mint tokens for this persona.")
        refused = [s for s in requested if s not in principal.scopes]
        if refused:
            raise AccessDenied(f"This credential may not grant the scope {refused[0]}.")
        subject = sub or principal.subject or f"anon:{secrets.token_urlsafe(16)}"
        key, markers = self._signer_and_watermarks(subject, persona_id, principal.client_id)
        iat = issue_time_after(int(self.clock()), markers)
        claims = AccessClaims(
            iss=self.settings.issuer, aud=self.settings.audience, sub=subject, persona_id=persona_id, scopes=requested,
            iat=iat, nbf=iat, exp=iat + lifetime, jti=str(uuid.uuid4()), client_id=principal.client_id,
        )
        return Minted(token=self.codec.encode(claims, key), claims=claims, ttl=lifetime)

    def _signer_and_watermarks(self, subject: str, persona_id: str, client_id: str) -> tuple[SigningKey, list[Marker | None]]:
        """The signing key and the new token's watermarks, in one store round trip; when another instance
        has revoked the signer, the ring is re-read once (a managed ring has promoted a successor)."""
        ring = self.ring
        for attempt in range(2):
            key = ring.signing
            if key is not None:
                try:
                    markers = self.stores.revocations.lookup((*mint_targets(subject, persona_id, client_id), ("kid", key.kid)))
                except StoreUnavailable as exc:
                    raise _unavailable(exc) from None
                if markers[-1] is None:
                    return key, markers[:-1]
            if attempt == 1 or not self.keys.managed:
                break
            ring = self.keys.refresh()  # another instance may have promoted a successor
            if ring.signing is None or (key is not None and ring.signing.kid == key.kid):
                try:  # nobody did (a revocation was interrupted, or this ring has no signer): repair it
                    self.keys.ensure_signer()
                except StoreUnavailable as exc:
                    raise _unavailable(exc) from None
                ring = self.keys.refresh(force=True)
        if self.keys.managed:
            raise TemporarilyUnavailable("The signing key has been revoked and no successor is available yet; retry shortly.")
        raise TemporarilyUnavailable(
            "The signing key has been revoked; replace TOKEN_SERVICE_SIGNING_KEY_FILE and restart the instances."
        )

    # -- verification ---------------------------------------------------------------------------

    def _inspect_signature(self, token: str, use_cache: bool = True) -> Verdict:
        """The codec's verdict; a kid this instance does not know yet re-reads a managed ring once (a key
        promoted on another instance after a compromise signs at once)."""
        verdict = self.codec.inspect(token, self.ring, self.clock(), use_cache)
        if self.keys.managed and verdict.reasons and verdict.reasons[0].code == "unknown_key":
            verdict = self.codec.inspect(token, self.keys.refresh(), self.clock(), use_cache)
        return verdict

    def inspect(self, token: str) -> Verdict:
        """The full verdict on a token, revocation entries included (for operators); raises StoreUnavailable.
        Never from the verify cache: operators get every reason from a full check."""
        verdict = self._inspect_signature(token, use_cache=False)
        kid = (verdict.header or {}).get("kid")
        if not isinstance(kid, str) or self.ring.get(kid) is None:
            return verdict  # malformed or unknown key: there is nothing to look up
        targets = targets_of(verdict.claims, kid) if verdict.claims is not None else (("kid", kid),)
        reasons = list(verdict.reasons)
        for target, marker in zip(targets, self.stores.revocations.lookup(targets), strict=True):
            if marker is None:
                continue
            if target[0] == "kid":
                reasons.insert(0, Reason("key_revoked", "The key that signed the token has been revoked.", marker.revocation_id))
            elif verdict.claims is not None and covers(target, marker, verdict.claims):
                reasons.append(Reason("revoked", f"The token has been revoked (by {target[0]}).", marker.revocation_id))
        return Verdict(verdict.header, verdict.claims, tuple(reasons), verdict.raw_claims)

    def verify(self, token: str) -> AccessClaims:
        """The claims of a token that is valid and not revoked; InvalidToken or TemporarilyUnavailable otherwise."""
        verdict = self._inspect_signature(token)
        if verdict.reasons or verdict.claims is None:
            self.events.token_checked(verdict.reasons[0].code)
            raise self._invalid(verdict.reasons[0].detail)
        claims = verdict.claims
        targets = targets_of(claims, verdict.header["kid"] if verdict.header else "")
        try:
            markers = self.stores.revocations.lookup(targets)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        for target, marker in zip(targets, markers, strict=True):
            if marker is not None and covers(target, marker, claims):
                self.events.token_checked("key_revoked" if target[0] == "kid" else "revoked")
                raise self._invalid("The token has been revoked.")
        self.events.token_checked("valid")
        return claims

    def _invalid(self, description: str) -> InvalidToken:
        return InvalidToken(description, headers=self.challenge("invalid_token", description))

    def check_requirements(self, claims: AccessClaims, persona_id: str | None, scopes: Sequence[str]) -> None:
        """InsufficientScope when the token is not bound to ``persona_id`` or lacks one of ``scopes``."""
        description = unmet_requirement(claims, persona_id, scopes)
        if description is not None:
            scope_text = " ".join(scopes) or None
            raise InsufficientScope(description, headers=self.challenge("insufficient_scope", description, scope_text))

    def require_introspect(self, principal: Principal) -> None:
        """AccessDenied unless the principal may introspect (admin keys, secret keys granted introspect)."""
        if not principal.can_introspect():
            raise AccessDenied("This credential is not granted introspect.")

    def introspect(self, principal: Principal, token: str) -> dict[str, Any]:
        """RFC 7662 answer for ``token``: its claims when active, exactly ``{"active": false}`` otherwise."""
        self.require_introspect(principal)
        try:
            claims = self.verify(token)
        except InvalidToken:
            return {"active": False}
        return {"active": True, **claims.to_dict(), "token_type": "Bearer"}

    # -- revocation -----------------------------------------------------------------------------

    @_confirmed
    def revoke_own(self, token: str) -> None:
        """RFC 7009: revoke a token its holder presents; a token that is not valid is ignored."""
        try:
            claims = self.verify(token)
        except InvalidToken:
            return
        now = int(self.clock())
        entry = Revocation(
            id=new_revocation_id(("jti", claims.jti)), type="jti", value=claims.jti, reason="revoked by its holder", revoked_at=now,
            expires_at=expiry_of("jti", now, self.settings.revocation_horizon, claims.exp, self.settings.clock_skew),
        )
        self._store_revocation(entry)
        self.events.revoked("jti", "holder")

    @_confirmed
    def revoke(self, rtype: str, value: Any, reason: Any, actor: Actor = SYSTEM_ACTOR) -> Revocation:
        """Admin revocation of one target; see API.md for what each type covers."""
        if reason is not None and (not isinstance(reason, str) or len(reason) > 256):
            raise InvalidRequest("reason must be a string of at most 256 characters, or null.")
        now = int(self.clock())
        token_exp: int | None = None
        kind: RevocationType
        if rtype == "token":
            if not isinstance(value, str):
                raise InvalidRequest("token must be a string.")
            verdict = self.codec.inspect(value, self.ring, now, use_cache=False)
            if verdict.claims is None:
                raise InvalidRequest("token is not a token this service issued (its signature does not verify).")
            kind, value, token_exp = "jti", verdict.claims.jti, verdict.claims.exp
        elif rtype == "jti":
            if not valid_jti(value):
                raise InvalidRequest("jti must be 1 to 256 visible ASCII characters.")
            kind = "jti"
        elif rtype == "sub":
            if not valid_sub(value):
                raise InvalidRequest("sub must be 1 to 256 visible ASCII characters.")
            kind = "sub"
        elif rtype == "personaId":
            if not valid_persona_id(value):
                raise InvalidRequest("personaId must be 1 to 128 characters of A-Z a-z 0-9 . _ : -.")
            kind = "personaId"
        elif rtype == "client_id":
            if not valid_client_id(value):
                raise InvalidRequest("client_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -.")
            kind = "client_id"
        else:
            if not isinstance(value, str) or not value:
                raise InvalidRequest("kid must be a non-empty string.")
            if self.ring.get(value) is None and self.keys.refresh().get(value) is None:
                raise NotFound("No signing key has this kid.")
            kind = "kid"
        entry = Revocation(
            id=new_revocation_id((kind, value)), type=kind, value=value, reason=reason, revoked_at=now,
            expires_at=expiry_of(kind, now, self.settings.revocation_horizon, token_exp, self.settings.clock_skew),
        )
        self._store_revocation(entry)
        self.events.revoked(entry.type, "admin")
        self.record("revocation.create", f"{entry.id} {entry.type}", actor)
        if kind == "kid":
            self._take_key_out_of_service(value, actor)
        return entry

    def _take_key_out_of_service(self, kid: str, actor: Actor) -> None:
        before = self.keys.ring().signing_kid
        try:
            self.keys.revoke(kid)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        after = self.keys.ring().signing_kid
        self.record("signing_key.revoke", kid, actor)
        if after is not None and after != before:
            self.record("signing_key.stage", f"{after} current", actor)

    def signing_keys(self) -> list[dict[str, object]]:
        """The ring for the operator: every key with its status and times."""
        states = self.keys.states(fresh=True)  # what the store holds now, not this instance's copy
        revoked = self.revoked_kids()
        entries = []
        for state in states:
            entry = state.to_dict()
            if state.times.kid in revoked:
                entry["status"] = "revoked"
            entries.append(entry)
        return entries

    @_confirmed
    def rotate_signing_key(self, actor: Actor = SYSTEM_ACTOR) -> dict[str, object]:
        """Stage a new signing key (status next); it signs once every verifier could have seen it."""
        try:
            state = self.keys.rotate()
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        self.record("signing_key.rotate", state.times.kid, actor)
        return state.to_dict()

    def jwks_max_age(self) -> int:
        """The JWKS max-age now: shortened as a stage change of the ring approaches."""
        try:
            return self.keys.max_age(self.settings.jwks_max_age)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None

    def _store_revocation(self, entry: Revocation) -> None:
        try:
            self.stores.revocations.add(entry)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None

    def list_revocations(self, cursor: str | None, limit: int) -> tuple[list[Revocation], str | None]:
        """A page of the revocations in force."""
        try:
            return self.stores.revocations.page(cursor, limit)
        except ValueError:
            raise InvalidRequest("cursor is not one this service issued.") from None
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None

    @_confirmed
    def lift_revocation(self, revocation_id: str, actor: Actor = SYSTEM_ACTOR) -> None:
        """Lift a revocation made by mistake; NotFound when there is none in force with this id. A signing
        key taken out of a managed ring stays out (Conflict): its successor signs, and trusting the
        compromised key again would accept tokens forged with it."""
        try:
            entry = self.stores.revocations.get(revocation_id)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        if entry is not None and entry.type == "kid" and self.keys.managed:
            raise Conflict("A revoked signing key cannot be restored: its successor signs. Rotate if another key is wanted.")
        try:
            lifted = self.stores.revocations.lift(revocation_id)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        if lifted is None:
            raise NotFound("No revocation in force has this id.")
        self.record("revocation.lift", f"{lifted.id} {lifted.type}", actor)

    def revocation_feed(self, principal: Principal, since: str | None) -> dict[str, Any]:
        """``GET /v1/revocations/feed``: every revocation in force (no ``since``), or those made or lifted
        after the cursor ``since``; with the next cursor and the time the answer is complete up to."""
        self.require_introspect(principal)
        try:
            after = None if since is None else decode_cursor(since)
        except ValueError:
            raise InvalidRequest("since is not a cursor this service issued.") from None
        try:
            changes, seq = self.stores.revocations.changes(after)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        items = [{**entry.to_dict(), "lifted": lifted} for entry, lifted in changes]
        for item in items:
            item.pop("reason", None)  # the feed carries what a verifier needs, not the operator's notes
        return {"items": items, "next_cursor": encode_cursor(seq), "complete_as_of": int(self.clock())}

    def revoked_kids(self) -> frozenset[str]:
        """The kids of the ring that have been revoked (one store round trip)."""
        kids = [key.kid for key in self.ring.keys]
        try:
            markers = self.stores.revocations.lookup([("kid", kid) for kid in kids])
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        return frozenset(kid for kid, marker in zip(kids, markers, strict=True) if marker is not None)

    # -- API keys -------------------------------------------------------------------------------

    def create_api_key(self, body: dict[str, Any], actor: Actor = SYSTEM_ACTOR) -> tuple[ApiKey, str]:
        """Create a key from a validated admin request body; return its record and its text (shown once)."""
        kind = body.get("type")
        if kind not in ("public", "secret", "admin"):
            raise InvalidRequest("type must be public, secret or admin.")
        key_kind: KeyKind = kind
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 128 or not name.isprintable()):
            raise InvalidRequest("name must be 1 to 128 printable characters, or null.")
        personas = _string_list(body, "personas")
        scopes = _string_list(body, "scopes")
        origins = _string_list(body, "origins")
        permissions = _string_list(body, "permissions")
        if key_kind == "admin":
            for field_name, values in (("personas", personas), ("scopes", scopes), ("origins", origins), ("permissions", permissions)):
                if values:
                    raise InvalidRequest(f"{field_name} does not apply to admin keys.")
            personas, scopes = (), ()
        else:
            if personas is None or not personas:
                raise InvalidRequest("personas is required: a list of personaIds, or [\"*\"] for all.")
            for persona in personas:
                if persona != "*" and not valid_persona_id(persona):
                    raise InvalidRequest(f"personas: {persona[:64]!r} is not a valid personaId.")
            if "*" in personas and len(personas) > 1:
                raise InvalidRequest('personas: ["*"] stands alone.')
            scopes = self.settings.default_scopes if scopes is None else scopes
            unknown = [s for s in scopes if s not in self.settings.scopes]
            if unknown:
                raise InvalidScope(f"Unknown scope: {unknown[0][:64]}.")
        if key_kind == "public":
            if not origins:
                raise InvalidRequest("origins is required for public keys: the exact origins allowed to use it.")
            for origin in origins:
                if not ORIGIN_RE.match(origin):
                    raise InvalidRequest(f"origins: {origin[:64]!r} is not an origin like https://chat.example.com.")
        elif origins:
            raise InvalidRequest("origins applies to public keys only.")
        if permissions:
            if key_kind != "secret":
                raise InvalidRequest("permissions applies to secret keys only.")
            unknown = [p for p in permissions if p not in PERMISSIONS]
            if unknown:
                raise InvalidRequest(f"permissions: unknown permission {unknown[0][:64]!r}.")
        now = int(self.clock())
        expires_at = body.get("expires_at")
        if expires_at is not None and (not isinstance(expires_at, int) or isinstance(expires_at, bool) or expires_at <= now):
            raise InvalidRequest("expires_at must be a future Unix time in seconds, or null.")
        template = ApiKey(
            id="", type=key_kind, name=name, personas=tuple(dict.fromkeys(personas or ())),
            scopes=tuple(dict.fromkeys(scopes or ())), origins=tuple(dict.fromkeys(origins or ())),
            permissions=tuple(dict.fromkeys(permissions or ())), created_at=now, expires_at=expires_at, digest=b"",
        )
        try:
            record, text = self._store_new_key(template)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        self.record("api_key.create", f"{record.id} {record.type}", actor)
        return record, text

    def _store_new_key(self, template: ApiKey) -> tuple[ApiKey, str]:
        """Store a new key with ``template``'s settings under a fresh id and text (sealed under the KEK when
        one is configured and the key is a secret key); its record and text. Raises StoreUnavailable."""
        key_id = new_key_id()
        text = generate_key_text(template.type, key_id)
        kek = self.settings.key_encryption_key
        record = replace(
            template, id=key_id, digest=digest_of(text), revoked_at=None, last_used_at=None,
            sealed=seal(text, kek, key_id) if kek is not None and template.type == "secret" else None,
        )
        self.stores.api_keys.create(record)
        return record, text

    def list_audit(self, since: str | None, action: str | None, cursor: str | None, limit: int) -> tuple[list[AuditRecord], str | None]:
        """A page of the audit log, oldest first: ``since`` a time (Unix seconds or RFC 3339 with its offset),
        ``action`` an exact dotted name; InvalidRequest for either malformed, or for a foreign cursor."""
        at, wanted = audit_filters(since, action)
        try:
            return self.stores.audit.page(at, wanted, cursor, limit)
        except ValueError:
            raise InvalidRequest("cursor is not one this service issued.") from None
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None

    def verify_audit(self) -> Verification:
        """Check the audit log's hash chain from its anchor to its head (audit_chain.verify_log)."""
        try:
            return verify_log(self.stores.audit.chain)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None

    def list_api_keys(self, cursor: str | None, limit: int) -> tuple[list[ApiKey], str | None]:
        """A page of key records (metadata only is ever shown)."""
        try:
            return self.stores.api_keys.page(cursor, limit)
        except ValueError:
            raise InvalidRequest("cursor is not one this service issued.") from None
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None

    @_confirmed
    def delete_api_key(self, key_id: str, revoke_tokens: bool, actor: Actor = SYSTEM_ACTOR) -> None:
        """Revoke a key at once; with ``revoke_tokens`` every token it minted is refused too."""
        if key_id == BOOTSTRAP_ID:
            raise Conflict("The bootstrap key is configuration: unset TOKEN_SERVICE_ADMIN_KEY and restart to remove it.")
        try:
            key = self.stores.api_keys.revoke(key_id, int(self.clock()))
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        if key is None:
            raise NotFound("No API key has this id.")
        self.record("api_key.revoke", key_id, actor)
        if revoke_tokens:
            self.revoke("client_id", key_id, "API key deleted with revoke_tokens", actor)

    @_confirmed
    def rotate_api_key(self, key_id: str, body: dict[str, Any], actor: Actor = SYSTEM_ACTOR) -> tuple[ApiKey, str]:
        """A new key with the old one's settings (``rotated_from`` it); the old one expires after the grace
        period (never later than it already would). Its record and text (shown once)."""
        grace = body.get("grace_seconds", DEFAULT_GRACE)
        if not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= MAX_GRACE:
            raise InvalidRequest(f"grace_seconds must be a whole number of seconds from 0 to {MAX_GRACE} (30 days).")
        if key_id == BOOTSTRAP_ID:
            raise Conflict("The bootstrap key is configuration: set a new TOKEN_SERVICE_ADMIN_KEY and restart to change it.")
        now = self.clock()
        try:
            old = self.stores.api_keys.get(key_id)
            if old is None:
                raise NotFound("No API key has this id.")
            if not old.usable(now):
                raise Conflict("This key is revoked or expired: create a new key instead of rotating it.")
            if old.rotated_to is not None:
                # Its expiry is already the grace's end; a second successor would inherit that short expiry.
                raise Conflict(f"This key was already rotated to {old.rotated_to}: rotate that key instead.")
            template = replace(old, created_at=int(now), rotated_from=old.id, rotated_to=None)
            record, text = self._store_new_key(template)
            self.stores.api_keys.set_expiry(old.id, int(now) + grace, successor=record.id)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        self.record("api_key.rotate", f"{old.id} -> {record.id}", actor)
        return record, text

    def check_report_rate(self, address: str | None) -> None:
        """RateLimited (429 with Retry-After) past REPORT_LIMIT exposure reports a window from one address."""
        try:
            allowed, retry_after = self.stores.rate_limits.hit(f"exposed:{address or '-'}", REPORT_WINDOW, REPORT_LIMIT)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        if not allowed:
            raise RateLimited(f"At most {REPORT_LIMIT} reports a minute from one address; retry later.",
                              headers={"Retry-After": str(retry_after)})

    @_confirmed
    def report_exposed(self, keys: Any, address: str | None) -> int:
        """Revoke every live secret or admin key whose full text is listed; the number revoked.

        Public keys are meant to be seen (ignored). The bootstrap key is configuration: not revoked, but the
        report is audited. Texts that are malformed or match nothing are ignored without a word, so the
        answer never tells which keys exist. Tokens the revoked keys minted stay valid (API.md)."""
        if (not isinstance(keys, list) or not 1 <= len(keys) <= MAX_REPORTED_KEYS
                or not all(isinstance(text, str) for text in keys)):
            raise InvalidRequest(f"keys must be a list of 1 to {MAX_REPORTED_KEYS} key texts.")
        reporter = Actor(REPORTER, address)
        now = self.clock()
        revoked = 0
        try:
            for text in dict.fromkeys(keys):  # a key listed twice counts once
                if self._bootstrap_digest is not None and hmac.compare_digest(digest_of(text), self._bootstrap_digest):
                    self.record("api_key.exposed", BOOTSTRAP_ID, reporter, "bootstrap-not-revocable")
                    continue
                parsed = parse_key_text(text)
                if parsed is None or parsed.kind == "public":
                    continue
                key = self.stores.api_keys.get(parsed.key_id)
                if key is None or key.type != parsed.kind or not digests_match(key.digest, parsed.digest) or not key.usable(now):
                    continue
                self.stores.api_keys.revoke(key.id, int(now))
                self.record("api_key.exposed", key.id, reporter, "revoked")
                revoked += 1
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        return revoked

    def origin_allowed(self, origin: str) -> bool:
        """True when CORS may answer ``origin``: configured, or listed by a live public key."""
        if origin in self.settings.cors_origins:
            return True
        try:
            return self.stores.api_keys.origin_known(origin, self.clock())
        except StoreUnavailable:
            return False

    def cookie_credentials_allowed(self, origin: str) -> bool:
        """True when CORS may allow credentials (cookies) for ``origin``: the session adapter is on and
        the origin is one of TOKEN_SERVICE_CORS_ORIGINS."""
        return "session" in self.settings.auth_adapters and origin in self.settings.cors_origins

    # -- discovery and health -------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        """The JWKS: every key of the ring that has not been revoked. Read from the store now: a cached copy could
        miss a key staged or promoted elsewhere, and gateways keep this answer for its max-age."""
        try:
            self.keys.states(fresh=True)
        except StoreUnavailable as exc:
            raise _unavailable(exc) from None
        return self.ring.jwks(exclude=self.revoked_kids())

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        base = self.settings.issuer
        return {
            "issuer": base,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "token_endpoint": f"{base}/v1/tokens",
            "introspection_endpoint": f"{base}/v1/introspect",
            "revocation_endpoint": f"{base}/v1/revoke",
            "scopes_supported": list(self.settings.scopes),
            "token_endpoint_auth_methods_supported": ["bearer"],
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": [],
            "grant_types_supported": [],
        }

    def readiness(self) -> Readiness:
        """Every readiness check (the store, the signing key), with the reasons when one fails (token_service.health)."""
        kind: RingKind = "managed" if self.settings.key_encryption_key else "directory" if self.settings.signing_key_dir else "static"
        return health.check(self.stores, self.keys, kind, self.clock, self.settings.signing_key_rotation)


def _string_list(body: dict[str, Any], name: str) -> tuple[str, ...] | None:
    if name not in body:
        return None
    value = body[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 100:
        raise InvalidRequest(f"{name} must be a list of at most 100 strings.")
    return tuple(value)
