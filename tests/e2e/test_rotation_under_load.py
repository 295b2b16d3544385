"""A routine signing-key rotation under load, in real time: two gunicorn instances (two workers each) on
one Redis with a managed ring and short settings (JWKS max-age 2 s, activation delay 3 s, max TTL 4 s,
skew 1 s, each worker re-reading the ring every second). While tokens are minted through A and B in
turn and each is verified through the other instance, and four gateways cache the JWKS for the
max-age each answer gives (started a fraction of a max-age apart, so that between them they fetch at
every phase), a rotation staged through A, late in a second (the shortest delay there is), must:

- never fail a fresh valid token (every 200 mint is a 200 verify on the other instance);
- never sign with a key a gateway could not have seen (each token's kid is in the JWKS every gateway
  holds when the token is minted, unless that copy is older than its max-age);
- switch both instances to the new key at its ``activates_at`` (no old-key token a second later);
- list the new key ``next`` then ``current``, the old one ``retiring`` and then not at all, and take
  it out of the JWKS.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, RedisServer
from tests.e2e.servers import Instance, two_instances

MAX_AGE, DELAY, MAX_TTL, SKEW = 2, 3, 4, 1
REFRESH = 1
"""Seconds between two reads of the ring by a worker: start-up requires DELAY >= MAX_AGE + REFRESH."""
HORIZON = MAX_TTL + SKEW
MINTERS = 4
GATEWAYS = 4
WARM_UP = 1.5
"""Seconds of traffic before the rotation (every worker mints and verifies with the first key)."""
LATE_IN_A_SECOND = 0.9
DEADLINE = 30.0
"""Seconds after the rotation by which the old key must have left; the whole test stops by then."""


@pytest.fixture
def managed_pair(redis_server: RedisServer, redis_url: str) -> Iterator[tuple[Instance, Instance]]:
    env = {
        "TOKEN_SERVICE_REDIS_URL": redis_url,
        "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": secrets.token_hex(32),
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_JWKS_MAX_AGE": str(MAX_AGE),
        "TOKEN_SERVICE_SIGNING_KEY_ACTIVATION_DELAY": str(DELAY),
        "TOKEN_SERVICE_SIGNING_KEY_REFRESH": str(REFRESH),
        "TOKEN_SERVICE_MAX_TTL": str(MAX_TTL),
        "TOKEN_SERVICE_CLOCK_SKEW": str(SKEW),
        # the load is the point here, not the limits: neither minting nor the watcher's polling is throttled
        "TOKEN_SERVICE_RATE_LIMIT_SECRET_MINT": "1000000/minute",
        "TOKEN_SERVICE_RATE_LIMIT_ADMIN": "1000000/minute",
        "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
    }
    with two_instances(env) as pair:
        yield pair


def jose_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def max_age_of(headers: dict[str, str]) -> int:
    return int(headers["Cache-Control"].split("max-age=")[1].split(",")[0])


@dataclass(frozen=True)
class Mint:
    """One token: minted through ``by`` between ``started`` and ``ended``, verified through the other instance."""

    by: str
    started: float
    ended: float
    status: int
    kid: str | None = None
    iat: int | None = None
    verified: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """A JWKS the gateway fetched: asked at ``asked``, received at ``received``, fresh until ``asked + max_age``."""

    asked: float
    received: float
    kids: frozenset[str]
    max_age: int
    source: str

    @property
    def fresh_until(self) -> float:
        return self.asked + self.max_age


@dataclass
class Run:
    """What the threads record (appends only: safe across threads)."""

    mints: list[Mint] = field(default_factory=list)
    snapshots: list[list[Snapshot]] = field(default_factory=lambda: [[] for _ in range(GATEWAYS)])
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def held_at(self, gateway: int, moment: float) -> Snapshot | None:
        """The JWKS gateway ``gateway`` held at ``moment``: the last one it had received by then."""
        held = [s for s in self.snapshots[gateway] if s.received <= moment]
        return held[-1] if held else None


def minter(run: Run, index: int, instances: dict[str, Instance], key: str, deadline: float) -> None:
    names = sorted(instances)
    turn = index
    try:
        while not run.stop.is_set() and time.time() < deadline:
            by, other = names[turn % 2], names[(turn + 1) % 2]
            turn += 1
            started = time.time()
            status, _, body = instances[by].request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": f"load-{index}"}, token=key)
            ended = time.time()
            if status != 200:
                run.mints.append(Mint(by, started, ended, status))
                continue
            token = body["token"]
            verified = instances[other].request("GET", "/v1/verify", token=token)[0]
            run.mints.append(Mint(by, started, ended, status, jose_part(token, 0)["kid"], jose_part(token, 1)["iat"], verified))
    except Exception as exc:  # noqa: BLE001 - reported by the test, never lost in a thread
        run.errors.append(f"minter {index}: {exc!r}")


def gateway(run: Run, index: int, instances: dict[str, Instance], deadline: float) -> None:
    """A gateway verifying locally: it caches the JWKS for the max-age of each answer, then fetches it again
    (from A and B in turn, as a load balancer would send it). The gateways start a fraction of a max-age
    apart, so that between them they fetch at every phase of the cycle."""
    names = sorted(instances)
    turn = index
    snapshots = run.snapshots[index]
    time.sleep(index * MAX_AGE / GATEWAYS)
    try:
        while not run.stop.is_set() and time.time() < deadline:
            held = snapshots[-1] if snapshots else None
            if held is None or time.time() >= held.fresh_until:
                source = names[turn % 2]
                turn += 1
                asked = time.time()
                status, headers, body = instances[source].request("GET", "/.well-known/jwks.json")
                if status != 200:
                    run.errors.append(f"gateway {index}: JWKS answered {status}")
                    continue
                kids = frozenset(k["kid"] for k in body["keys"])
                snapshots.append(Snapshot(asked, time.time(), kids, max_age_of(headers), source))
            time.sleep(0.01)
    except Exception as exc:  # noqa: BLE001 - reported by the test, never lost in a thread
        run.errors.append(f"gateway {index}: {exc!r}")


def listing(instance: Instance) -> dict[str, dict[str, Any]]:
    status, _, body = instance.request("GET", "/v1/admin/signing-keys", token=ADMIN_KEY)
    assert status == 200, body
    return {entry["kid"]: entry for entry in body["keys"]}


def published(instance: Instance) -> frozenset[str]:
    status, _, body = instance.request("GET", "/.well-known/jwks.json")
    assert status == 200, body
    return frozenset(k["kid"] for k in body["keys"])


def test_a_rotation_under_load_breaks_no_token(managed_pair: tuple[Instance, Instance]) -> None:
    a, b = managed_pair
    instances = {"A": a, "B": b}
    status, _, created = a.request("POST", "/v1/admin/api-keys", {"type": "secret", "name": "load", "personas": ["support-bot"]},
                                   token=ADMIN_KEY)
    assert status == 201, created
    [old] = listing(a)
    assert set(listing(b)) == {old}

    run = Run()
    hard_stop = time.time() + WARM_UP + DEADLINE + 5
    gateways = [threading.Thread(target=gateway, args=(run, i, instances, hard_stop), daemon=True) for i in range(GATEWAYS)]
    minters = [threading.Thread(target=minter, args=(run, i, instances, created["key"], hard_stop), daemon=True) for i in range(MINTERS)]
    threads = gateways + minters
    for thread in gateways:
        thread.start()
    while not all(run.snapshots) and time.time() < hard_stop and not run.errors:
        time.sleep(0.01)  # every gateway holds a JWKS before the first token exists
    for thread in minters:
        thread.start()
    seen: list[tuple[float, str, dict[str, str]]] = []  # (when, instance, {kid: status}) of the admin listing
    try:
        time.sleep(WARM_UP)
        # rotate late in a second: activates_at counts from the whole second, the shortest delay there is
        time.sleep((LATE_IN_A_SECOND - time.time() % 1) % 1)
        asked = time.time()
        status, _, staged = a.request("POST", "/v1/admin/signing-keys/rotate", token=ADMIN_KEY)
        rotated_at = time.time()
        assert status == 201, staged
        new, activates_at = staged["kid"], staged["activates_at"]
        assert staged["status"] == "next" and asked + DELAY - 1 <= activates_at <= rotated_at + DELAY + 1, (asked, staged)

        deadline = rotated_at + DEADLINE
        done = False
        while not done and time.time() < deadline and not run.errors:
            for name, instance in instances.items():
                seen.append((time.time(), name, {kid: e["status"] for kid, e in listing(instance).items()}))
            signers = {m.by for m in run.mints if m.kid == new}
            done = (
                signers == {"A", "B"}
                and all(old not in statuses for _, _, statuses in seen[-2:])
                and all(old not in published(instance) and new in published(instance) for instance in (a, b))
            )
            time.sleep(0.25)
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in threads), "a load thread did not stop"
    assert not run.errors, run.errors
    assert done, f"the rotation did not complete within {DEADLINE} s: last listings {seen[-2:]}"

    mints = run.mints
    report = summary(mints, old, new, activates_at, run.snapshots)
    print(report)  # shown with -s: what the run measured

    # 1. no fresh valid token fails
    refused = [m for m in mints if m.status != 200]
    assert not refused, f"mints refused: {refused[:5]}\n{report}"
    failed = [m for m in mints if m.verified != 200]
    assert not failed, f"fresh tokens refused by the other instance: {failed[:5]}\n{report}"

    # 2. no token signed by a key a gateway could not have seen yet
    unseen = []
    for m in mints:
        for index in range(GATEWAYS):
            held = run.held_at(index, m.ended)
            if held is None or (m.kid not in held.kids and m.ended < held.fresh_until):
                unseen.append((index, m, held))
    assert not unseen, f"tokens signed by a key missing from a gateway's fresh JWKS: {unseen[:3]}\n{report}"

    # 3. both instances switch at activates_at
    early = [m for m in mints if m.kid == new and (m.iat is None or m.iat < activates_at)]
    assert not early, f"the new key signed before activates_at {activates_at}: {early[:5]}\n{report}"
    late = [m for m in mints if m.kid == old and m.started > activates_at + 1]
    assert not late, f"the old key signed after activates_at + 1 s ({activates_at + 1}): {late[:5]}\n{report}"
    assert {m.kid for m in mints} == {old, new}

    # 4. the old key is listed retiring (until its tokens have expired), then disappears
    statuses_of_old = [statuses.get(old) for _, _, statuses in seen]
    assert "retiring" in statuses_of_old, statuses_of_old
    first_retiring = statuses_of_old.index("retiring")
    assert set(statuses_of_old[first_retiring:]) <= {"retiring", None}, statuses_of_old
    assert statuses_of_old[-1] is None and statuses_of_old[-2] is None
    gone_at = min(when for when, _, statuses in seen if when > rotated_at and old not in statuses)
    assert gone_at >= activates_at + HORIZON - 1, "the old key left before its last tokens had expired"
    statuses_of_new = [statuses.get(new) for _, _, statuses in seen]
    assert "next" in statuses_of_new and statuses_of_new[-1] == "current", statuses_of_new
    successor = {statuses.get(new) for _, _, statuses in seen if statuses.get(old) == "retiring"}
    assert successor == {"current"}, successor
    assert {s for _, _, statuses in seen for s in statuses.values()} <= {"next", "current", "retiring"}


def summary(mints: list[Mint], old: str, new: str, activates_at: int, snapshots: list[list[Snapshot]]) -> str:
    """One paragraph of what the run measured."""
    lines = [f"minted {len(mints)} tokens ({sum(m.status == 200 for m in mints)} with 200), "
             f"verified {sum(m.verified == 200 for m in mints)} with 200 through the other instance; "
             f"new key activates_at {activates_at}"]
    for name in ("A", "B"):
        last_old = max((m.ended for m in mints if m.by == name and m.kid == old), default=None)
        first_new = min((m.started for m in mints if m.by == name and m.kid == new), default=None)
        count_old = sum(m.by == name and m.kid == old for m in mints)
        count_new = sum(m.by == name and m.kid == new for m in mints)
        lines.append(f"  {name}: {count_old} by the old key (last ended {fmt(last_old, activates_at)}), "
                     f"{count_new} by the new key (first started {fmt(first_new, activates_at)})")
    for index, fetched in enumerate(snapshots):
        fetches = ", ".join(f"{s.asked - activates_at:+.2f} s {s.source} max-age {s.max_age} {len(s.kids)} keys" for s in fetched)
        lines.append(f"  gateway {index} fetched the JWKS {len(fetched)} times (from activates_at): {fetches}")
    return "\n".join(lines)


def fmt(moment: float | None, reference: int) -> str:
    return "never" if moment is None else f"{moment - reference:+.3f} s from activates_at"
