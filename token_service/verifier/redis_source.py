"""``RedisRevocations``: revocation markers read from the service's Redis, cached locally and kept current
through pub/sub.

The service's ``_ADD`` and ``_LIFT`` scripts publish, on ``{ts}:rev:events``, the marker key
(``{ts}:rev:on:<type>:<value>``) they have just written, inside the same atomic script; for a jti, whose
entry is a field of a hash bucket (``token_service.jti_buckets``), ``_ADD_JTI`` and ``_LIFT_JTI`` publish
``{ts}:rev:j:<shard>:<hex digest>`` (``jti_buckets.event_key``), the name this source caches that field
under. This source:

- subscribes in a background thread; once Redis confirms the subscription it drops the whole cache
  (messages may have been missed before) and marks the copy *current*;
- answers a token's markers from the cache when all are cached and the copy is current; otherwise reads
  them in one round trip, as ``RevocationStore.lookup`` does (one script: MGET of the marker keys, the
  jti's general-layout one included for entries written before the buckets, and HGET of the jti's bucket
  field), and caches the answer, unless an invalidation or a reconnect happened while the read was in
  flight (an epoch counter decides); a jti entry counts while ``revoked_at + life`` is ahead of this
  host's clock;
- drops the cached value of a marker key named by a message (the next token reads it afresh);
- while the subscription is down or not yet confirmed, is not current: every token is checked against
  Redis directly (one MGET); when Redis cannot be reached, raises RevocationUnavailable (fail closed);
- sends a PING on the subscription after ``health_check_interval`` without hearing anything, and drops the
  link when nothing at all (no message, no pong) arrives within ``socket_timeout`` of it: a server that
  stops answering (frozen, or a half-open link) raises no error by itself, and the cache must not outlive it.

Why PUBLISH and not keyspace notifications or client-side caching: see docs/verifier.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import RedisError

from token_service.jti_buckets import LOOKUP, event_key, marker_in, place_of
from token_service.revocation import Marker, Target
from token_service.verifier.errors import RevocationUnavailable

CHANNEL = "{ts}:rev:events"
PREFIX = "{ts}:rev:on:"
LIVENESS_PING = "token-service-liveness"
log = logging.getLogger("token_service.verifier")


def marker_key(target: Target) -> str:
    """The Redis key of a target's marker (the service's layout, ``stores/redis.py``)."""
    return f"{PREFIX}{target[0]}:{target[1]}"


def _marker(raw: bytes | None) -> Marker | None:
    if raw is None:
        return None
    at, rid = raw.decode().split(" ", 1)
    return Marker(revocation_id=rid, revoked_at=int(at))


class RedisRevocations:
    """A RevocationSource on the service's Redis, cached and invalidated by pub/sub (see the module docstring)."""

    def __init__(self, redis_url: str, connect_timeout: float = 0.5, socket_timeout: float = 0.5,
                 health_check_interval: float = 1.0, reconnect_delay: float = 0.1, max_cached: int = 100_000,
                 client: Any = None):
        for name, value in (("socket_timeout", socket_timeout), ("health_check_interval", health_check_interval)):
            # both bound how long a silent link may keep the cache current: "no timeout" would fail open
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        self._client: Any = client or redis.Redis.from_url(
            redis_url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout,
            health_check_interval=health_check_interval,
        )
        self._lookup = self._client.register_script(LOOKUP)
        self._reconnect_delay = reconnect_delay
        self._ping_interval = health_check_interval  # a PING after this long without hearing anything
        self._answer_timeout = socket_timeout  # and the link is dead when nothing answers it for this long
        self._max_cached = max_cached
        self._lock = threading.Lock()
        self._cache: dict[str, bytes | None] = {}
        self._places: dict[str, tuple[str, bytes, str]] = {}
        self._epoch = 0  # bumped by every invalidation and every change of currency
        self._current = False
        self._confirmed = threading.Event()
        self._stop = threading.Event()
        self.reconnects = 0
        self.direct_reads = 0
        self._thread = threading.Thread(target=self._listen, name="token-service-revocations", daemon=True)
        self._thread.start()

    @property
    def current(self) -> bool:
        """True while the subscription is confirmed: cached markers are then up to date."""
        return self._current

    def wait_current(self, timeout: float) -> bool:
        """Block until the subscription is confirmed (or ``timeout``); True when current."""
        self._confirmed.wait(timeout)
        return self._current

    # -- the check --------------------------------------------------------------------------------

    def markers(self, targets: Sequence[Target]) -> list[Marker | None]:
        """See RevocationSource.markers."""
        keys = [f"{PREFIX}{kind}:{value}" for kind, value in targets]  # marker_key, inlined: the hot path
        places = [(i, self._place(value)) for i, (kind, value) in enumerate(targets) if kind == "jti"]
        names = keys + [place[2] for _, place in places] if places else keys
        with self._lock:
            current, epoch = self._current, self._epoch
            if current:
                cache = self._cache
                try:
                    cached = [cache[k] for k in names]
                except KeyError:
                    pass
                else:
                    return self._answer(cached, len(keys), places)
        try:
            raw: list[bytes | None]
            if places:
                raw = self._lookup(keys=keys + [place[0] for _, place in places],
                                   args=[len(keys), *[place[1] for _, place in places]])
            else:
                raw = self._client.mget(keys)
        except RedisError as exc:
            raise RevocationUnavailable(f"Revocations cannot be checked: redis {type(exc).__name__}.") from None
        with self._lock:
            if current:
                if self._epoch == epoch:  # no message and no reconnect since the read began: the values are current
                    if len(self._cache) + len(names) > self._max_cached:
                        self._cache.clear()
                    self._cache.update(zip(names, raw, strict=True))
            else:
                self.direct_reads += 1
        return self._answer(raw, len(keys), places)

    def _place(self, jti: str) -> tuple[str, bytes, str]:
        """A jti's bucket, field and cache name (the digest costs a few µs: remembered, bounded like the cache)."""
        place = self._places.get(jti)
        if place is None:
            bucket, digest = place_of(jti)
            place = (bucket, digest, event_key(bucket, digest))
            if len(self._places) >= self._max_cached:
                self._places.clear()
            self._places[jti] = place
        return place

    @staticmethod
    def _answer(raw: Sequence[bytes | None], count: int, places: list[tuple[int, tuple[str, bytes, str]]]) -> list[Marker | None]:
        result = [None if value is None else _marker(value) for value in raw[:count]]
        for (i, (_, digest, _)), value in zip(places, raw[count:], strict=True):
            if value is not None:
                found = marker_in(value, digest, time.time())
                held = result[i]
                if found is not None and (held is None or found.revoked_at > held.revoked_at):
                    result[i] = found
        return result

    # -- the subscription -------------------------------------------------------------------------

    def _set_current(self, current: bool) -> None:
        with self._lock:
            self._cache.clear()
            self._epoch += 1
            self._current = current
        if current:
            self._confirmed.set()
        else:
            self._confirmed.clear()

    def _invalidate(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
            self._epoch += 1

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(CHANNEL)
                heard, pinged = time.monotonic(), None
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    now = time.monotonic()
                    if message is None:
                        if pinged is None and now - heard >= self._ping_interval:
                            pubsub.ping(LIVENESS_PING)
                            pinged = now
                        elif pinged is not None and now - pinged > self._answer_timeout:
                            raise redis.TimeoutError("no answer on the subscription")  # a frozen server or a half-open link
                        continue
                    heard, pinged = now, None
                    if message["type"] == "subscribe":
                        self._set_current(True)  # confirmed: from here no message is missed; forget what may have been
                    elif message["type"] == "message":
                        data = message["data"]
                        self._invalidate(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:  # noqa: BLE001 - whatever ends the loop, the cache must stop being current
                if self._current or not isinstance(exc, RedisError | OSError | ValueError):
                    log.warning("revocation subscription lost (%s); checking Redis per token until it is back", type(exc).__name__)
                self._set_current(False)
                self.reconnects += 1
                self._stop.wait(self._reconnect_delay)
            finally:
                if self._stop.is_set():
                    self._set_current(False)
                try:
                    pubsub.close()
                except (RedisError, OSError):  # pragma: no cover - closing a broken link
                    pass

    def close(self) -> None:
        """Stop the subscription thread and release the connections."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()
