"""Store construction: the only place besides ``create_app`` that names concrete stores."""

from __future__ import annotations

from token_service.clock import Clock
from token_service.stores.base import AUDIT_MAX_RECORDS, AUDIT_RETENTION, ApiKeyStore, RevocationStore, Stores, StoreUnavailable

__all__ = ["ApiKeyStore", "RevocationStore", "Stores", "StoreUnavailable", "durability_warnings", "stores_from_url"]


def stores_from_url(
    url: str | None, clock: Clock, connect_timeout: float = 0.5, socket_timeout: float = 0.5, max_connections: int = 50,
    wait_replicas: int = 0, wait_timeout_ms: int = 500, audit_retention: int = AUDIT_RETENTION,
    audit_max_records: int = AUDIT_MAX_RECORDS,
) -> Stores:
    """Redis stores for a ``redis``/``rediss``/``unix``/``sentinel``/``cluster`` URL; embedded ones for None or ``memory://``.

    With ``wait_replicas``, the writes that must not be lost wait for that many replicas (``WAIT``) on a
    second pool whose socket timeout is longer by the WAIT's, so that a slow acknowledgement is told from a
    Redis that does not answer."""
    if url is None or url == "memory://":
        from token_service.stores.memory import MemoryStores

        return MemoryStores(clock, audit_retention, audit_max_records)
    import redis.cluster  # noqa: F401
    import redis.sentinel  # noqa: F401 - registers the submodule used by client_from_url

    from token_service.stores.redis import DurableWrites, RedisStores, client_from_url

    client = client_from_url(url, connect_timeout, socket_timeout, max_connections)
    durable = None
    if wait_replicas:
        waiting = client_from_url(url, connect_timeout, socket_timeout + wait_timeout_ms / 1000, max_connections)
        durable = DurableWrites(waiting, wait_replicas, wait_timeout_ms)
    return RedisStores(client, clock, durable, audit_retention, audit_max_records)


def durability_warnings(stores: Stores) -> list[str]:
    """Start-up warnings about a Redis that may lose acknowledged revocations (docs/operations/redis.md); none
    for the embedded stores. Never raises: a Redis that cannot be asked gives a line saying so."""
    from token_service.stores.redis import RedisStores

    if not isinstance(stores, RedisStores):
        return []
    try:
        return stores.persistence_warnings()
    except Exception as exc:  # noqa: BLE001 - a diagnostic: it must not stop start-up; the name only (no URL, no secret)
        why = str(exc) if isinstance(exc, StoreUnavailable) else type(exc).__name__
        return [f"could not check the Redis persistence and eviction settings at start-up ({why}); "
                "make sure it runs with appendonly yes and maxmemory-policy noeviction (see docs/operations/redis.md)"]
