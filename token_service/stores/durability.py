"""Durability of acknowledged writes: what the Redis must keep on disk, and waiting for its replicas.

A 201 for a revocation promises that it will not be lost. Two things can lose it after the answer: a
Redis that keeps nothing on disk (or may evict the entry, which carries a TTL), and a failover to a
replica the write had not reached yet. ``persistence_warnings`` reads the first from Redis's ``INFO``
(a pure function, so it is unit-tested without a server); ``confirmed_writes`` carries the second:
with ``TOKEN_SERVICE_REDIS_WAIT_REPLICAS`` set, the Redis stores follow each such write with ``WAIT``
and report a shortfall here. See docs/operations/redis.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from token_service.stores.base import StoreUnavailable


class ReplicationIncomplete(StoreUnavailable):
    """A write is in force on the Redis primary, but fewer replicas than required acknowledged it in time.

    The write is not undone (it is in force: undoing it could lose a revocation the primary keeps); the
    caller answers 503 so that the client knows the acknowledgement it wanted was not given."""


_pending: ContextVar[list[str] | None] = ContextVar("token_service_unconfirmed_writes", default=None)


@contextmanager
def confirmed_writes() -> Iterator[None]:
    """Run a use case whose writes must reach the replicas; raise ReplicationIncomplete at its end if one did not.

    Inside, a shortfall is collected rather than raised, so that the use case does every step (a revoked
    signing key's successor is still promoted, every reported key is still revoked) before answering 503.
    Nested uses join the outermost one."""
    if _pending.get() is not None:
        yield
        return
    token = _pending.set([])
    try:
        yield
        pending = _pending.get() or []
    finally:
        _pending.reset(token)
    if pending:
        raise ReplicationIncomplete(pending[0])


def shortfall_seen() -> bool:
    """True inside a use case one of whose writes was already not acknowledged in time: its answer is a 503
    anyway, so its later writes do not wait again (a report of 100 keys with a replica down would otherwise
    wait 100 times, past the worker's timeout)."""
    return bool(_pending.get())


def unconfirmed(message: str) -> None:
    """Called by a store (which has logged ``message``) after a write its replicas did not acknowledge in time:
    collected inside ``confirmed_writes``. Outside one nobody waits for an acknowledgement (the ring's own
    upkeep: a scheduled rotation, the first key at start-up), so it is not raised into whatever request or
    start-up happened to run it."""
    pending = _pending.get()
    if pending is not None:
        pending.append(message)


GUIDE = "see docs/operations/redis.md"


def _flag(info: Mapping[str, Any], name: str) -> bool | None:
    value = info.get(name)
    if value is None:
        return None
    return str(value).strip() in ("1", "yes", "True", "true")


def persistence_warnings(persistence: Mapping[str, Any], memory: Mapping[str, Any],
                         config: Mapping[str, str] | None) -> list[str]:
    """The start-up warnings about a Redis that may lose acknowledged revocations (empty when none).

    ``persistence`` and ``memory`` are the ``INFO persistence`` and ``INFO memory`` sections as redis-py
    parses them; ``config`` holds ``save`` and ``appendfsync`` from ``CONFIG GET``, or is None when the
    server refused it (managed Redis often does): what depends on it is then said to be unknown."""
    warnings: list[str] = []
    aof = _flag(persistence, "aof_enabled")
    save = None if config is None else config.get("save")
    fsync = None if config is None else config.get("appendfsync")
    if aof is None:
        warnings.append(f"Redis durability unknown: INFO persistence has no aof_enabled field; {GUIDE}")
    elif not aof:
        if save is None:
            warnings.append(
                "Redis append-only file is off and its RDB save points are unknown (CONFIG GET refused): unless the "
                f"provider persists the data, a restart loses revocations acknowledged with 201; set appendonly yes ({GUIDE})"
            )
        elif not save.strip():
            warnings.append(
                "Redis keeps nothing on disk (appendonly no, no RDB save points): a restart loses every revocation "
                f"acknowledged with 201; set appendonly yes ({GUIDE})"
            )
        else:
            warnings.append(
                f"Redis keeps only RDB snapshots (save {save.strip()!r}, appendonly no): a crash loses the revocations "
                f"acknowledged since the last snapshot; set appendonly yes ({GUIDE})"
            )
    elif fsync is not None and fsync.strip().lower() == "no":
        warnings.append(
            "Redis appendfsync is no: the operating system flushes the append-only file when it likes (about every "
            f"30 s on Linux), so a power loss or kernel crash can lose acknowledged revocations; use everysec or always ({GUIDE})"
        )
    policy = memory.get("maxmemory_policy")
    if policy is None:
        warnings.append(f"Redis eviction policy unknown: INFO memory has no maxmemory_policy field; {GUIDE}")
    elif str(policy) != "noeviction":
        limit = memory.get("maxmemory_human", memory.get("maxmemory", "?"))
        warnings.append(
            f"Redis maxmemory-policy is {policy} (maxmemory {limit}), not noeviction: under memory pressure Redis "
            "deletes keys, and revocation entries carry TTLs, so volatile-* policies evict them first and a revoked "
            f"token passes again; set maxmemory-policy noeviction ({GUIDE})"
        )
    return warnings
