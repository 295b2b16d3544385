"""The managed signing-key ring's rules (pure): which key signs, which verify, when stages change.

A key's life, with times stored once and statuses derived from them (so every instance that reads the
same record computes the same answer at the same moment):

- ``next``: published in the JWKS, not signing yet (``now < activates_at``). A routine rotation sets
  ``activates_at = now + activation delay``; the delay is at least the JWKS max-age, so every verifier
  that cached the JWKS before the key appeared has refetched it before the key signs anything.
- ``current``: the live key with the latest ``activates_at <= now``. Exactly one, or none.
- ``retiring``: an earlier key that a later one has replaced (``retires_at`` = the successor's
  ``activates_at``); it verifies until every token it signed has expired
  (``retires_at + max_ttl + skew``), then leaves the ring and the JWKS.
- ``revoked``: compromised. Never signs or appears in the JWKS again; it stays in the ring (as a
  revoked key, for the operator's verdicts) until its tokens would have expired. A revoked key that
  had signed still counts as the successor of the key before it: revoking the signer never brings an
  older key back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

KeyStatus = Literal["next", "current", "retiring", "revoked"]
ROTATION_PRESETS = {"low": 90 * 86400, "medium": 30 * 86400, "high": 7 * 86400}
"""The Persona guide's schedules: every 90 days (low risk), 30 (medium), 7 (high)."""


@dataclass(frozen=True, slots=True)
class KeyTimes:
    """What the store keeps of a key's life (besides its material)."""

    kid: str
    alg: str
    created_at: int
    activates_at: int
    revoked_at: int | None = None


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key's derived state at one moment."""

    times: KeyTimes
    status: KeyStatus
    retires_at: int | None
    """When it stops (or stopped) signing: its successor's activation; None while no successor is staged."""
    leaves_at: int | None
    """When it leaves the ring and the JWKS; None while it may still sign."""

    def to_dict(self) -> dict[str, object]:
        """The admin API's entry."""
        return {
            "kid": self.times.kid, "alg": self.times.alg, "status": self.status, "created_at": self.times.created_at,
            "activates_at": self.times.activates_at, "retires_at": self.retires_at,
        }


def states(keys: Sequence[KeyTimes], now: float, horizon: int) -> list[KeyState]:
    """Every key still in the ring at ``now``, oldest activation first. ``horizon`` = max TTL + skew."""
    def order(k: KeyTimes) -> tuple[int, int, str]:
        return (k.activates_at, k.created_at, k.kid)

    live = sorted((k for k in keys if k.revoked_at is None), key=order)
    # A revoked key that did sign still replaced its predecessor: that one must never sign again.
    signed = sorted((k for k in keys if k.revoked_at is None or k.activates_at <= k.revoked_at), key=order)
    result: list[KeyState] = []
    for key in live:
        # a revoked key replaced only keys that activated strictly before it (a successor added in the
        # second of the revocation activates at the same second and must not count as replaced)
        later = [k.activates_at for k in signed
                 if (order(k) > order(key) if k.revoked_at is None else k.activates_at > key.activates_at)]
        successor = later[0] if later else None
        if key.activates_at > now:
            status: KeyStatus = "next"
        elif successor is None or successor > now:
            status = "current"
        else:
            status = "retiring"
        leaves_at = successor + horizon if successor is not None and status == "retiring" else None
        if leaves_at is not None and leaves_at <= now:
            continue
        result.append(KeyState(key, status, successor, leaves_at))
    for key in keys:
        if key.revoked_at is not None and key.revoked_at + horizon > now:
            result.append(KeyState(key, "revoked", None, key.revoked_at + horizon))
    return result


def signing_kid(current: Sequence[KeyState]) -> str | None:
    """The kid of the key that signs now, or None."""
    return next((s.times.kid for s in current if s.status == "current"), None)


def next_change(current: Sequence[KeyState], now: float) -> float | None:
    """Seconds until the next stage change (an activation, or a key leaving), or None when none is planned."""
    moments = [s.times.activates_at for s in current if s.status == "next"]
    moments += [s.leaves_at for s in current if s.leaves_at is not None and s.status != "revoked"]
    upcoming = [m - now for m in moments if m > now]
    return min(upcoming) if upcoming else None


def jwks_max_age(configured: int, current: Sequence[KeyState], now: float) -> int:
    """The JWKS ``max-age``: the configured one, shortened so that caches expire by the next stage change."""
    until = next_change(current, now)
    if until is None:
        return configured
    return max(0, min(configured, int(until)))


def rotation_due(current: Sequence[KeyState], now: float, period: int | None) -> bool:
    """True when a scheduled rotation should stage a new key: the signing key is older than ``period``
    and no successor is staged yet (or no key signs at all)."""
    if any(s.status == "next" for s in current):
        return False
    signing = [s for s in current if s.status == "current"]
    if not signing:
        return True
    return period is not None and now - signing[0].times.activates_at >= period
