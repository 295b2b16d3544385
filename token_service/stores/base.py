"""Store interfaces. Every implementation passes the contract suite in ``tests/stores/``.

Any driver failure is raised as StoreUnavailable (``from`` the driver's error) at the store boundary;
callers fail closed on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from token_service.apikeys import ApiKey
from token_service.audit_chain import AuditEvent, AuditRecord, Break, Link
from token_service.revocation import Marker, Revocation, Target
from token_service.ring import KeyTimes


class StoreUnavailable(Exception):
    """The store cannot be reached or answered in time. The message is safe to log."""


class RevocationStore(Protocol):
    """Revocation entries, shared by every instance."""

    def add(self, entry: Revocation) -> None:
        """Store ``entry`` and put it in force; when this returns, every instance sees it."""

    def lift(self, revocation_id: str) -> Revocation | None:
        """Remove an entry; return it, or None when there is no such entry in force."""

    def get(self, revocation_id: str) -> Revocation | None:
        """The entry with this id, or None (unknown, lifted or forgotten)."""

    def page(self, cursor: str | None, limit: int) -> tuple[list[Revocation], str | None]:
        """Entries in force, oldest first, ``limit`` at most, and the cursor of the next page (None at the end).

        Raises ValueError for a cursor this store did not issue.
        """

    def lookup(self, targets: Sequence[Target]) -> list[Marker | None]:
        """For each target, the strongest entry in force (newest watermark) or None; one round trip."""

    def changes(self, after: int | None) -> tuple[list[tuple[Revocation, bool]], int]:
        """The feed: ``(entry, lifted)`` pairs made or lifted after sequence number ``after`` (every entry
        in force when ``after`` is None), and the sequence number the answer is complete up to."""


class ApiKeyStore(Protocol):
    """API key records (digests only), shared by every instance."""

    def create(self, key: ApiKey) -> None:
        """Store a new key record."""

    def get(self, key_id: str) -> ApiKey | None:
        """The record with its ``last_used_at``, or None when there is no such key; one round trip."""

    def page(self, cursor: str | None, limit: int) -> tuple[list[ApiKey], str | None]:
        """Records in creation order, ``limit`` at most, and the next cursor (None at the end).

        Raises ValueError for a cursor this store did not issue.
        """

    def revoke(self, key_id: str, at: int) -> ApiKey | None:
        """Mark the key revoked at ``at`` (kept for the listing); return the record, None if unknown.

        Revoking a revoked key keeps its first ``revoked_at``.
        """

    def touch(self, key_id: str, at: int) -> bool:
        """Record that the key was used at ``at``; True when this is its first recorded use (it had no
        ``last_used_at``: decided atomically, so one caller only sees it), False otherwise or when unknown."""

    def set_expiry(self, key_id: str, expires_at: int, successor: str | None = None) -> ApiKey | None:
        """Bring the key's ``expires_at`` forward to ``expires_at``, never later than an earlier one it has
        (a key is never extended), its public origins with it, and record its ``successor`` when given
        (atomic); the updated record, None if unknown."""

    def origin_known(self, origin: str, now: float) -> bool:
        """True when a public key neither revoked nor expired at ``now`` lists ``origin`` (for CORS preflights)."""


class ReplayCache(Protocol):
    """Signatures already used, shared by every instance (a signed request is accepted once)."""

    def first_use(self, fingerprint: str, ttl: int) -> bool:
        """Record ``fingerprint`` for ``ttl`` seconds; True when it was not already recorded (atomic)."""


@dataclass(frozen=True, slots=True)
class StoredSigningKey:
    """A managed signing key as the store keeps it: its times and its private key sealed under the KEK."""

    times: KeyTimes
    sealed_private: bytes = field(repr=False)


class SigningKeyStore(Protocol):
    """The managed key ring, shared by every instance."""

    def all(self) -> list[StoredSigningKey]:
        """Every key of the ring (one round trip)."""

    def add(self, key: StoredSigningKey) -> None:
        """Add a key; ValueError when its kid is already there."""

    def update(self, kid: str, activates_at: int | None = None, revoked_at: int | None = None) -> StoredSigningKey | None:
        """Set a key's activation and/or revocation time (a revocation time, once set, is kept); None when unknown."""

    def acquire(self, name: str, ttl: int) -> bool:
        """Take the named lock for ``ttl`` seconds; False when another holder has it (no wait)."""

    def release(self, name: str) -> None:
        """Give the named lock back before its time (the holder only)."""


class RateLimitStore(Protocol):
    """Request counters, shared by every instance so that a limit holds across instances."""

    def hit(self, name: str, window: int, limit: int) -> tuple[bool, int]:
        """Count one request for ``name`` in the current ``window``-second window (fixed windows aligned on
        the store's clock) and return (allowed: at most ``limit`` requests counted in it, retry_after:
        whole seconds, at least 1, until the window ends). Counters are forgotten after their window."""


AUDIT_RETENTION = 90 * 86400
"""Seconds an audit record is kept by default (TOKEN_SERVICE_AUDIT_RETENTION)."""
AUDIT_MAX_RECORDS = 250_000
"""Audit records kept at most by default (TOKEN_SERVICE_AUDIT_MAX_RECORDS), whatever their age: about 100 MB of
Redis memory (about 385 bytes a record, measured), so that a flood of records cannot fill a noeviction Redis."""


class AuditStore(Protocol):
    """The audit log: records chained by hash (audit_chain.py), oldest first, kept for a retention period.

    Records older than the retention period, and the oldest beyond the maximum count, are trimmed when a
    record is appended; the last trimmed record becomes the anchor verification starts from."""

    def append(self, event: AuditEvent) -> AuditRecord:
        """Chain ``event`` after the newest record and store it, atomically across instances (two appends never
        link to the same record); the stored record. Raises StoreUnavailable."""

    def page(self, since: int | None, action: str | None, cursor: str | None, limit: int) -> tuple[list[AuditRecord], str | None]:
        """Records with ``at >= since`` and exactly ``action`` (None: any), oldest first, ``limit`` at most, and the
        cursor of the next page (None at the end; a page may hold fewer than ``limit`` records and a cursor when
        a filter skipped many). Raises ValueError for a cursor this store did not issue."""

    def chain(self, after: str | None, count: int) -> tuple[Link | None, Link | None, list[AuditRecord | Break]]:
        """For verification, read together (atomically): the anchor (None when nothing was trimmed), the head
        (the newest record; None when there is none), and up to ``count`` records after the id ``after``
        (from the oldest when None), each record that cannot be parsed as a Break."""


class Stores(Protocol):
    """The stores of one deployment, and a health probe."""

    revocations: RevocationStore
    api_keys: ApiKeyStore
    replays: ReplayCache
    rate_limits: RateLimitStore
    signing_keys: SigningKeyStore
    audit: AuditStore

    def ping(self) -> None:
        """Return when every store answers; raise StoreUnavailable otherwise."""

    @property
    def shared(self) -> bool:
        """True when the stores are shared by several processes (Redis), False for the embedded ones."""
