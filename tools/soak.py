"""A bounded soak test: two gunicorn instances on one real Redis under mixed traffic for a few minutes.

``make soak`` (or ``python -m tools.soak``); ``SOAK_SECONDS=10 make soak`` for a short run. It starts a
redis-server on a free loopback port (append-only file, ``noeviction``, as production needs), two
instances exactly as production runs them (``gunicorn -c config/gunicorn.conf.py wsgi:app``, workers from
``WEB_CONCURRENCY``, a managed key ring under a KEK, a bootstrap admin key), creates keys through the admin
API, then drives mint (secret key, public key with Origin, HMAC-signed), verify, introspect,
self-revocation and sparse admin revocations (jti, sub, personaId) across both instances.

Every answer is checked against a ledger of the revocations the driver made: a token covered by an
acknowledged revocation must be refused by both instances (a *violation* otherwise), a token no
revocation can cover must be accepted (a *failure* otherwise); a 5xx, a connection error, a restarted
worker or an error in an instance's log is an *error*. Every interval it prints a line (and writes it as
JSON to the samples file): requests, errors, rate, the RSS of every gunicorn process, Redis memory,
DBSIZE and revocation entries. It exits 1 on any error, failure or violation, or when a gunicorn
process grew more than ``SOAK_MAX_GROWTH`` percent between the first sample after warm-up and the last.

Settings (environment, or the matching ``--option``): SOAK_SECONDS (180), SOAK_INTERVAL (10),
SOAK_WARMUP (30, at most a third of the run), SOAK_CLIENTS (8 driver threads), SOAK_WORKERS (2 per
instance), SOAK_MAX_GROWTH (10), SOAK_MAX_TTL (60: the instances' max TTL and signature window),
SOAK_ADMIN_INTERVAL (1.5 s between admin revocations), SOAK_VERIFY_CACHE (1000: the instances'
TOKEN_SERVICE_VERIFY_CACHE_SIZE, small enough to fill within the warm-up, so that the memory check sees
leaks, not a bounded cache filling up), SOAK_RUN_DIR
(``run/soak-<UTC time>``: instance logs and ``samples.jsonl``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import harness
from tools.harness import ROOT, call, rss_kib

ORIGIN = "https://chat.soak.test"
PERSONAS = ("support-bot", "billing-bot")
SACRIFICE = "billing-bot"
"""The persona revoked as a whole now and then (its tokens are a fifth of the mints)."""
SUBJECTS = 300
MAX_TTL = 60
"""The default of ``SOAK_MAX_TTL``: a short token lifetime (and signature window), so that every expiring
key in Redis reaches its steady state within a default run: revocation entries are kept for max TTL +
skew, replay entries for the signature window."""
GOOD_MARGIN = 5
"""A token is expected valid only while it has more than this many seconds left."""
POOL = 4000
REVOCATION_PATTERNS = {"entries": "{ts}:rev:rec:*", "markers": "{ts}:rev:on:*"}
"""The keys of the non-jti entries and their markers; jti entries are fields of ``{ts}:rev:j:<shard>`` buckets and
entries of the ``{ts}:rev:jlog`` stream (token_service/jti_buckets.py), counted by ``RedisProcess.stats``."""
JTI_BUCKETS = "{ts}:rev:j:*"
JTI_LOG = "{ts}:rev:jlog"


# --- the ledger: what the driver revoked, and what each token's verdict must therefore be ----------------------

@dataclass(frozen=True)
class Tok:
    """A minted token and the claims the checks need (the text never leaves the driver)."""

    token: str = field(repr=False)
    jti: str
    sub: str
    persona: str
    iat: int
    exp: int

    @staticmethod
    def parse(token: str) -> Tok:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return Tok(token, claims["jti"], claims["sub"], claims["personaId"], int(claims["iat"]), int(claims["exp"]))


class Ledger:
    """Revocations as the driver made them. ``None`` in a watermark list: sent, not yet acknowledged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jtis: dict[str, bool] = {}
        self._marks: dict[tuple[str, str], list[int | None]] = {}

    def start_jti(self, jti: str) -> None:
        with self._lock:
            self._jtis.setdefault(jti, False)

    def ack_jti(self, jti: str) -> None:
        with self._lock:
            self._jtis[jti] = True

    def start_mark(self, kind: str, value: str) -> int:
        """Record a sub/personaId revocation about to be sent; returns its handle for ``ack_mark``."""
        with self._lock:
            marks = self._marks.setdefault((kind, value), [])
            marks.append(None)
            return len(marks) - 1

    def ack_mark(self, kind: str, value: str, handle: int, revoked_at: int) -> None:
        with self._lock:
            self._marks[(kind, value)][handle] = revoked_at

    def verdict(self, tok: Tok, now: float) -> str:
        """``revoked`` (an acknowledged revocation covers it), ``good`` (none sent can cover it and it has
        time left) or ``unknown`` (a revocation that may cover it is in flight or failed, or it expires)."""
        with self._lock:
            acked = self._jtis.get(tok.jti)
            marks = self._marks.get(("sub", tok.sub), []) + self._marks.get(("personaId", tok.persona), [])
        if acked or any(r is not None and tok.iat <= r for r in marks):
            return "revoked"
        if acked is None and all(r is not None for r in marks) and tok.exp - now > GOOD_MARGIN:
            return "good"
        return "unknown"


# --- processes ------------------------------------------------------------------------------------------------------

def family_of(key: str) -> str:
    """The kind of a Redis key, for the breakdown: ``{ts}:rev:rec``, ``{ts}:replay``, ``{ts}:rate``, ..."""
    parts = key.split("/", 1)[0].split(":")
    return ":".join(parts[:3] if len(parts) > 2 and parts[1] in ("rev", "key", "rl") else parts[:2])


class RedisProcess(harness.RedisProcess):
    """The soak's redis-server (tools.harness), with the samples' statistics."""

    def __init__(self, directory: Path):
        super().__init__(directory, prog="soak")

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"used_memory": int(self.client.info("memory")["used_memory"]), "dbsize": int(self.client.dbsize())}
        for name, pattern in REVOCATION_PATTERNS.items():
            out[name] = sum(1 for _ in self.client.scan_iter(match=pattern, count=1000))
        # jti entries: one stream entry each (listing), one bucket field each (the check's marker)
        out["entries"] += int(self.client.xlen(JTI_LOG))
        pipe = self.client.pipeline(transaction=False)
        for bucket in self.client.scan_iter(match=JTI_BUCKETS, count=1000):
            pipe.hlen(bucket)
        out["markers"] += sum(int(n) for n in pipe.execute())
        out["families"] = dict(sorted(Counter(family_of(k) for k in self.client.scan_iter(count=1000)).items()))
        return out


class Instance(harness.Instance):
    """One service instance (tools.harness): gunicorn, config/gunicorn.conf.py, wsgi:app."""

    def __init__(self, name: str, env: dict[str, str], workers: int, log_path: Path):
        super().__init__(name, env, workers, log_path, prog="soak")


# --- the driver -----------------------------------------------------------------------------------------------------

class Driver:
    """Mixed traffic across the instances; every answer checked against the ledger."""

    def __init__(self, ports: list[int], admin_key: str, max_ttl: int = MAX_TTL):
        self.ports = ports
        self.max_ttl = max_ttl
        self.admin_key = admin_key
        self.ledger = Ledger()
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.checks: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.examples: list[str] = []
        self.pool: list[Tok] = []
        self.pool_next = 0
        self.signatures: dict[str, int] = {}
        self.stop = threading.Event()
        self.secret_keys: list[dict[str, Any]] = []
        self.public_key = ""
        self.introspect_key = ""

    # bookkeeping
    def _note(self, counter: Counter[str], what: str, message: str) -> None:
        with self.lock:
            counter[what] += 1
            if len(self.examples) < 20:
                self.examples.append(message)

    def _request(self, kind: str, port: int, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any] | None:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = dict(headers or {})
        if data is not None:
            all_headers.setdefault("Content-Type", "application/json")
        with self.lock:
            self.requests[kind] += 1
        try:
            status, answer = call(port, method, path, data, all_headers)
        except (OSError, http.client.HTTPException) as exc:
            self._note(self.errors, kind, f"{kind} on :{port}: {type(exc).__name__}")
            return None
        if status >= 500:
            self._note(self.errors, kind, f"{kind} on :{port}: {status} {_error_of(answer)}")
            return None
        return status, answer

    def _add(self, tok: Tok) -> None:
        with self.lock:
            if len(self.pool) < POOL:
                self.pool.append(tok)
            else:
                self.pool[self.pool_next] = tok
                self.pool_next = (self.pool_next + 1) % POOL

    def _pick(self) -> Tok | None:
        with self.lock:
            return random.choice(self.pool) if self.pool else None

    # set-up through the admin API
    def create_keys(self) -> None:
        port = self.ports[0]

        def create(body: dict[str, Any]) -> dict[str, Any]:
            got = self._request("admin", port, "POST", "/v1/admin/api-keys", body, _bearer(self.admin_key))
            if got is None or got[0] != 201:
                raise SystemExit(f"soak: creating an API key failed: {got and got[0]} {_error_of(got and got[1])}")
            return dict(got[1])

        for i in range(4):
            self.secret_keys.append(create({"type": "secret", "name": f"soak backend {i}", "personas": list(PERSONAS)}))
        self.introspect_key = create({"type": "secret", "name": "soak introspection", "personas": list(PERSONAS),
                                      "permissions": ["introspect"]})["key"]
        self.public_key = create({"type": "public", "name": "soak web chat", "personas": list(PERSONAS),
                                  "origins": [ORIGIN]})["key"]

    # operations
    def other(self, port: int) -> int:
        return self.ports[1] if port == self.ports[0] else self.ports[0]

    def mint(self) -> None:
        port = random.choice(self.ports)
        persona = SACRIFICE if random.random() < 0.2 else PERSONAS[0]
        kind = random.choice(("secret", "public", "hmac"))
        key = random.choice(self.secret_keys)
        if kind == "secret":
            got = self._request("mint_secret", port, "POST", "/v1/tokens",
                                {"personaId": persona, "sub": f"user-{random.randrange(SUBJECTS)}"}, _bearer(key["key"]))
        elif kind == "public":
            address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
            got = self._request("mint_public", port, "POST", "/v1/tokens", {"personaId": persona},
                                {**_bearer(self.public_key), "Origin": ORIGIN, "X-Forwarded-For": address})
        else:
            while True:  # a signature is accepted once: never send the same (key, second, body) twice
                raw = json.dumps({"personaId": persona, "sub": f"user-{random.randrange(SUBJECTS)}"}).encode()
                stamp = str(int(time.time()))
                signature = hmac.new(key["key"].encode(), stamp.encode() + raw, hashlib.sha256).hexdigest()
                with self.lock:
                    if signature not in self.signatures:
                        self.signatures[signature] = int(stamp)
                        if len(self.signatures) > 10000:  # forget those past the window
                            self.signatures = {k: v for k, v in self.signatures.items() if v > int(stamp) - 2 * self.max_ttl}
                        break
            got = self._request("mint_hmac", port, "POST", "/v1/tokens", raw=raw,
                                headers={"X-Key-Id": key["id"], "X-Timestamp": stamp, "X-Signature": signature})
        if got is None:
            return
        if got[0] != 200 or not isinstance(got[1], dict) or "token" not in got[1]:
            self._note(self.failures, f"mint_{kind}", f"mint ({kind}) on :{port}: {got[0]} {_error_of(got[1])}")
            return
        tok = Tok.parse(got[1]["token"])
        self.verify(tok, self.other(port), "verify_fresh")
        self._add(tok)

    def verify(self, tok: Tok, port: int, kind: str = "verify") -> None:
        before = self.ledger.verdict(tok, time.time())
        got = self._request(kind, port, "GET", "/v1/verify", headers=_bearer(tok.token))
        if got is None:
            return
        status = got[0]
        self._judge(kind, port, before, self.ledger.verdict(tok, time.time()), status == 200, status in (200, 401),
                    f"{status} {_error_of(got[1])}")

    def introspect(self) -> None:
        tok = self._pick()
        if tok is None:
            return
        port = random.choice(self.ports)
        before = self.ledger.verdict(tok, time.time())
        got = self._request("introspect", port, "POST", "/v1/introspect", {"token": tok.token}, _bearer(self.introspect_key))
        if got is None:
            return
        active = isinstance(got[1], dict) and got[1].get("active") is True
        expected_shape = got[0] == 200 and isinstance(got[1], dict) and (active or got[1] == {"active": False})
        self._judge("introspect", port, before, self.ledger.verdict(tok, time.time()), active, expected_shape,
                    f"{got[0]} active={active}")

    def _judge(self, kind: str, port: int, before: str, after: str, accepted: bool, expected_shape: bool, seen: str) -> None:
        if before == "revoked":
            if accepted:
                self._note(self.violations, kind, f"{kind} on :{port}: a revoked token was accepted")
            else:
                with self.lock:
                    self.checks["revoked_refused"] += 1
        elif after == "good":
            if accepted:
                with self.lock:
                    self.checks["good_accepted"] += 1
            else:
                self._note(self.failures, kind, f"{kind} on :{port}: a valid token was refused: {seen}")
        if not expected_shape:
            self._note(self.failures, kind, f"{kind} on :{port}: unexpected answer {seen}")

    def self_revoke(self) -> None:
        tok = self._pick()
        if tok is None:
            return
        port = random.choice(self.ports)
        self.ledger.start_jti(tok.jti)
        got = self._request("self_revoke", port, "POST", "/v1/revoke", {"token": tok.token})
        if got is None:
            return
        if got[0] != 200 or got[1] != {}:
            self._note(self.failures, "self_revoke", f"self_revoke on :{port}: {got[0]} {_error_of(got[1])}")
            return
        self.ledger.ack_jti(tok.jti)
        for p in self.ports:
            self.verify(tok, p)

    def admin_revoke(self, n: int) -> None:
        tok = self._pick()
        if tok is None:
            return
        port = random.choice(self.ports)
        if n % 10 == 9:
            kind, value = "personaId", SACRIFICE
        elif n % 4 == 3:
            kind, value = "sub", tok.sub
        else:
            kind, value = "jti", tok.jti
        handle = 0
        if kind == "jti":
            self.ledger.start_jti(value)
        else:
            handle = self.ledger.start_mark(kind, value)
        got = self._request(f"admin_{kind}", port, "POST", "/v1/admin/revocations", {kind: value, "reason": "soak"},
                            _bearer(self.admin_key))
        if got is None:
            return
        if got[0] != 201 or not isinstance(got[1], dict):
            self._note(self.failures, f"admin_{kind}", f"admin revocation ({kind}) on :{port}: {got[0]} {_error_of(got[1])}")
            return
        if kind == "jti":
            self.ledger.ack_jti(value)
        else:
            self.ledger.ack_mark(kind, value, handle, int(got[1]["revoked_at"]))
        for p in self.ports:
            self.verify(tok, p)

    # threads
    def _safely(self, step: Any, *args: Any) -> None:
        """Run one step; a bug or an answer the driver cannot read counts as an error instead of ending the thread."""
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - any crash of a step is reported in the summary, never lost
            self._note(self.errors, "driver", f"driver step {step.__name__} raised {type(exc).__name__}")

    def client_loop(self) -> None:
        while not self.stop.is_set():
            self._safely(self._client_step)

    def _client_step(self) -> None:
        r = random.random()
        if r < 0.30 or not self.pool:
            self.mint()
        elif r < 0.75:
            tok = self._pick()
            if tok is not None:
                self.verify(tok, random.choice(self.ports))
        elif r < 0.95:
            self.introspect()
        else:
            self.self_revoke()

    def admin_loop(self, interval: float) -> None:
        n = 0
        while not self.stop.wait(interval):
            self._safely(self.admin_revoke, n)
            n += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": dict(self.requests), "checks": dict(self.checks), "errors": dict(self.errors),
                    "failures": dict(self.failures), "violations": dict(self.violations)}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _error_of(body: Any) -> str:
    return str(body.get("error", "")) if isinstance(body, dict) else ""


# --- sampling, summary ----------------------------------------------------------------------------------------------

def processes(instances: list[Instance]) -> dict[str, int]:
    """Label -> pid of every gunicorn process: ``A master``, ``A worker 1``, ..."""
    out: dict[str, int] = {}
    for inst in instances:
        if inst.process is None:
            continue
        out[f"{inst.name} master"] = inst.process.pid
        for i, pid in enumerate(inst.workers(), 1):
            out[f"{inst.name} worker {i}"] = pid
    return out


def verdict(summary: dict[str, Any], max_growth: float) -> list[str]:
    """Why the run failed (empty: it passed)."""
    reasons = []
    for what in ("errors", "failures", "violations"):
        if summary[what]:
            reasons.append(f"{summary[what]} {what}")
    for label, growth in summary["memory"].items():
        if growth["percent"] > max_growth:
            reasons.append(f"{label} grew {growth['percent']:.1f}% (> {max_growth:g}%)")
    return reasons


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m tools.soak", description="Soak two instances on one Redis.")
    parser.add_argument("--seconds", type=float, default=float(env.get("SOAK_SECONDS", 180)))
    parser.add_argument("--interval", type=float, default=float(env.get("SOAK_INTERVAL", 10)))
    parser.add_argument("--warmup", type=float, default=float(env.get("SOAK_WARMUP", 30)))
    parser.add_argument("--clients", type=int, default=int(env.get("SOAK_CLIENTS", 8)))
    parser.add_argument("--workers", type=int, default=int(env.get("SOAK_WORKERS", 2)))
    parser.add_argument("--max-growth", type=float, default=float(env.get("SOAK_MAX_GROWTH", 10)))
    parser.add_argument("--max-ttl", type=int, default=int(env.get("SOAK_MAX_TTL", MAX_TTL)))
    parser.add_argument("--admin-interval", type=float, default=float(env.get("SOAK_ADMIN_INTERVAL", 1.5)))
    parser.add_argument("--verify-cache", type=int, default=int(env.get("SOAK_VERIFY_CACHE", 1000)))
    stamp = time.strftime("soak-%Y%m%dT%H%M%SZ", time.gmtime())
    parser.add_argument("--run-dir", default=env.get("SOAK_RUN_DIR") or str(ROOT / "run" / stamp))
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.clients < 1 or args.workers < 1 or args.interval <= 0 or args.admin_interval <= 0 \
            or args.max_ttl < 1 or args.verify_cache < 0:
        parser.error("seconds, interval, admin interval, clients, workers and max TTL must be positive")
    interval = min(args.interval, max(1.0, args.seconds / 5))
    warmup = min(args.warmup, args.seconds / 3)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    samples_path = run_dir / "samples.jsonl"

    admin_key = secrets.token_urlsafe(32)
    store = RedisProcess(run_dir / "redis")
    service_env = {
        "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": secrets.token_hex(32),
        "TOKEN_SERVICE_ADMIN_KEY": admin_key,
        "TOKEN_SERVICE_AUTH_ADAPTERS": "api_key,hmac",
        "TOKEN_SERVICE_TRUSTED_PROXIES": "1",  # behind one load balancer: public mints come from many addresses
        "TOKEN_SERVICE_MAX_TTL": str(args.max_ttl),
        "TOKEN_SERVICE_SIGNATURE_WINDOW": str(args.max_ttl),
        "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
        "TOKEN_SERVICE_VERIFY_CACHE_SIZE": str(args.verify_cache),
    }
    instances: list[Instance] = []
    samples: list[dict[str, Any]] = []
    driver: Driver | None = None
    threads: list[threading.Thread] = []
    try:
        store.start()
        service_env["TOKEN_SERVICE_REDIS_URL"] = store.url
        for name in ("A", "B"):  # A creates the ring's first key, B reads it
            inst = Instance(name, service_env, args.workers, run_dir / f"instance-{name}.log")
            instances.append(inst)
            inst.start(args.workers)
        driver = Driver([i.port for i in instances], admin_key, args.max_ttl)
        driver.create_keys()
        initial_pids = processes(instances)
        print(f"soak: {args.seconds:g} s, {args.clients} clients, 2 instances x {args.workers} workers, redis :{store.port} "
              f"(appendonly), samples every {interval:g} s, warm-up {warmup:g} s -> {samples_path}", flush=True)

        threads = [threading.Thread(target=driver.client_loop, daemon=True) for _ in range(args.clients)]
        threads.append(threading.Thread(target=driver.admin_loop, args=(args.admin_interval,), daemon=True))
        start = time.monotonic()
        for t in threads:
            t.start()
        last_total, last_time = 0, start
        with samples_path.open("w") as out:
            while True:
                end = start + args.seconds
                next_at = min(last_time + interval, end)
                time.sleep(max(0.0, next_at - time.monotonic()))
                now = time.monotonic()
                if now >= end - 0.01:
                    driver.stop.set()
                    for t in threads:
                        t.join(timeout=30)
                    now = time.monotonic()
                snap = driver.snapshot()
                total = sum(snap["requests"].values())
                pids = processes(instances)
                sample = {
                    "elapsed": round(now - start, 1), **snap, "total": total,
                    "rps": round((total - last_total) / max(now - last_time, 1e-6), 1),
                    "rss_kib": {label: rss_kib(pid) for label, pid in pids.items()},
                    "pids": pids, "redis": store.stats(),
                }
                if pids != initial_pids:
                    driver._note(driver.errors, "worker_restart", f"gunicorn processes changed: {initial_pids} -> {pids}")
                    initial_pids = pids
                samples.append(sample)
                out.write(json.dumps(sample) + "\n")
                out.flush()
                print(line_of(sample), flush=True)
                last_total, last_time = total, now
                if driver.stop.is_set():
                    break
    finally:
        if driver is not None:
            driver.stop.set()
            for t in threads:
                t.join(timeout=30)
        harness.stop_all(instances, store)

    assert driver is not None
    log_problems = [f"{inst.name}: {line}" for inst in instances for line in inst.log_problems()]
    summary = summarize(samples, warmup, log_problems)
    print(summary_text(summary, samples, driver.examples, log_problems, args.max_growth), flush=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if verdict(summary, args.max_growth) else 0


def line_of(s: dict[str, Any]) -> str:
    req = s["requests"]
    mints = sum(v for k, v in req.items() if k.startswith("mint"))
    verifies = req.get("verify", 0) + req.get("verify_fresh", 0)
    revokes = req.get("self_revoke", 0) + sum(v for k, v in req.items() if k.startswith("admin_"))
    rss = " ".join(f"{label.replace(' worker ', 'w').replace(' master', 'm')}={mib(v)}" for label, v in s["rss_kib"].items() if v)
    r = s["redis"]
    return (f"t={s['elapsed']:6.1f}s req={s['total']} (mint {mints} verify {verifies} introspect {req.get('introspect', 0)} "
            f"revoke {revokes}) err={sum(s['errors'].values())} fail={sum(s['failures'].values())} "
            f"viol={sum(s['violations'].values())} rps={s['rps']:.0f} | rss MiB {rss} | redis {r['used_memory'] / 1048576:.2f} MiB "
            f"dbsize={r['dbsize']} rev entries={r['entries']} markers={r['markers']}")


def summarize(samples: list[dict[str, Any]], warmup: float, log_problems: list[str]) -> dict[str, Any]:
    last = samples[-1]
    base = next((s for s in samples if s["elapsed"] >= warmup), samples[0])
    memory = {}
    for label, kib in last["rss_kib"].items():
        first = base["rss_kib"].get(label)
        if kib and first and base["pids"].get(label) == last["pids"].get(label):
            memory[label] = {"from_kib": first, "to_kib": kib, "delta_kib": kib - first, "percent": 100.0 * (kib - first) / first}
    redis_trend = {name: [s["redis"][name] for s in samples] for name in ("dbsize", "entries", "markers", "used_memory")}
    return {
        "seconds": last["elapsed"], "requests": last["requests"], "total": last["total"],
        "rps": round(last["total"] / max(last["elapsed"], 1e-6), 1), "checks": last["checks"],
        "errors": sum(last["errors"].values()) + len(log_problems), "error_kinds": last["errors"],
        "failures": sum(last["failures"].values()), "failure_kinds": last["failures"],
        "violations": sum(last["violations"].values()), "violation_kinds": last["violations"],
        "memory_baseline_at": base["elapsed"], "memory": memory, "redis": redis_trend,
    }


def summary_text(summary: dict[str, Any], samples: list[dict[str, Any]], examples: list[str], log_problems: list[str],
                 max_growth: float) -> str:
    out = ["", f"== soak summary: {summary['seconds']:g} s, {summary['total']} requests, {summary['rps']:g} req/s on average"]
    out.append("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["requests"].items())))
    out.append(f"checks: {summary['checks'].get('good_accepted', 0)} valid tokens accepted, "
               f"{summary['checks'].get('revoked_refused', 0)} revoked tokens refused")
    out.append(f"errors: {summary['errors']} {summary['error_kinds'] or ''}  failures: {summary['failures']} "
               f"{summary['failure_kinds'] or ''}  violations: {summary['violations']} {summary['violation_kinds'] or ''}")
    out.append(f"memory (RSS, from t={summary['memory_baseline_at']:g}s to the end; limit +{max_growth:g}%):")
    for label, g in summary["memory"].items():
        out.append(f"  {label:<11} {mib(g['from_kib']):>7} -> {mib(g['to_kib']):>7} MiB  "
                   f"({g['delta_kib'] / 1024:+.1f} MiB, {g['percent']:+.1f}%)")
    r = summary["redis"]
    out.append(f"redis: dbsize {r['dbsize'][0]} -> max {max(r['dbsize'])} -> {r['dbsize'][-1]}; revocation entries "
               f"{r['entries'][0]} -> max {max(r['entries'])} -> {r['entries'][-1]}; markers {r['markers'][0]} -> max "
               f"{max(r['markers'])} -> {r['markers'][-1]}; used_memory {r['used_memory'][0] / 1048576:.2f} -> "
               f"{r['used_memory'][-1] / 1048576:.2f} MiB")
    out.append("redis keys by kind, first sample -> last: " + ", ".join(
        f"{name} {samples[0]['redis']['families'].get(name, 0)} -> {n}" for name, n in samples[-1]["redis"]["families"].items()))
    for line in examples[:10] + log_problems[:10]:
        out.append(f"  ! {line}")
    reasons = verdict(summary, max_growth)
    out.append("result: PASS" if not reasons else "result: FAIL (" + "; ".join(reasons) + ")")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
