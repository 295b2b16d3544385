"""The ``api_key`` adapter: ``Authorization: Bearer pk_…|sk_…|ak_…`` and the bootstrap admin key.

A credential without one of the three prefixes is not ours (None: another adapter may take it). A
prefixed one that is malformed or fails its checksum is refused without a store lookup. The stored
digest is compared in constant time. ``last_used_at`` is written at most once a minute per key.

Audited through the service's trail (when one is given): a secret or admin key presented by a browser
(``api_key.exposed``, actor ``browser``) and a key's first recorded use (``api_key.first_use``).
"""

from __future__ import annotations

import hashlib
import hmac

from token_service.apikeys import BOOTSTRAP_ID, ApiKey, digests_match, parse_key_text
from token_service.audit import Actor, AuditRecorder
from token_service.auth.base import AuthenticationFailed, AuthRequest, Principal, bearer_credentials
from token_service.clock import Clock
from token_service.stores.base import ApiKeyStore

LAST_USED_RESOLUTION = 60
_PREFIXES = ("pk_", "sk_", "ak_")
BROWSER = "browser"
"""The audit actor of a key exposed by a browser presenting it."""


class ApiKeyAdapter:
    """Authenticates the three kinds of API key and the bootstrap admin key."""

    name = "api_key"

    def __init__(self, store: ApiKeyStore, clock: Clock, bootstrap_key: str | None = None, revoke_from_browsers: bool = True,
                 audit: AuditRecorder | None = None):
        self._store = store
        self._clock = clock
        self._bootstrap = hashlib.sha256(bootstrap_key.encode()).digest() if bootstrap_key else None
        self._revoke_from_browsers = revoke_from_browsers
        self._audit = audit
        self._expired_seen: set[str] = set()  # one api_key.expired record per key and process

    def authenticate(self, request: AuthRequest) -> Principal | None:
        """See AuthAdapter.authenticate."""
        credentials = bearer_credentials(request.header("authorization"))
        if credentials is None:
            return None
        if self._bootstrap is not None and hmac.compare_digest(hashlib.sha256(credentials.encode()).digest(), self._bootstrap):
            if request.from_browser:
                if self._audit is not None:  # configuration cannot be revoked here, but the operator must know
                    self._audit("api_key.exposed", BOOTSTRAP_ID, Actor(BROWSER, request.remote_addr), "bootstrap-not-revocable")
                raise AuthenticationFailed("An admin key must never be sent from a browser.")
            return Principal(kind="admin", client_id=BOOTSTRAP_ID, subject=BOOTSTRAP_ID)
        if not credentials.startswith(_PREFIXES):
            return None
        parsed = parse_key_text(credentials)
        if parsed is None:
            raise AuthenticationFailed("The API key is malformed.")
        key = self._store.get(parsed.key_id)
        if key is None or key.type != parsed.kind or not digests_match(key.digest, parsed.digest):
            raise AuthenticationFailed("The API key is not valid.")
        now = self._clock()
        if not key.usable(now):
            if key.revoked_at is None and self._audit is not None and key.id not in self._expired_seen:
                # The first use after its expiry: the moment an operator learns that something still holds it.
                self._expired_seen.add(key.id)
                self._audit("api_key.expired", key.id, Actor("expiry", request.remote_addr), "refused")
            raise AuthenticationFailed("The API key has expired or been revoked.")
        if key.type != "public" and request.from_browser:
            # A secret or admin key in a browser is a leaked key: refuse it, and by default revoke it.
            treat_as_exposed(self._store, key, now, self._revoke_from_browsers, self._audit, request.remote_addr)
            raise AuthenticationFailed("Secret and admin keys must never be sent from a browser.")
        record_use(self._store, key, now, self._audit, request.remote_addr)
        return principal_of(key)


def treat_as_exposed(store: ApiKeyStore, key: ApiKey, now: float, revoke: bool, audit: AuditRecorder | None,
                     address: str | None) -> None:
    """API.md: a secret or admin key presented by a browser is exposed. Revoke it at once (unless the
    deployment limits this to refusing) and audit ``api_key.exposed``; the caller refuses the request."""
    if revoke:
        store.revoke(key.id, int(now))
    if audit is not None:
        audit("api_key.exposed", key.id, Actor(BROWSER, address), "revoked" if revoke else "refused-only")


def record_use(store: ApiKeyStore, key: ApiKey, now: float, audit: AuditRecorder | None = None, address: str | None = None) -> None:
    """Write ``last_used_at``, at most once a minute per key (not a store write per request); the first
    recorded use is audited as ``api_key.first_use`` (the store says which write was the first, atomically)."""
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        first = store.touch(key.id, int(now))
        if first and audit is not None:
            audit("api_key.first_use", key.id, Actor(key.id, address))


def principal_of(key: ApiKey) -> Principal:
    """The Principal an API key authenticates as."""
    if key.type == "admin":
        return Principal(kind="admin", client_id=key.id, subject=key.id)
    return Principal(
        kind=key.type,
        client_id=key.id,
        subject=None,
        personas=key.personas,
        scopes=key.scopes,
        origins=key.origins,
        permissions=key.permissions,
        may_name_sub=key.type == "secret",
    )
