"""The benchmark (issue 7): ``make bench`` (or ``python -m tools.bench``); see docs/performance.md.

It starts a redis-server on a free loopback port (AOF, ``noeviction``, as production needs) and the service
exactly as production runs it (``gunicorn -c config/gunicorn.conf.py wsgi:app``, a static signing key from a
PEM file, Redis), then drives each scenario with wrk (``--latency``, the Lua scripts of ``tools/wrk/``) and
prints, from the same run: req/s, p50 and p99 per scenario, a one-route Flask app under the same gunicorn
settings (the framework floor), the single-core crypto rates of the configured algorithm (PyJWT, the
service's TokenCodec, the in-process ``token_service.verifier.Verifier``), Redis memory per revoked jti with
0 and with a million revocations, the store shrinking back as they expire, and the ratios that issue 7's
targets name, each marked met or not met. The results also go to ``run/bench-<UTC time>/results.json``.

Settings (environment): BENCH_SECONDS (10 per scenario), BENCH_CONNECTIONS (32), BENCH_WORKERS (gunicorn
workers; default: what config/gunicorn.conf.py chooses), BENCH_SHORT=1 (about 1 s per scenario, 2,000
revocations instead of a million: proves the command works, for CI), BENCH_REVOCATIONS (1000000),
BENCH_TOKENS (at least this many distinct tokens for the fresh-token scenarios: 20000), BENCH_ALG (ES256),
BENCH_GUNICORN_ARGS (extra gunicorn flags, e.g. ``--worker-class gthread --threads 4``: they override the
config file), BENCH_SCENARIOS (a comma-separated subset of SCENARIOS), BENCH_RUN_DIR.

Exit status: 0 when every scenario ran and got only the answers it expects (a target not met does not fail
the run: the numbers are for reading), 1 otherwise, 2 for a bad setting. Nothing it prints or writes holds a
token or a key: they live in a private temporary directory, removed at the end.
"""

from __future__ import annotations

import base64
import concurrent.futures
import importlib.metadata
import json
import os
import platform
import random
import re
import runpy
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import redis

from tools.harness import ROOT, Instance, RedisProcess, call, stop_all

PROG = "bench"
WRK_DIR = ROOT / "tools" / "wrk"
ISSUER = "http://localhost:8000"
AUDIENCE = "persona-api"
PERSONA = "support-bot"
JTI_BUCKETS = "{ts}:rev:j:*"  # stores/redis.py: jti entries are fields of these hash buckets
JTI_STREAM = "{ts}:rev:jlog"  # and entries of this stream (listing, feed)

# wrk scenarios: name -> (label, Lua script, request path, extra wrk environment)
SCENARIOS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "flask": ("bare Flask, one route (the floor)", "flask.lua", "/", {}),
    "mint": ("mint (secret key)", "mint.lua", "/v1/tokens", {}),
    "verify_fresh": ("verify, fresh tokens", "verify.lua", "/v1/verify", {}),
    "verify_repeated": ("verify, one token repeated", "verify.lua", "/v1/verify", {"BENCH_REPEAT": "1"}),
    "introspect_fresh": ("introspect, fresh tokens", "introspect.lua", "/v1/introspect", {}),
    "introspect_repeated": ("introspect, one token repeated", "introspect.lua", "/v1/introspect", {"BENCH_REPEAT": "1"}),
    "verify_fresh_loaded": ("verify, fresh tokens, {n} revocations", "verify.lua", "/v1/verify", {}),
    "verify_repeated_loaded": ("verify, one token, {n} revocations", "verify.lua", "/v1/verify", {"BENCH_REPEAT": "1"}),
    "revoke": ("admin revocation (jti)", "revoke.lua", "/v1/admin/revocations", {}),
}
GROUPS = {"inproc", "revocations"}
"""Parts of the run that are not one wrk scenario: the in-process rates, the million revocations (loading,
memory, the loaded verify scenarios, expiry)."""

# Issue 7's reference figures and targets (on this kind of machine: 2 cores, wrk with 32 connections).
EXPRESS_VERIFY = 4250.0
"""express + jsonwebtoken + ioredis on node:cluster, verify req/s."""
FJE_MINT = 3100.0
"""Flask-JWT-Extended + a Redis blocklist, mint req/s."""


@dataclass
class Options:
    seconds: int
    connections: int
    workers: int
    short: bool
    revocations: int
    tokens: int
    alg: str
    gunicorn_args: list[str]
    scenarios: set[str]
    run_dir: Path
    warmup: int
    inproc_seconds: float
    wrk_threads: int


class BenchError(Exception):
    """A scenario could not be measured (setup failed, or answers were not what it expects)."""


def _env_int(name: str, default: int, low: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low:
        raise SystemExit(_usage(f"{name} must be a whole number of at least {low}, not {raw!r}"))
    return value


def _usage(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def config_workers() -> int:
    """The worker count config/gunicorn.conf.py chooses in this environment."""
    return int(runpy.run_path(str(ROOT / "config" / "gunicorn.conf.py"))["workers"])


def options() -> Options:
    env = os.environ
    short = env.get("BENCH_SHORT", "") == "1"
    seconds = _env_int("BENCH_SECONDS", 1 if short else 10, 1)
    workers = _env_int("BENCH_WORKERS", 0, 1) or config_workers()
    alg = env.get("BENCH_ALG", "ES256")
    if alg not in ("ES256", "EdDSA", "RS256"):
        raise SystemExit(_usage(f"BENCH_ALG must be ES256, EdDSA or RS256, not {alg!r}"))
    names = [n.strip() for n in env.get("BENCH_SCENARIOS", "").split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS) - GROUPS)
    if unknown:
        raise SystemExit(_usage(f"BENCH_SCENARIOS: unknown {', '.join(unknown)} (known: {', '.join([*SCENARIOS, *sorted(GROUPS)])})"))
    chosen = set(names) or set(SCENARIOS) | GROUPS
    if chosen & {"verify_fresh_loaded", "verify_repeated_loaded"}:
        chosen.add("revocations")
    if "revocations" in chosen:
        chosen |= {"verify_fresh_loaded", "verify_repeated_loaded"}
    stamp = time.strftime("bench-%Y%m%dT%H%M%SZ", time.gmtime())
    return Options(
        seconds=seconds, connections=_env_int("BENCH_CONNECTIONS", 32, 1), workers=workers, short=short,
        revocations=_env_int("BENCH_REVOCATIONS", 2000 if short else 1_000_000, 0),
        tokens=_env_int("BENCH_TOKENS", 200 if short else 20_000, 1), alg=alg,
        gunicorn_args=shlex.split(env.get("BENCH_GUNICORN_ARGS", "")), scenarios=chosen,
        run_dir=Path(env.get("BENCH_RUN_DIR") or ROOT / "run" / stamp), warmup=0 if short else 1,
        inproc_seconds=0.3 if short else 2.0, wrk_threads=max(1, min(len(os.sched_getaffinity(0)), 4)),
    )


# --- machine ------------------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), 0)
    versions = {}
    for package in ("gunicorn", "flask", "pyjwt", "cryptography", "redis", "hiredis"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return {
        "cores": len(os.sched_getaffinity(0)), "cpu": cpu, "memory_gib": round(mem_kib / 1048576, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
        "packages": versions, "redis": next((w.split("=", 1)[1] for w in redis_version if w.startswith("v=")), None),
        "wrk": wrk_version.strip(), "kernel": platform.release(),
    }


# --- wrk ----------------------------------------------------------------------------------------------------------

RESULT_RE = re.compile(r"^BENCH_RESULT (\{.*\})$", re.M)


def run_wrk(opts: Options, port: int, script: str, path: str, seconds: int, env: dict[str, str],
            log: Path | None = None) -> dict[str, Any]:
    """One wrk run: its BENCH_RESULT line (tools/wrk/common.lua's ``done``) with req/s and latencies in ms."""
    args = ["wrk", f"-t{opts.wrk_threads}", f"-c{opts.connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
            "-s", str(WRK_DIR / script), f"http://127.0.0.1:{port}{path}"]
    wrk_env = {**os.environ, **env, "BENCH_WRK_THREADS": str(opts.wrk_threads)}
    done = subprocess.run(args, env=wrk_env, capture_output=True, text=True, timeout=seconds + 120)
    if log is not None:
        with log.open("a") as out:
            out.write(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    match = RESULT_RE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-400:]}")
    raw = json.loads(match.group(1))
    seconds_run = raw["duration_us"] / 1e6
    socket_errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    return {
        "requests": raw["requests"], "seconds": round(seconds_run, 2), "rps": round(raw["requests"] / seconds_run, 1),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000, "mean_ms": round(raw["mean_us"] / 1000, 3),
        "unexpected": raw["unexpected"], "socket_errors": socket_errors, "wrk": raw,
    }


# --- the service --------------------------------------------------------------------------------------------------

class Service:
    """The service under test and what the scenarios need from it: keys (their texts in the private directory)."""

    def __init__(self, opts: Options, redis_url: str, secrets_dir: Path, run_dir: Path):
        from token_service.keys import SigningKey

        self.opts = opts
        self.signing_key = SigningKey.generate(opts.alg)  # type: ignore[arg-type]
        pem = secrets_dir / "signing.pem"
        pem.write_bytes(self.signing_key.private_pem())
        pem.chmod(0o600)
        self.admin_key = secrets.token_urlsafe(32)
        self.env = {
            "TOKEN_SERVICE_REDIS_URL": redis_url,
            "TOKEN_SERVICE_SIGNING_KEY_FILE": str(pem),
            "TOKEN_SERVICE_SIGNING_ALG": opts.alg,
            "TOKEN_SERVICE_ADMIN_KEY": self.admin_key,
            "TOKEN_SERVICE_ISSUER": ISSUER,
            "TOKEN_SERVICE_AUDIENCE": AUDIENCE,
            # raised so that the limits never answer 429 in a scenario; each check still runs (one Redis INCR)
            "TOKEN_SERVICE_RATE_LIMIT_SECRET_MINT": "100000000/minute",
            "TOKEN_SERVICE_RATE_LIMIT_ADMIN": "100000000/minute",
        }
        self.secrets_dir = secrets_dir
        self.run_dir = run_dir
        self.instance: Instance | None = None
        self.key_files: dict[str, Path] = {}

    def start(self, app: str = "wsgi:app", name: str = "service", ready_path: str = "/readyz") -> Instance:
        inst = Instance(name, self.env, self.opts.workers, self.run_dir / f"{name}.log", app=app,
                        extra_args=self.opts.gunicorn_args, prog=PROG, ready_path=ready_path)
        inst.start(self.opts.workers)
        return inst

    def create_keys(self, port: int) -> None:
        """A secret key that mints, one granted introspect, an admin key: through the admin API, as an operator would."""
        bodies = {
            "mint": {"type": "secret", "name": "bench mint", "personas": [PERSONA]},
            "introspect": {"type": "secret", "name": "bench introspect", "personas": [PERSONA], "permissions": ["introspect"]},
            "admin": {"type": "admin", "name": "bench admin"},
        }
        for name, body in bodies.items():
            status, answer = call(port, "POST", "/v1/admin/api-keys", json.dumps(body).encode(),
                                  {"Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"})
            if status != 201:
                raise BenchError(f"creating the {name} key: {status} {_error_of(answer)}")
            path = self.secrets_dir / f"{name}.key"
            path.write_text(answer["key"] + "\n")
            path.chmod(0o600)
            self.key_files[name] = path

    def key(self, name: str) -> str:
        return self.key_files[name].read_text().strip()


def _error_of(body: Any) -> str:
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def mint_tokens(port: int, key: str, count: int, threads: int = 8) -> list[str]:
    """``count`` tokens through the API (parallel clients), for the fresh-token scenarios."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    counter = iter(range(count))
    lock = threading.Lock()

    def work() -> list[str]:
        got = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return got
            body = json.dumps({"personaId": PERSONA, "sub": f"user-topup-{i % 10000}"}).encode()
            for attempt in range(3):  # a 503 (Redis slower than its timeout on a loaded machine) is retried here: untimed
                status, answer = call(port, "POST", "/v1/tokens", body, headers)
                if status != 503:
                    break
                time.sleep(0.2 * (attempt + 1))
            if status != 200:
                raise BenchError(f"minting: {status} {_error_of(answer)}")
            got.append(answer["token"])

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [t for part in pool.map(lambda _: work(), range(threads)) for t in part]


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def check_answers(port: int, service: Service, tokens: Sequence[str]) -> None:
    """A few tokens verify and introspect as active before anything is timed (a broken set-up fails fast)."""
    for token in tokens[:3]:
        status, body = call(port, "GET", f"/v1/verify?personaId={PERSONA}", None, {"Authorization": f"Bearer {token}"})
        if status != 200:
            raise BenchError(f"a freshly minted token does not verify: {status} {_error_of(body)}")
        status, body = call(port, "POST", "/v1/introspect", f"token={token}".encode(),
                            {"Authorization": f"Bearer {service.key('introspect')}",
                             "Content-Type": "application/x-www-form-urlencoded"})
        if status != 200 or not (isinstance(body, dict) and body.get("active") is True):
            raise BenchError(f"a freshly minted token does not introspect as active: {status}")


# --- in-process rates ---------------------------------------------------------------------------------------------

def rate(fn: Callable[[Any], object], items: Iterator[Any], seconds: float) -> dict[str, Any]:
    """Calls per second of ``fn`` over ``items`` for about ``seconds`` (or until the items run out)."""
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    try:
        while True:
            for _ in range(50):
                fn(next(items))
                calls += 1
            if time.perf_counter() >= deadline:
                break
    except StopIteration:
        pass
    elapsed = time.perf_counter() - start
    return {"ops_per_s": round(calls / elapsed, 1), "calls": calls, "seconds": round(elapsed, 3)}


def cycle(items: Sequence[Any]) -> Iterator[Any]:
    while True:
        yield from items


def in_process(opts: Options, service: Service, port: int, redis_url: str, tokens: Sequence[str]) -> dict[str, Any]:
    """Single-thread rates in this process, no HTTP: PyJWT, the service's codec, the local Verifier."""
    from token_service.claims import AccessClaims
    from token_service.keys import KeyRing
    from token_service.tokens import TokenCodec
    from token_service.verifier import FeedRevocations, Verifier
    from token_service.verifier.redis_source import RedisRevocations

    key, alg, secs = service.signing_key, opts.alg, opts.inproc_seconds
    claims = claims_of(tokens[0])  # the service's own claim set
    headers = {"typ": "at+jwt", "kid": key.kid}
    out: dict[str, Any] = {"alg": alg, "claims": sorted(claims)}
    out["pyjwt_encode"] = rate(lambda c: jwt.encode(c, key.private_key, algorithm=alg, headers=headers), cycle([claims]), secs)
    out["pyjwt_decode"] = rate(lambda t: jwt.decode(t, key.public_key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER,
                                                    leeway=30), cycle(tokens), secs)
    codec, ring = TokenCodec(ISSUER, AUDIENCE, 30), KeyRing.single(key)
    access = AccessClaims.from_dict(claims)
    assert access is not None
    out["codec_encode"] = rate(lambda c: codec.encode(c, key), cycle([access]), secs)
    out["codec_verify"] = rate(lambda t: codec.verify(t, ring, time.time()), cycle(tokens), secs)

    jwks_url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    feed = FeedRevocations(f"http://127.0.0.1:{port}", service.key("introspect"), poll_interval=5, staleness_bound=30)
    live = RedisRevocations(redis_url)
    try:
        deadline = time.monotonic() + 10
        while feed.age() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if feed.age() is None or not live.wait_current(10):
            raise BenchError("the verifier's revocation sources did not become current")
        # Fresh tokens: each used once (a claims cache, if the Verifier keeps one, cannot answer them), split
        # between the two sources; the repeated token is tokens[0].
        half = len(tokens) // 2
        for name, source, fresh in (("feed", feed, tokens[1:half]), ("redis", live, tokens[half:])):
            verifier = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=jwks_url, revocations=source)
            verifier.verify(tokens[0], persona_id=PERSONA)  # keys fetched, markers cached
            out[f"verifier_{name}_repeated"] = rate(lambda t, v=verifier: v.verify(t, persona_id=PERSONA), cycle([tokens[0]]), secs)
            out[f"verifier_{name}_fresh"] = rate(lambda t, v=verifier: v.verify(t, persona_id=PERSONA), iter(fresh), secs)
            out[f"verifier_{name}_fresh"]["distinct_tokens"] = len(fresh)
    finally:
        feed.close()
        live.close()
    return out


# --- revocations at scale -----------------------------------------------------------------------------------------

def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def load_revocations(client: Any, count: int, expires_at: Callable[[float], int], batch: int = 2000,
                     reason: str | None = "revoked by its holder", ahead: float = 0.0) -> dict[str, Any]:
    """``count`` jti revocations written by the service's own RevocationStore.add (its Lua script), queued on a
    pipeline ``batch`` at a time, as logouts make them (POST /v1/revoke: uuid4 jti, the holder's reason).
    ``expires_at(now)``: when the entries may be forgotten; ``ahead``: seconds the store's clock runs ahead."""
    from token_service.revocation import Revocation, new_revocation_id
    from token_service.stores.redis import RedisRevocationStore

    pipe = client.pipeline(transaction=False)
    store = RedisRevocationStore(pipe, (lambda: time.time() + ahead) if ahead else time.time)
    start, done = time.perf_counter(), 0
    while done < count:
        n = min(batch, count - done)
        now = time.time()
        until = expires_at(now)
        for _ in range(n):
            jti = str(uuid.uuid4())
            store.add(Revocation(id=new_revocation_id(("jti", jti)), type="jti", value=jti, reason=reason,
                                 revoked_at=int(now), expires_at=until))
        pipe.execute()
        done += n
    elapsed = time.perf_counter() - start
    return {"count": count, "seconds": round(elapsed, 1), "per_s": round(count / max(elapsed, 1e-9))}


def key_memory(client: Any) -> dict[str, Any]:
    """What one revoked jti costs, key by key: MEMORY USAGE of a sample bucket per field, of the stream per
    entry, and the number of buckets (their per-key overhead is shared by their fields)."""
    buckets = [key for key in client.scan_iter(match=JTI_BUCKETS, count=1000)]
    out: dict[str, Any] = {"buckets": len(buckets)}
    if buckets:
        sample = buckets[0]
        fields = int(client.hlen(sample))
        out["bucket_per_field"] = round((client.memory_usage(sample, samples=0) or 0) / max(fields, 1), 1)
        out["bucket_encoding"] = client.object("encoding", sample).decode()
    entries = int(client.xlen(JTI_STREAM)) if client.exists(JTI_STREAM) else 0
    if entries:
        out["stream_per_entry"] = round((client.memory_usage(JTI_STREAM, samples=0) or 0) / entries, 1)
    return out


def revocation_counts(client: Any) -> dict[str, int]:
    """Key counts of the revocation store: all keys, jti buckets and their fields, stream entries, the general
    layout's indexes (the other types), and Redis's memory and expired-keys counter."""
    buckets = list(client.scan_iter(match=JTI_BUCKETS, count=1000))
    pipe = client.pipeline(transaction=False)
    for key in buckets:
        pipe.hlen(key)
    fields = sum(int(n) for n in pipe.execute()) if buckets else 0
    return {"dbsize": int(client.dbsize()), "jti_buckets": len(buckets), "jti_fields": fields,
            "jti_stream": int(client.xlen(JTI_STREAM)) if client.exists(JTI_STREAM) else 0,
            "index": int(client.zcard("{ts}:rev:idx")), "expiry_index": int(client.zcard("{ts}:rev:exp")),
            "used_memory": used_memory(client), "expired_keys": int(client.info("stats")["expired_keys"])}


# --- the run ------------------------------------------------------------------------------------------------------

class Run:
    """One benchmark run: scenario results, the notes to print, the problems that fail it."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.results: dict[str, Any] = {}
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.wrk_log = opts.run_dir / "wrk.txt"

    def say(self, text: str) -> None:
        print(f"{PROG}: {text}", flush=True)

    def scenario(self, name: str, port: int, env: dict[str, str], label_args: dict[str, Any] | None = None) -> None:
        if name not in self.opts.scenarios:
            return
        label, script, path, extra = SCENARIOS[name]
        label = label.format(**(label_args or {}))
        try:
            if self.opts.warmup:
                run_wrk(self.opts, port, script, path, self.opts.warmup, {**env, **extra})
            result = run_wrk(self.opts, port, script, path, self.opts.seconds, {**env, **extra}, self.wrk_log)
        except BenchError as exc:
            self.problems.append(f"{name}: {exc}")
            self.say(f"{label}: FAILED ({exc})")
            return
        result["label"] = label
        self.results[name] = result
        if result["unexpected"]:
            self.problems.append(f"{name}: {result['unexpected']} of {result['requests']} answers were not the expected one")
        self.say(f"{label}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
                 f"{', unexpected ' + str(result['unexpected']) if result['unexpected'] else ''}"
                 f"{', socket errors ' + str(result['socket_errors']) if result['socket_errors'] else ''}")


def main() -> int:
    if shutil.which("wrk") is None:
        print(f"{PROG}: wrk is not on PATH (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 2
    opts = options()
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(opts)
    info = machine()
    run.say(f"{info['cores']} cores ({info['cpu']}), load {info['load_average_at_start']}; gunicorn {opts.workers} workers"
            f"{' ' + ' '.join(opts.gunicorn_args) if opts.gunicorn_args else ''}, wrk {opts.wrk_threads} threads x "
            f"{opts.connections} connections, {opts.seconds} s per scenario{' (short)' if opts.short else ''} -> {opts.run_dir}")
    store = RedisProcess(opts.run_dir / "redis", prog=PROG)
    instances: list[Instance] = []
    revocations: dict[str, Any] = {}
    inproc: dict[str, Any] = {}
    tokens_info: dict[str, Any] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as private:
        secrets_dir = Path(private)  # mode 0700: tokens, keys
        try:
            store.start()
            service = Service(opts, store.url, secrets_dir, opts.run_dir)
            if "flask" in opts.scenarios:
                floor = service.start("tools.bench_flask:app", name="flask", ready_path="/")
                instances.append(floor)
                run.scenario("flask", floor.port, {})
                floor.stop()
            inst = service.start()
            instances.append(inst)
            port = inst.port
            service.create_keys(port)
            tokens_out = secrets_dir / "minted"
            run.scenario("mint", port, {"BENCH_KEY_FILE": str(service.key_files["mint"]), "BENCH_TOKENS_OUT": str(tokens_out)})
            tokens = [line for p in sorted(secrets_dir.glob("minted.*")) for line in p.read_text().splitlines() if line]
            captured = len(tokens)
            if len(tokens) < opts.tokens:
                tokens += mint_tokens(port, service.key("mint"), opts.tokens - len(tokens))
            random.shuffle(tokens)
            tokens_info = {"distinct": len(tokens), "from_mint_scenario": captured, "minted_after": len(tokens) - captured}
            run.say(f"{len(tokens)} distinct tokens ({captured} from the mint scenario, {len(tokens) - captured} minted after it)")
            check_answers(port, service, tokens)
            tokens_file = secrets_dir / "tokens"
            tokens_file.write_text("\n".join(tokens) + "\n")
            tokens_file.chmod(0o600)

            if "inproc" in opts.scenarios:
                inproc = in_process(opts, service, port, store.url, tokens)
                run.say("in-process: " + ", ".join(f"{k} {v['ops_per_s']:.0f}/s" for k, v in inproc.items() if isinstance(v, dict)))

            verify_env = {"BENCH_TOKENS_FILE": str(tokens_file)}
            introspect_env = {**verify_env, "BENCH_KEY_FILE": str(service.key_files["introspect"])}
            run.scenario("verify_fresh", port, verify_env)
            run.scenario("verify_repeated", port, verify_env)
            run.scenario("introspect_fresh", port, introspect_env)
            run.scenario("introspect_repeated", port, introspect_env)

            if "revocations" in opts.scenarios and opts.revocations:
                revocations = revocations_part(run, store, port, verify_env)
            admin_env = {"BENCH_KEY_FILE": str(service.key_files["admin"]), "BENCH_RUN": f"bench-{secrets.token_hex(4)}"}
            run.scenario("revoke", port, admin_env)
            if revocations:
                expiry_part(run, store, revocations)
        except BenchError as exc:
            run.problems.append(str(exc))
            run.say(f"stopped: {exc}")
        finally:
            stop_all(instances, store)

    for inst in instances:
        run.problems += [f"{inst.name} log: {line}" for line in inst.log_problems()[:5]]
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    ratios = ratios_of(run.results, inproc, revocations)
    results = {
        "machine": info,
        "settings": {"seconds": opts.seconds, "connections": opts.connections, "wrk_threads": opts.wrk_threads,
                     "workers": opts.workers, "gunicorn_args": opts.gunicorn_args, "short": opts.short, "alg": opts.alg,
                     "revocations": opts.revocations, "warmup_seconds": opts.warmup,
                     "rate_limits": "secret mint and admin raised to 100000000/minute (still checked per request)"},
        "tokens": tokens_info, "scenarios": run.results, "in_process": inproc, "revocations": revocations,
        "ratios": ratios, "notes": run.notes, "problems": run.problems, "seconds": round(time.monotonic() - started, 1),
    }
    (opts.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results), flush=True)
    print(f"{PROG}: results in {opts.run_dir / 'results.json'}")
    return 1 if run.problems else 0


def revocations_part(run: Run, store: RedisProcess, port: int, verify_env: dict[str, str]) -> dict[str, Any]:
    """Load the revocations (outside any timed window), measure memory, run the loaded verify scenarios."""
    opts = run.opts
    client = redis.Redis(host="127.0.0.1", port=store.port, socket_timeout=30)
    try:
        count = opts.revocations
        # All entries expire at one moment, after the loaded scenarios. The load time is estimated from a probe
        # (1 %, at most 10,000) written the same way into another database of the same Redis, then flushed; the
        # active count is checked after the scenarios. The entries' TTLs are what then shrink the store.
        probe_client = redis.Redis(host="127.0.0.1", port=store.port, db=1, socket_timeout=30)
        try:
            probe = load_revocations(probe_client, max(1, min(count // 100, 10_000)), lambda now: int(now) + 60)
            probe_client.flushdb()
        finally:
            probe_client.close()
        # x3: the probe writes into an empty database, where an add's sweep of its buckets reads nothing
        estimate = count / max(probe["per_s"], 1) * 3
        scenario_time = 2 * (opts.seconds + opts.warmup + (1 if opts.short else 3))
        expires_at = int(time.time() + estimate + scenario_time + (2 if opts.short else 30))
        time.sleep(1)  # the flush's memory returned, the AOF buffer written
        before = revocation_counts(client)
        rest = load_revocations(client, count, lambda now: expires_at)
        time.sleep(1)
        after = revocation_counts(client)
        per_jti: float | None = (after["used_memory"] - before["used_memory"]) / count
        if after["jti_fields"] - before["jti_fields"] < 0.99 * count:  # some expired during the load: no figure
            run.problems.append(f"only {after['jti_fields'] - before['jti_fields']} of {count} loaded revocations were in force "
                                "when the memory was measured (the load was slower than estimated)")
            per_jti = None
        out: dict[str, Any] = {
            "count": count, "load": rest, "expires_at": expires_at, "ttl_after_load_s": round(expires_at - time.time()),
            "before": before, "after_load": after, "bytes_per_jti": None if per_jti is None else round(per_jti, 1),
            "per_key": key_memory(client),
            "probe": probe,
        }
        run.say(f"loaded {count} jti revocations in {rest['seconds']} s ({rest['per_s']}/s) through RevocationStore.add; "
                f"Redis used_memory {before['used_memory'] / 1048576:.1f} -> {after['used_memory'] / 1048576:.1f} MiB: "
                f"{'-' if per_jti is None else f'{per_jti:.0f}'} bytes per revoked jti")
        n = f"{count:,}"
        run.scenario("verify_fresh_loaded", port, verify_env, {"n": n})
        run.scenario("verify_repeated_loaded", port, verify_env, {"n": n})
        active = int(client.xlen(JTI_STREAM)) if time.time() < expires_at else 0  # every loaded entry expires at expires_at
        out["active_after_loaded_scenarios"] = active
        if active < count:
            run.notes.append(f"only {active} of the {count} loaded revocations were still active after the loaded verify "
                             f"scenarios (the load was slower than estimated)")
        return out
    finally:
        client.close()


def expiry_part(run: Run, store: RedisProcess, revocations: dict[str, Any]) -> None:
    """Wait for the loaded entries to expire (bounded) and count what is left of them (buckets, fields, stream)."""
    client = redis.Redis(host="127.0.0.1", port=store.port, socket_timeout=30)
    try:
        expires_at = revocations["expires_at"]
        loaded_keys = revocations["after_load"]["dbsize"] - revocations["before"]["dbsize"]  # the buckets and the stream
        wait = max(0.0, expires_at - time.time())
        run.say(f"waiting {wait:.0f} s for the loaded revocations to expire")
        time.sleep(wait + 1)
        samples = []
        deadline = time.monotonic() + (60 if run.opts.short else 300)
        while True:
            counts = revocation_counts(client)
            counts["t"] = round(time.time() - expires_at, 1)
            samples.append(counts)
            # Redis's own count of expired keys (reading the keys would expire them lazily and hide the cycle)
            counts["expired_since_load"] = counts["expired_keys"] - revocations["after_load"]["expired_keys"]
            # settled: Redis's expiry cycle is done (the buckets that later revocations landed in keep their TTL)
            settled = len(samples) > 2 and samples[-3]["dbsize"] == samples[-2]["dbsize"] == counts["dbsize"]
            if (counts["expired_since_load"] >= 0.995 * loaded_keys or settled) or time.monotonic() > deadline:
                break
            time.sleep(2)
        expired = samples[-1]
        # A jti bucket's and the stream's TTLs follow their latest entry (each add moves them): the buckets that
        # only loaded entries reached, and the stream if nothing came after them, expire whole with no traffic.
        revocations["expiry"] = {"samples": samples, "after_expiry": expired}
        mib = 1048576
        run.say(f"after expiry: used_memory {expired['used_memory'] / mib:.1f} MiB "
                f"(before the load {revocations['before']['used_memory'] / mib:.1f}), dbsize {expired['dbsize']}, "
                f"jti buckets {expired['jti_buckets']} ({expired['jti_fields']} fields), stream entries {expired['jti_stream']}")
        # The rest (buckets that later revocations reached, the stream behind them) goes with traffic: each add
        # sweeps its bucket and SWEEP_EACH_ADD more round-robin, and trims the stream's expired head, once an entry
        # is SWEEP_GRACE past its expiry. JTI_SHARDS / SWEEP_EACH_ADD adds (+ a margin) reach every bucket.
        from token_service.jti_buckets import JTI_SHARDS, SWEEP_EACH_ADD, SWEEP_GRACE

        more = JTI_SHARDS // SWEEP_EACH_ADD + 100
        if run.opts.short:
            ahead = float(SWEEP_GRACE)  # the short mode does not wait: its adds' clock runs the grace ahead
        else:
            ahead = 0.0
            wait = max(0.0, expires_at + SWEEP_GRACE + 1 - time.time())
            run.say(f"waiting {wait:.0f} s for the sweep's grace ({SWEEP_GRACE} s past expiry)")
            time.sleep(wait)
        load = load_revocations(client, more, lambda now: int(now) + 600, ahead=ahead)
        time.sleep(1)
        swept = revocation_counts(client)
        revocations["expiry"]["more"] = {"count": more, "load": load, "clock_ahead_s": ahead}
        revocations["expiry"]["after_sweep"] = swept
        run.say(f"after {more} more revocations: used_memory {swept['used_memory'] / mib:.1f} MiB, dbsize {swept['dbsize']}, "
                f"jti buckets {swept['jti_buckets']} ({swept['jti_fields']} fields), stream entries {swept['jti_stream']}")
    finally:
        client.close()


# --- ratios, targets, the table -----------------------------------------------------------------------------------

def ratios_of(scenarios: dict[str, Any], inproc: dict[str, Any], revocations: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 7's targets, each with its value in this run (None: not measured) and met / not met."""

    def rps(name: str) -> float | None:
        return scenarios[name]["rps"] if name in scenarios else None

    def p99(name: str) -> float | None:
        return scenarios[name]["p99_ms"] if name in scenarios else None

    def ops(name: str) -> float | None:
        return inproc[name]["ops_per_s"] if name in inproc else None

    def div(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    rows: list[tuple[str, float | None, str, float, str]] = []
    for kind in ("fresh", "repeated"):
        v = f"verify_{kind}"
        rows += [
            (f"verify ({kind}) req/s / express peer {EXPRESS_VERIFY:,.0f}", div(rps(v), EXPRESS_VERIFY), ">=", 1.5, "x"),
            (f"verify ({kind}) / bare Flask", div(rps(v), rps("flask")), ">=", 0.8, "x"),
            (f"verify ({kind}) p99", p99(v), "<=", 8.0, "ms"),
        ]
    rows += [
        (f"mint req/s / Flask-JWT-Extended peer {FJE_MINT:,.0f}", div(rps("mint"), FJE_MINT), ">=", 1.6, "x"),
        ("mint / bare Flask", div(rps("mint"), rps("flask")), ">=", 0.7, "x"),
        ("introspect / verify (fresh)", div(rps("introspect_fresh"), rps("verify_fresh")), ">=", 0.9, "x"),
        ("introspect / verify (repeated)", div(rps("introspect_repeated"), rps("verify_repeated")), ">=", 0.9, "x"),
        ("verify with the revocations / with none (fresh)", div(rps("verify_fresh_loaded"), rps("verify_fresh")), ">=", 0.9, "x"),
        ("verify with the revocations / with none (repeated)", div(rps("verify_repeated_loaded"), rps("verify_repeated")), ">=", 0.9, "x"),
        ("Redis bytes per revoked jti", revocations.get("bytes_per_jti"), "<=", 150.0, "B"),
        ("in-process verifier, repeated token, per s (feed)", ops("verifier_feed_repeated"), ">=", 100_000.0, "/s"),
        ("in-process verifier, repeated token, per s (redis)", ops("verifier_redis_repeated"), ">=", 100_000.0, "/s"),
        ("in-process verifier fresh / PyJWT decode (feed)", div(ops("verifier_feed_fresh"), ops("pyjwt_decode")), ">=", 0.85, "x"),
        ("in-process verifier fresh / PyJWT decode (redis)", div(ops("verifier_redis_fresh"), ops("pyjwt_decode")), ">=", 0.85, "x"),
    ]
    out = []
    for name, value, op, target, unit in rows:
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"name": name, "value": None if value is None else round(value, 3), "op": op, "target": target,
                    "unit": unit, "met": met})
    return out


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if unit in ("/s", "B") else f"{value:.2f}"


def table(results: dict[str, Any]) -> str:
    m, s = results["machine"], results["settings"]
    extra = " " + " ".join(s["gunicorn_args"]) if s["gunicorn_args"] else ""
    out = ["", f"== bench ({m['cores']} cores, {m['cpu']}; load average {m['load_average_at_start']} -> {m['load_average_at_end']}; "
               f"gunicorn {s['workers']} workers{extra}; wrk {s['wrk_threads']} threads x {s['connections']} connections, "
               f"{s['seconds']} s each)"]
    out.append(f"{'scenario':<44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>7}")
    for r in results["scenarios"].values():
        errors = r["unexpected"] + r["socket_errors"]
        out.append(f"{r['label']:<44} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['requests']:>9} {errors:>7}")
    tokens = results["tokens"]
    fresh = [results["scenarios"][n]["requests"] for n in ("verify_fresh", "introspect_fresh", "verify_fresh_loaded")
             if n in results["scenarios"]]
    if tokens and fresh:
        out.append(f"(fresh tokens: {tokens['distinct']} distinct, cycled: each used up to ~{max(fresh) / tokens['distinct']:.1f} "
                   f"times per scenario, spread over {results['settings']['workers']} workers)")
    inproc = results["in_process"]
    if inproc:
        out.append("")
        out.append(f"{'in process, one thread, no HTTP (' + inproc['alg'] + ')':<56} {'per s':>10}")
        labels = {
            "pyjwt_encode": "PyJWT encode (loaded key, the service's claims)", "pyjwt_decode": "PyJWT decode (loaded key)",
            "codec_encode": "TokenCodec.encode", "codec_verify": "TokenCodec.verify (strict parse + signature + claims)",
            "verifier_feed_repeated": "Verifier, repeated token (feed revocations)",
            "verifier_feed_fresh": "Verifier, fresh tokens (feed revocations)",
            "verifier_redis_repeated": "Verifier, repeated token (RedisRevocations)",
            "verifier_redis_fresh": "Verifier, fresh tokens (RedisRevocations)",
        }
        for name, label in labels.items():
            if name in inproc:
                out.append(f"{label:<56} {inproc[name]['ops_per_s']:>10,.0f}")
    rev = results["revocations"]
    if rev:
        mib = 1048576
        out.append("")
        out.append(f"revocations: {rev['count']:,} jti loaded in {rev['load']['seconds']} s; Redis used_memory "
                   f"{rev['before']['used_memory'] / mib:.1f} -> {rev['after_load']['used_memory'] / mib:.1f} MiB = "
                   f"{'-' if rev['bytes_per_jti'] is None else format(rev['bytes_per_jti'], '.0f')} bytes per jti "
                   f"(per key: {rev['per_key']})")
        exp = rev.get("expiry")
        if exp:
            left = exp["after_expiry"]
            out.append(f"  after expiry (TTL): {left['used_memory'] / mib:.1f} MiB, dbsize {left['dbsize']}, jti buckets "
                       f"{left['jti_buckets']} ({left['jti_fields']} fields), stream entries {left['jti_stream']}")
            swept = exp.get("after_sweep")
            if swept:
                out.append(f"  after {exp['more']['count']:,} more revocations (sweeps): {swept['used_memory'] / mib:.1f} MiB, dbsize "
                           f"{swept['dbsize']}, jti buckets {swept['jti_buckets']} ({swept['jti_fields']} fields), "
                           f"stream entries {swept['jti_stream']}")
    out.append("")
    out.append(f"{'target (issue 7)':<56} {'value':>9} {'target':>11}  result")
    for r in results["ratios"]:
        verdict = "-" if r["met"] is None else ("met" if r["met"] else "NOT MET")
        unit = "" if r["unit"] == "x" else " " + r["unit"]
        value, target = _num(r["value"], r["unit"]) + unit, f"{r['op']} {_num(r['target'], r['unit'])}{unit}"
        out.append(f"{r['name']:<56} {value:>9} {target:>11}  {verdict}")
    for note in results["notes"]:
        out.append(f"note: {note}")
    for problem in results["problems"]:
        out.append(f"PROBLEM: {problem}")
    out.append(f"result: {'FAIL' if results['problems'] else 'ok'} ({results['seconds']:.0f} s)")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
