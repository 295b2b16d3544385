"""Readiness: may this instance take traffic? One check per dependency, each with the reason when it fails.

``GET /readyz`` (API.md: 200 when the signing key is loaded and the stores answer, else 503 with the
reason) reports every check, so that an operator reading one answer sees which dependency is out:

- ``store``: the shared store answers a ping (``latency_ms``: how long that took). Bounded by the Redis
  connect and socket timeouts (no retries: stores/redis.py), so a Redis that hangs costs one timeout, not more.
- ``signing_key``: a key of the ring signs now (``kid``, ``alg``, ``ring``: static, managed or directory),
  whether that key has been revoked (``can_sign``), ``seconds_until_next_stage`` (a staged key activating, or
  a retired one leaving; null when nothing is staged) and, on a managed ring with a rotation schedule,
  ``seconds_until_rotation`` (when the scheduled rotation stages the next key; 0 when it is due).

A revoked key of a *static* ring (a mounted ``SIGNING_KEY_FILE``) keeps the instance ready: verification,
revocation and the admin API still work, only minting answers 503 until the file is replaced; pulling every
instance out of the load balancer would turn that into a full outage. The check says so (``can_sign: false``
and a ``detail``). A managed or directory ring without a signing key is not ready.

The answer never holds the store's URL (it may hold a password), a key or a secret: only kids, which the
JWKS publishes anyway, and the error's type.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

from token_service import ring as rules
from token_service.clock import Clock
from token_service.errors import TemporarilyUnavailable
from token_service.signing import SigningKeys
from token_service.stores.base import Stores, StoreUnavailable

RingKind = Literal["static", "managed", "directory"]
STORE_DOWN = "the store cannot be reached"
NO_SIGNING_KEY = "no signing key is loaded"
RING_UNREADABLE = "the key ring cannot be read from the store"


@dataclass(frozen=True, slots=True)
class Readiness:
    """The outcome of every check: ``checks`` by name, and the reasons the instance is not ready (empty: ready)."""

    checks: dict[str, dict[str, object]]
    reasons: tuple[str, ...]

    @property
    def ready(self) -> bool:
        """True when no check failed."""
        return not self.reasons

    def body(self) -> dict[str, object]:
        """``{"status": "ready" | "not_ready", "checks": {...}}``."""
        return {"status": "ready" if self.ready else "not_ready", "checks": self.checks}


class NotReady(TemporarilyUnavailable):
    """503 from /readyz: the contract's error body, plus ``status`` and ``checks``."""

    def __init__(self, readiness: Readiness):
        super().__init__(f"Not ready: {'; '.join(readiness.reasons)}.")
        self.readiness = readiness

    def body(self) -> dict[str, object]:
        """The error body with the checks."""
        return {**super().body(), **self.readiness.body()}


def check(stores: Stores, keys: SigningKeys, kind: RingKind, clock: Clock, rotation_period: int | None = None) -> Readiness:
    """Run every check. Never raises for a store failure: it becomes a failed check. ``rotation_period``: the
    managed ring's schedule in seconds (None: no schedule)."""
    reasons: list[str] = []
    store = _store(stores)
    if not store["ok"]:
        reasons.append(STORE_DOWN)
    signing = _signing_key(stores, keys, kind, clock, store_up=bool(store["ok"]),
                           rotation_period=rotation_period if kind == "managed" else None)
    if not signing["ok"]:
        reasons.append(str(signing["reason"]))
    return Readiness({"store": store, "signing_key": signing}, tuple(reasons))


def _store(stores: Stores) -> dict[str, object]:
    start = time.perf_counter()  # a measurement, not a decision: the injected clock is for decisions
    try:
        stores.ping()
    except StoreUnavailable as exc:
        return {"ok": False, "shared": stores.shared, "reason": STORE_DOWN, "error": _error_type(exc)}
    return {"ok": True, "shared": stores.shared, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}


def _error_type(exc: StoreUnavailable) -> str:
    # StoreUnavailable's text is "redis: <exception type>" (stores/redis.py): no URL, no address, no secret.
    # The cause's type is taken again here so that nothing else could ever slip through.
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else type(exc).__name__


def _signing_key(stores: Stores, keys: SigningKeys, kind: RingKind, clock: Clock, store_up: bool,
                 rotation_period: int | None) -> dict[str, object]:
    try:
        ring = keys.ring()  # a managed ring re-reads the store here when its refresh is due
        states = keys.states()
    except StoreUnavailable:
        return {"ok": False, "ring": kind, "reason": RING_UNREADABLE}
    key = ring.signing
    if key is None:
        return {"ok": False, "ring": kind, "reason": NO_SIGNING_KEY, "published_keys": _published(states)}
    now = clock()
    until = rules.next_change(states, now)
    result: dict[str, object] = {
        "ok": True, "ring": kind, "kid": key.kid, "alg": key.alg, "published_keys": _published(states),
        "seconds_until_next_stage": None if until is None else math.ceil(until),
    }
    signing = next((s for s in states if s.times.kid == key.kid), None)
    if rotation_period is not None and signing is not None:
        result["seconds_until_rotation"] = max(0, math.ceil(signing.times.activates_at + rotation_period - now))
    if not store_up:
        result["can_sign"] = None  # unknown: the revocations are in the store
        return result
    try:
        [marker] = stores.revocations.lookup((("kid", key.kid),))
    except StoreUnavailable:
        result["can_sign"] = None
        return result
    result["can_sign"] = marker is None
    if marker is not None:
        result["detail"] = (
            "the signing key has been revoked: minting answers 503 until TOKEN_SERVICE_SIGNING_KEY_FILE is replaced "
            "and the instances restarted; verification and the admin API still work"
            if kind == "static" else
            "the signing key has been revoked: a successor takes over within TOKEN_SERVICE_SIGNING_KEY_REFRESH seconds"
        )
    return result


def _published(states: list[rules.KeyState]) -> int:
    """The keys of the ring that the JWKS publishes: staged, signing and retiring ones (not revoked)."""
    return sum(1 for s in states if s.status != "revoked")
