"""Embedded stores: one process only (the development default). Entries expire lazily against the
injected clock; no timer threads. A lock makes them safe under threaded servers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from token_service.apikeys import ApiKey
from token_service.clock import Clock
from token_service.revocation import Marker, Revocation, Target
from token_service.stores.base import ApiKeyStore, ReplayCache, RevocationStore
from token_service.stores.cursor import decode_cursor, encode_cursor


class MemoryRevocationStore:
    """RevocationStore in a dict."""

    def __init__(self, clock: Clock):
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, Revocation]] = {}
        self._by_target: dict[Target, set[str]] = {}
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
            return self._remove(revocation_id)

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

    def touch(self, key_id: str, at: int) -> None:
        """See ApiKeyStore.touch."""
        with self._lock:
            found = self._keys.get(key_id)
            if found is not None:
                self._keys[key_id] = (found[0], found[1].with_last_used(at))

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


class MemoryStores:
    """The embedded stores of one process."""

    shared = False

    def __init__(self, clock: Clock):
        self.revocations: RevocationStore = MemoryRevocationStore(clock)
        self.api_keys: ApiKeyStore = MemoryApiKeyStore()
        self.replays: ReplayCache = MemoryReplayCache(clock)

    def ping(self) -> None:
        """Always answers."""
