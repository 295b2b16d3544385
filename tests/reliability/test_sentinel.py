"""Redis Sentinel failover (issue 6, item 3): a real primary, a replica and a sentinel on loopback ports; a
gunicorn instance pointed at ``sentinel://host:port/service``. The primary is killed (SIGKILL); the sentinel
promotes the replica; the same service process answers 503 meanwhile (never 200 for a revoked token) and
then recovers by itself on the new primary: what was revoked is still refused, new tokens mint and verify,
new revocations are written.

Skipped when redis-sentinel is not installed, unless TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1 (as in .ci/run)."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import ADMIN_KEY, RedisServer, free_port, require_binary, token_parts
from tests.e2e.servers import Instance
from tests.reliability.workers import wait_until_booted, workers
from token_service.jti_buckets import place_of

SERVICE = "tokens"
CONNECT_TIMEOUT = 0.25
SOCKET_TIMEOUT = 0.25
BOUND = 3 * (CONNECT_TIMEOUT + SOCKET_TIMEOUT) + 1.0  # one request, however the store fails (as test_fail_closed)
DOWN_AFTER_MS = 1000
FAILOVER_DEADLINE = 20.0  # seconds from the kill to a service answering 200 on the promoted replica


def _sentinel_binary() -> str:
    return require_binary("redis-sentinel", "redis-sentinel")


class Sentinel:
    """One redis-sentinel on a free loopback port, monitoring the primary with quorum 1."""

    def __init__(self, binary: str, workdir: Path, primary_port: int):
        workdir.mkdir()
        self.port = free_port()
        self.config = workdir / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        self.config.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", "daemonize no", f'dir "{workdir}"', 'logfile ""',
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} 10000",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]) + "\n")
        self.log = workdir / "sentinel.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([binary, str(self.config), "--loglevel", "notice"],
                                            stdout=log, stderr=subprocess.STDOUT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, decode_responses=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.05)


class Deployment:
    """Primary, replica, sentinel and a service instance on the sentinel URL."""

    def __init__(self, root: Path, binary: str):
        self.root = root
        self.binary = binary
        durable = ("--appendonly", "yes", "--appendfsync", "always")
        (root / "primary").mkdir()
        (root / "replica").mkdir()
        self.primary = RedisServer(root / "primary", durable)
        self.replica = RedisServer(root / "replica", durable)
        self.sentinel: Sentinel | None = None
        self.instance: Instance | None = None

    def start(self) -> Instance:
        """Start everything in order (``close`` stops whatever started, also after a failed start)."""
        self.primary.start()
        self.replica.args += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        _until(lambda: self.replica_info()["master_link_status"] == "up", 10, "the replica syncs")
        self.sentinel = Sentinel(self.binary, self.root / "sentinel", self.primary.port)
        _until(self._sentinel_sees_the_replica, 15, "the sentinel sees the primary and the replica")
        self.instance = Instance({
            "TOKEN_SERVICE_REDIS_URL": f"sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}",
            "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": secrets.token_hex(32),
            "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
            "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
            "TOKEN_SERVICE_REDIS_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
            "TOKEN_SERVICE_REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
        })
        return self.instance.start()

    def _sentinel_sees_the_replica(self) -> bool:
        assert self.sentinel is not None
        with self.sentinel.client() as client:
            master = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE)
        ports = {int(r["port"]) for r in replicas if "s_down" not in r["flags"]}
        return int(master[1]) == self.primary.port and ports == {self.replica.port}

    def master_port(self) -> int:
        assert self.sentinel is not None
        with self.sentinel.client() as client:
            return int(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])

    def replica_info(self) -> dict[str, Any]:
        with redis.Redis(port=self.replica.port, socket_timeout=1) as client:
            return dict(client.info("replication"))

    def kill_primary(self) -> None:
        process = self.primary.process
        if process is not None:
            process.kill()
            process.wait(timeout=10)
        self.primary.process = None

    def close(self) -> None:
        """Stop every process that was started, each even when another refuses."""
        steps = [self.instance.close if self.instance else None, self.sentinel.stop if self.sentinel else None,
                 self.kill_primary, self.replica.stop]
        for step in steps:
            try:
                if step is not None:
                    step()
            except Exception:  # noqa: BLE001 - go on stopping the others
                pass


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path, _sentinel_binary())
    try:
        d.start()
        yield d
    finally:
        d.close()


def secret_key(instance: Instance) -> str:
    return instance.create_key(ADMIN_KEY, name="sentinel", personas=["support-bot"], permissions=["introspect"])


def mint(instance: Instance, key: str, sub: str) -> tuple[int, Any]:
    status, _, body = instance.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": sub}, token=key)
    return status, body


def verify(instance: Instance, token: str) -> tuple[int, dict[str, str], Any, float]:
    start = time.monotonic()
    status, headers, body = instance.request("GET", "/v1/verify?personaId=support-bot", token=token)
    return status, headers, body, time.monotonic() - start


def jti(token: str) -> str:
    return str(token_parts(token)[1]["jti"])


def test_the_service_survives_a_sentinel_failover_without_restart(deployment: Deployment) -> None:
    started = time.monotonic()
    instance = deployment.instance
    assert instance is not None
    key = secret_key(instance)
    good = str(mint(instance, key, "alice")[1]["token"])
    revoked = str(mint(instance, key, "bob")[1]["token"])
    by_sub = str(mint(instance, key, "mallory")[1]["token"])
    for body in ({"jti": jti(revoked)}, {"sub": "mallory"}):
        status, _, entry = instance.request("POST", "/v1/admin/revocations", body, token=ADMIN_KEY)
        assert status == 201, entry
    assert [verify(instance, t)[0] for t in (good, revoked, by_sub)] == [200, 401, 401]

    # the replica has everything the primary acknowledged (revocations, the key, the signing-key ring)
    with redis.Redis(port=deployment.primary.port) as primary:
        offset = int(primary.info("replication")["master_repl_offset"])
    _until(lambda: int(deployment.replica_info()["slave_repl_offset"]) >= offset, 10, "the replica catches up")
    with redis.Redis(port=deployment.replica.port) as replica:
        assert replica.hexists(*place_of(jti(revoked)))  # the jti's field in its bucket
    booted = wait_until_booted(instance, deployment.primary.port, 2)

    deployment.kill_primary()
    killed = time.monotonic()
    statuses: list[int] = []
    while True:
        status, headers, body, elapsed = verify(instance, revoked)
        assert status in (401, 503), (status, body)  # never 200 for the revoked token, whichever Redis answers
        assert elapsed < BOUND, f"verify took {elapsed:.2f} s during the failover"
        status, headers, body, elapsed = verify(instance, good)
        assert status in (200, 503), (status, body)
        assert elapsed < BOUND, f"verify took {elapsed:.2f} s during the failover"
        if status == 503:
            assert body["error"] == "temporarily_unavailable" and int(headers["Retry-After"]) >= 1, body
        statuses.append(status)
        if status == 200 and deployment.master_port() == deployment.replica.port:
            break
        assert time.monotonic() - killed < FAILOVER_DEADLINE, f"no recovery {FAILOVER_DEADLINE} s after the kill: {statuses[-5:]}"
        time.sleep(0.05)
    window = time.monotonic() - killed
    print(f"\nfailover: {statuses.count(503)} answers 503 over {window:.2f} s, then 200 on the promoted replica")
    assert 503 in statuses  # the primary was gone: the service said so instead of answering from nowhere
    assert deployment.replica_info()["role"] == "master"

    # recovered, without restart: revocations replicated before the kill hold, writes go to the new primary
    assert workers(instance) == booted, instance.output()
    assert instance.request("GET", "/readyz")[0] == 200
    assert verify(instance, revoked)[0] == 401
    assert verify(instance, by_sub)[0] == 401
    status, fresh = mint(instance, key, "carol")
    assert status == 200, fresh
    assert verify(instance, str(fresh["token"]))[0] == 200
    status, _, entry = instance.request("POST", "/v1/admin/revocations", {"jti": jti(fresh["token"])}, token=ADMIN_KEY)
    assert status == 201, entry
    assert verify(instance, str(fresh["token"]))[0] == 401
    assert verify(instance, good)[0] == 200
    assert time.monotonic() - started < 60

