"""Store construction: the only place besides ``create_app`` that names concrete stores."""

from __future__ import annotations

from token_service.clock import Clock
from token_service.stores.base import ApiKeyStore, RevocationStore, Stores, StoreUnavailable

__all__ = ["ApiKeyStore", "RevocationStore", "Stores", "StoreUnavailable", "stores_from_url"]


def stores_from_url(
    url: str | None, clock: Clock, connect_timeout: float = 0.5, socket_timeout: float = 0.5, max_connections: int = 50
) -> Stores:
    """Redis stores for a ``redis``/``rediss``/``unix``/``sentinel``/``cluster`` URL; embedded ones for None or ``memory://``."""
    if url is None or url == "memory://":
        from token_service.stores.memory import MemoryStores

        return MemoryStores(clock)
    import redis.cluster  # noqa: F401
    import redis.sentinel  # noqa: F401 - registers the submodule used by client_from_url

    from token_service.stores.redis import RedisStores, client_from_url

    return RedisStores(client_from_url(url, connect_timeout, socket_timeout, max_connections), clock)
