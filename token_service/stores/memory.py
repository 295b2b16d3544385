"""Embedded stores: one process only (the development default). Entries expire lazily against the
injected clock; no timer threads. A lock makes them safe under threaded servers."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from token_service.apikeys import ApiKey
from token_service.audit_chain import GENESIS, AuditEvent, AuditRecord, Break, Link, chained
from token_service.clock import Clock
from token_service.revocation import Marker, Revocation, Target
from token_service.stores.base import (
    AUDIT_MAX_RECORDS,
    AUDIT_RETENTION,
    ApiKeyStore,
    AuditStore,
    RateLimitStore,
    ReplayCache,
    RevocationStore,
    SigningKeyStore,
    StoredSigningKey,
)
from token_service.stores.cursor import decode_cursor, decode_id_cursor, encode_cursor, encode_id_cursor


class MemoryRevocationStore:
    """RevocationStore in a dict."""

    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, Revocation]] = {}
        self._by_target: dict[Target, set[str]] = {}
        self._lifted: list[tuple[int, Revocation]] = []
        self._seq = 0

    def _live(self, entry: Revocation) -> bool:
        return entry.expires_at is None or entry.expires_at > self._clock()

    def _prune(self) -> None:
        for rid, (_, entry) in list(self._entries.items()):
            if not self._live(entry):
                self._remove(rid)

    def _remove(self, rid: str) -> Revocation | None:
        found = self._entries.pop(rid, None)
        if found is None:
            return None
        entry = found[1]
        ids = self._by_target.get((entry.type, entry.value))
        if ids is not None:
            ids.discard(rid)
            if not ids:
                del self._by_target[(entry.type, entry.value)]
        return entry

    def add(self, entry: Revocation) -> None:
        """See RevocationStore.add."""
        with self._lock:
            self._prune()
            self._seq += 1
            self._entries[entry.id] = (self._seq, entry)
            self._by_target.setdefault((entry.type, entry.value), set()).add(entry.id)

    def lift(self, revocation_id: str) -> Revocation | None:
        """See RevocationStore.lift."""
        with self._lock:
            found = self._entries.get(revocation_id)
            if found is None or not self._live(found[1]):
                return None
            self._lifted = [(seq, e) for seq, e in self._lifted if self._live(e)]
            self._seq += 1
            self._lifted.append((self._seq, found[1]))
            return self._remove(revocation_id)

    def changes(self, after: int | None) -> tuple[list[tuple[Revocation, bool]], int]:
        """See RevocationStore.changes."""
        with self._lock:
            since = after or 0
            made = sorted((pair for pair in self._entries.values() if pair[0] > since and self._live(pair[1])), key=lambda p: p[0])
            items = [(entry, False) for _, entry in made]
            if after is not None:
                items += [(entry, True) for seq, entry in self._lifted if seq > since and self._live(entry)]
            return items, self._seq

    def get(self, revocation_id: str) -> Revocation | None:
        """See RevocationStore.get."""
        with self._lock:
            found = self._entries.get(revocation_id)
            return found[1] if found is not None and self._live(found[1]) else None

    def page(self, cursor: str | None, limit: int) -> tuple[list[Revocation], str | None]:
        """See RevocationStore.page."""
        after = decode_cursor(cursor)
        with self._lock:
            self._prune()
            ordered = sorted((pair for pair in self._entries.values() if pair[0] > after), key=lambda pair: pair[0])
        page = ordered[:limit]
        next_cursor = encode_cursor(page[-1][0]) if len(ordered) > limit else None
        return [entry for _, entry in page], next_cursor

    def lookup(self, targets: Sequence[Target]) -> list[Marker | None]:
        """See RevocationStore.lookup."""
        result: list[Marker | None] = []
        with self._lock:
            for target in targets:
                best: Marker | None = None
                for rid in self._by_target.get(target, ()):
                    entry = self._entries[rid][1]
                    if self._live(entry) and (best is None or entry.revoked_at > best.revoked_at):
                        best = Marker(entry.id, entry.revoked_at)
                result.append(best)
        return result


class MemoryApiKeyStore:
    """ApiKeyStore in a dict."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[int, ApiKey]] = {}
        self._seq = 0

    def create(self, key: ApiKey) -> None:
        """See ApiKeyStore.create."""
        with self._lock:
            if key.id in self._keys:
                raise ValueError("duplicate key id")
            self._seq += 1
            self._keys[key.id] = (self._seq, key)

    def get(self, key_id: str) -> ApiKey | None:
        """See ApiKeyStore.get."""
        with self._lock:
            found = self._keys.get(key_id)
            return found[1] if found else None

    def page(self, cursor: str | None, limit: int) -> tuple[list[ApiKey], str | None]:
        """See ApiKeyStore.page."""
        after = decode_cursor(cursor)
        with self._lock:
            ordered = sorted((pair for pair in self._keys.values() if pair[0] > after), key=lambda pair: pair[0])
        page = ordered[:limit]
        next_cursor = encode_cursor(page[-1][0]) if len(ordered) > limit else None
        return [key for _, key in page], next_cursor

    def revoke(self, key_id: str, at: int) -> ApiKey | None:
        """See ApiKeyStore.revoke."""
        with self._lock:
            found = self._keys.get(key_id)
            if found is None:
                return None
            seq, key = found
            if key.revoked_at is None:
                key = replace(key, revoked_at=at)
                self._keys[key_id] = (seq, key)
            return key

    def touch(self, key_id: str, at: int) -> bool:
        """See ApiKeyStore.touch."""
        with self._lock:
            found = self._keys.get(key_id)
            if found is None:
                return False
            self._keys[key_id] = (found[0], found[1].with_last_used(at))
            return found[1].last_used_at is None

    def set_expiry(self, key_id: str, expires_at: int, successor: str | None = None) -> ApiKey | None:
        """See ApiKeyStore.set_expiry (origin_known reads the records, so the origins follow)."""
        with self._lock:
            found = self._keys.get(key_id)
            if found is None:
                return None
            seq, key = found
            if key.expires_at is None or expires_at < key.expires_at:
                key = replace(key, expires_at=expires_at)
            if successor is not None:
                key = replace(key, rotated_to=successor)
            self._keys[key_id] = (seq, key)
            return key

    def origin_known(self, origin: str, now: float) -> bool:
        """See ApiKeyStore.origin_known."""
        with self._lock:
            return any(key.type == "public" and key.usable(now) and origin in key.origins for _, key in self._keys.values())


class MemoryReplayCache:
    """ReplayCache in a dict, pruned lazily against the clock."""

    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def first_use(self, fingerprint: str, ttl: int) -> bool:
        """See ReplayCache.first_use."""
        now = self._clock()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: until for k, until in self._seen.items() if until > now}
            until = self._seen.get(fingerprint)
            if until is not None and until > now:
                return False
            self._seen[fingerprint] = now + max(1, ttl)
            return True


class MemorySigningKeyStore:
    """SigningKeyStore in a dict; locks expire against the clock."""

    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, StoredSigningKey] = {}
        self._locks: dict[str, float] = {}

    def all(self) -> list[StoredSigningKey]:
        """See SigningKeyStore.all."""
        with self._lock:
            return list(self._keys.values())

    def add(self, key: StoredSigningKey) -> None:
        """See SigningKeyStore.add."""
        with self._lock:
            if key.times.kid in self._keys:
                raise ValueError("duplicate kid")
            self._keys[key.times.kid] = key

    def update(self, kid: str, activates_at: int | None = None, revoked_at: int | None = None) -> StoredSigningKey | None:
        """See SigningKeyStore.update."""
        with self._lock:
            found = self._keys.get(kid)
            if found is None:
                return None
            times = found.times
            if activates_at is not None:
                times = replace(times, activates_at=activates_at)
            if revoked_at is not None and times.revoked_at is None:
                times = replace(times, revoked_at=revoked_at)
            self._keys[kid] = replace(found, times=times)
            return self._keys[kid]

    def acquire(self, name: str, ttl: int) -> bool:
        """See SigningKeyStore.acquire."""
        now = self._clock()
        with self._lock:
            if self._locks.get(name, 0) > now:
                return False
            self._locks[name] = now + ttl
            return True

    def release(self, name: str) -> None:
        """See SigningKeyStore.release."""
        with self._lock:
            self._locks.pop(name, None)


class MemoryRateLimitStore:
    """RateLimitStore in a dict of fixed-window counters, forgotten lazily against the clock."""

    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int, int], int] = {}  # (name, window, window number) -> count

    def hit(self, name: str, window: int, limit: int) -> tuple[bool, int]:
        """See RateLimitStore.hit."""
        now = self._clock()
        number = int(now // window)
        with self._lock:
            if len(self._counts) > 10_000:
                self._counts = {k: n for k, n in self._counts.items() if k[2] >= int(now // k[1])}
            slot = (name, window, number)
            count = self._counts.get(slot, 0) + 1
            self._counts[slot] = count
        return count <= limit, max(1, math.ceil((number + 1) * window - now))


MEMORY_AUDIT_CAP = 100_000
"""The embedded audit log keeps this many records at most, whatever the setting (development only)."""


def _id_key(rid: str) -> tuple[int, int]:
    ms, _, n = rid.partition("-")
    return int(ms), int(n)


class MemoryAuditStore:
    """AuditStore in a bounded deque: ids ``<ms>-<n>`` as Redis streams make them, on the injected clock;
    trimmed on append (older than ``retention`` seconds, beyond ``max_records``), the last trimmed record
    kept as the anchor."""

    def __init__(self, clock: Clock, retention: int = AUDIT_RETENTION, max_records: int = AUDIT_MAX_RECORDS):
        self._clock = clock
        self._retention_ms = retention * 1000
        self._max = min(max_records, MEMORY_AUDIT_CAP)
        self._lock = threading.Lock()
        self._records: deque[AuditRecord] = deque()
        self._head: Link | None = None
        self._anchor: Link | None = None

    def append(self, event: AuditEvent) -> AuditRecord:
        """See AuditStore.append."""
        with self._lock:
            now_ms = int(self._clock() * 1000)
            head = self._head
            last = _id_key(head.id) if head is not None else (0, -1)
            rid = f"{now_ms}-0" if now_ms > last[0] else f"{last[0]}-{last[1] + 1}"
            record = chained(event, head.seq + 1 if head else 1, head.hash if head else GENESIS, rid)
            self._records.append(record)
            self._head = Link(record.seq, record.hash, rid)
            cutoff = now_ms - self._retention_ms
            while self._records and (_id_key(self._records[0].id)[0] < cutoff or len(self._records) > self._max):
                old = self._records.popleft()
                self._anchor = Link(old.seq, old.hash, old.id)
            return record

    def page(self, since: int | None, action: str | None, cursor: str | None, limit: int) -> tuple[list[AuditRecord], str | None]:
        """See AuditStore.page."""
        after = decode_id_cursor(cursor)
        start = _id_key(after) if after is not None else (-1, -1)
        with self._lock:
            records = list(self._records)
        items: list[AuditRecord] = []
        for record in records:
            if _id_key(record.id) <= start or not record.matches(since, action):
                continue
            if len(items) == limit:
                return items, encode_id_cursor(items[-1].id)
            items.append(record)
        return items, None

    def chain(self, after: str | None, count: int) -> tuple[Link | None, Link | None, list[AuditRecord | Break]]:
        """See AuditStore.chain."""
        start = _id_key(after) if after is not None else (-1, -1)
        with self._lock:
            records: list[AuditRecord | Break] = []
            records.extend(r for r in self._records if _id_key(r.id) > start)
            return self._anchor, self._head, records[:count]


class MemoryStores:
    """The embedded stores of one process."""

    shared = False

    def __init__(self, clock: Clock, audit_retention: int = AUDIT_RETENTION, audit_max_records: int = AUDIT_MAX_RECORDS):
        self.revocations: RevocationStore = MemoryRevocationStore(clock)
        self.api_keys: ApiKeyStore = MemoryApiKeyStore()
        self.replays: ReplayCache = MemoryReplayCache(clock)
        self.rate_limits: RateLimitStore = MemoryRateLimitStore(clock)
        self.signing_keys: SigningKeyStore = MemorySigningKeyStore(clock)
        self.audit: AuditStore = MemoryAuditStore(clock, audit_retention, audit_max_records)

    def ping(self) -> None:
        """Always answers."""
