"""Durability (issue 6, item 4): a 201 for a revocation means it will not be lost.

- The start-up check: ``persistence_warnings`` on INFO dicts (pure), then create_app on real redis-servers
  started with and without persistence, and on a Redis that cannot be reached.
- ``TOKEN_SERVICE_REDIS_WAIT_REPLICAS``: a real primary and replica on loopback; the revocation is on the
  replica when the 201 arrives, and with the replica frozen (SIGSTOP) the answer is 503 within the bound.
- SIGKILL: a gunicorn instance on a Redis with ``appendfsync always``; the Redis is killed right after the
  acknowledged revocations and restarted from its append-only file: every revoked token is still refused.
  A control run without the append-only file shows the same steps do detect a loss.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Actions, RedisServer, assert_error, token_parts
from tests.e2e.servers import Instance
from token_service import Settings, create_app
from token_service.config import ConfigError, load_settings
from token_service.jti_buckets import place_of
from token_service.stores.durability import ReplicationIncomplete, confirmed_writes, persistence_warnings, unconfirmed

# -- the start-up check, pure -------------------------------------------------------------------

SAFE_PERSISTENCE = {"aof_enabled": 1, "rdb_bgsave_in_progress": 0}
SAFE_MEMORY = {"maxmemory": 0, "maxmemory_human": "0B", "maxmemory_policy": "noeviction"}
SAFE_CONFIG = {"save": "", "appendfsync": "everysec"}


def test_a_durable_redis_gives_no_warning() -> None:
    assert persistence_warnings(SAFE_PERSISTENCE, SAFE_MEMORY, SAFE_CONFIG) == []
    assert persistence_warnings(SAFE_PERSISTENCE, SAFE_MEMORY, {"save": "3600 1", "appendfsync": "always"}) == []


def test_nothing_on_disk_is_one_warning() -> None:
    [line] = persistence_warnings({"aof_enabled": 0}, SAFE_MEMORY, {"save": "", "appendfsync": "everysec"})
    assert "keeps nothing on disk" in line and "appendonly yes" in line


def test_rdb_snapshots_only_is_a_warning_naming_the_save_points() -> None:
    [line] = persistence_warnings({"aof_enabled": 0}, SAFE_MEMORY, {"save": "3600 1 300 100", "appendfsync": "everysec"})
    assert "only RDB snapshots" in line and "3600 1 300 100" in line


def test_appendfsync_no_is_a_warning() -> None:
    [line] = persistence_warnings(SAFE_PERSISTENCE, SAFE_MEMORY, {"save": "", "appendfsync": "no"})
    assert "appendfsync is no" in line


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl", "allkeys-lru", "allkeys-random", "volatile-lfu"])
def test_any_policy_but_noeviction_is_a_warning(policy: str) -> None:
    memory = {"maxmemory": 104857600, "maxmemory_human": "100.00M", "maxmemory_policy": policy}
    [line] = persistence_warnings(SAFE_PERSISTENCE, memory, SAFE_CONFIG)
    assert policy in line and "100.00M" in line and "TTL" in line and "noeviction" in line


def test_a_refused_config_get_is_said_to_be_unknown() -> None:
    # managed Redis often refuses CONFIG: without the append-only file, the save points are then unknown
    [line] = persistence_warnings({"aof_enabled": 0}, SAFE_MEMORY, None)
    assert "unknown" in line and "CONFIG GET refused" in line
    assert persistence_warnings(SAFE_PERSISTENCE, SAFE_MEMORY, None) == []  # AOF on: fsync unknown, not alarming


def test_the_worst_redis_gives_one_line_per_problem() -> None:
    lines = persistence_warnings({"aof_enabled": 0}, {"maxmemory_policy": "volatile-lru", "maxmemory": 1}, {"save": ""})
    assert len(lines) == 2


def test_missing_fields_are_reported_not_assumed_safe() -> None:
    assert len(persistence_warnings({}, {}, SAFE_CONFIG)) == 2


# -- the start-up check, on real redis-servers ------------------------------------------------------


@pytest.fixture
def service_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The records of the ``token_service`` logger (it does not propagate to the root logger)."""
    logger = logging.getLogger("token_service")
    propagate = logger.propagate
    logger.propagate = False  # each record once, whether or not create_app has configured the logger yet
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="token_service")
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """Starts redis-servers with extra arguments; stops them at the end."""
    servers: list[RedisServer] = []

    def start(*extra: str, workdir: Path | None = None) -> RedisServer:
        server = RedisServer(workdir or tmp_path / f"redis-{len(servers)}", extra)
        server.workdir.mkdir(exist_ok=True)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "Redis" in r.getMessage()]


def test_start_up_warns_about_a_redis_that_keeps_nothing_and_may_evict(own_redis: Any, signing_key_file: str,
                                                                       service_log: pytest.LogCaptureFixture) -> None:
    server = own_redis("--appendonly", "no", "--save", "", "--maxmemory", "100mb", "--maxmemory-policy", "volatile-lru")
    create_app(Settings(redis_url=server.url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file))
    lines = _warnings(service_log)
    assert len(lines) == 2, lines
    assert any("keeps nothing on disk" in line for line in lines)
    assert any("volatile-lru" in line and "100.00M" in line for line in lines)


def test_start_up_is_quiet_on_a_durable_redis(own_redis: Any, signing_key_file: str, service_log: pytest.LogCaptureFixture) -> None:
    server = own_redis("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")
    create_app(Settings(redis_url=server.url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file))
    assert [r.getMessage() for r in service_log.records if r.levelno >= logging.WARNING] == []


def test_start_up_warns_about_appendfsync_no(own_redis: Any, signing_key_file: str, service_log: pytest.LogCaptureFixture) -> None:
    server = own_redis("--appendonly", "yes", "--appendfsync", "no")
    create_app(Settings(redis_url=server.url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file))
    [line] = _warnings(service_log)
    assert "appendfsync is no" in line


def test_an_unreachable_redis_at_start_up_is_logged_and_does_not_stop_it(closed_port: int, signing_key_file: str,
                                                                        service_log: pytest.LogCaptureFixture) -> None:
    password = "hunter2-" + secrets.token_hex(8)
    settings = Settings(redis_url=f"redis://:{password}@127.0.0.1:{closed_port}/0", admin_key=ADMIN_KEY,
                        signing_key_file=signing_key_file, redis_connect_timeout=0.2, redis_socket_timeout=0.2)
    app = create_app(settings)
    assert app.test_client().get("/healthz").status_code == 200
    [line] = _warnings(service_log)
    assert "could not check" in line
    assert password not in service_log.text


def test_a_redis_with_a_password_is_checked_and_the_password_never_logged(own_redis: Any, signing_key_file: str,
                                                                          service_log: pytest.LogCaptureFixture) -> None:
    password = "s3cret-" + secrets.token_hex(8)
    server = own_redis()
    admin = server.client()
    admin.config_set("requirepass", password)  # after start: RedisServer.start pings without a password
    admin.close()
    url = f"redis://:{password}@127.0.0.1:{server.port}/0"
    create_app(Settings(redis_url=url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file))
    assert any("keeps nothing on disk" in line for line in _warnings(service_log))
    assert password not in service_log.text


# -- WAIT for replicas ------------------------------------------------------------------------------


def test_wait_settings_are_validated() -> None:
    base = {"TOKEN_SERVICE_REDIS_URL": "redis://127.0.0.1:1/0", "TOKEN_SERVICE_SIGNING_KEY_FILE": "/nonexistent.pem"}
    settings = load_settings({**base, "TOKEN_SERVICE_REDIS_WAIT_REPLICAS": "2", "TOKEN_SERVICE_REDIS_WAIT_TIMEOUT": "250"})
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout) == (2, 250)
    assert (Settings().redis_wait_replicas, Settings().redis_wait_timeout) == (0, 500)
    for name, value in (("REDIS_WAIT_REPLICAS", "-1"), ("REDIS_WAIT_REPLICAS", "x"), ("REDIS_WAIT_TIMEOUT", "0"),
                        ("REDIS_WAIT_TIMEOUT", "0.5"), ("REDIS_WAIT_TIMEOUT", "10001")):
        with pytest.raises(ConfigError, match=f"TOKEN_SERVICE_{name}"):
            load_settings({**base, f"TOKEN_SERVICE_{name}": value})
    with pytest.raises(ConfigError, match="REDIS_WAIT_REPLICAS needs"):
        load_settings({"TOKEN_SERVICE_REDIS_WAIT_REPLICAS": "1"})  # embedded stores: nothing to wait for
    with pytest.raises(ConfigError, match="REDIS_WAIT_REPLICAS needs"):
        load_settings({**base, "TOKEN_SERVICE_REDIS_URL": "cluster://127.0.0.1:7000", "TOKEN_SERVICE_REDIS_WAIT_REPLICAS": "1"})


@pytest.fixture
def replicated(own_redis: Any) -> tuple[RedisServer, RedisServer]:
    """A primary and a replica of it, on loopback, the link up."""
    primary = own_redis("--repl-diskless-sync-delay", "0")  # the first sync at once, not after 5 s
    replica = own_redis("--replicaof", "127.0.0.1", str(primary.port))
    # ready when the replica acknowledges a write (the primary counts it only after its first ACK, not at link up)
    client = primary.client()
    deadline = time.monotonic() + 10
    while client.set("probe", "1") and client.wait(1, 200) < 1:
        assert time.monotonic() < deadline, "the replica did not sync"
    client.delete("probe")
    client.close()
    return primary, replica


WAIT_MS = 300
SOCKET_TIMEOUT = 0.5


def _app(primary: RedisServer, signing_key_file: str, replicas: int, wait_ms: int = WAIT_MS) -> Any:
    settings = Settings(redis_url=primary.url, admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="ERROR",
                        redis_socket_timeout=SOCKET_TIMEOUT, redis_wait_replicas=replicas, redis_wait_timeout=wait_ms)
    return create_app(settings)


def test_the_201_waits_for_a_slow_replica(replicated: tuple[RedisServer, RedisServer], signing_key_file: str) -> None:
    """The replica is frozen when the revocation is sent and thawed 0.3 s later: the 201 comes only after the
    thaw (a service that did not wait would answer at once), and the entry is on the replica when it comes."""
    primary, replica = replicated
    actions = Actions(_app(primary, signing_key_file, replicas=1, wait_ms=5000).test_client())
    token = actions.token(actions.create_key("secret")["key"])
    assert replica.process is not None
    pid = replica.process.pid
    os.kill(pid, signal.SIGSTOP)
    thaw = threading.Timer(0.3, os.kill, (pid, signal.SIGCONT))
    try:
        started = time.monotonic()
        thaw.start()
        response = actions.revoke(token=token)
        elapsed = time.monotonic() - started
    finally:
        thaw.join()
        os.kill(pid, signal.SIGCONT)
    assert response.status_code == 201, response.get_json()
    assert elapsed >= 0.3, f"answered after {elapsed:.2f} s, before the replica could have acknowledged"
    on_replica = replica.client()
    assert stored_on(on_replica, response.get_json())
    on_replica.close()


def stored_on(client: Any, entry: dict[str, Any]) -> bool:
    """True when ``client``'s Redis holds the revocation: its record, or for a jti its bucket field (stores/redis.py)."""
    if entry["type"] != "jti":
        return client.get(f"{{ts}}:rev:rec:{entry['id']}") is not None
    field = client.hget(*place_of(entry["value"]))
    return field is not None and f" {entry['id'][4:20]}" in field.decode()


def test_with_wait_the_revocation_is_on_the_replica_when_the_201_arrives(replicated: tuple[RedisServer, RedisServer],
                                                                         signing_key_file: str) -> None:
    primary, replica = replicated
    actions = Actions(_app(primary, signing_key_file, replicas=1).test_client())
    token = actions.token(actions.create_key("secret")["key"])
    on_replica = replica.client()
    for body in ({"token": token}, {"sub": "user-7"}, {"personaId": "retired-bot"}):
        response = actions.revoke(**body)
        assert response.status_code == 201, response.get_json()
        assert stored_on(on_replica, response.get_json())  # read at once: no polling
    key = actions.create_key("secret")
    assert actions.admin("DELETE", f"/v1/admin/api-keys/{key['id']}").status_code == 204
    assert on_replica.hget(f"{{ts}}:key:rec:{key['id']}", "revoked_at") is not None
    on_replica.close()
    assert actions.verify(token).status_code == 401


def test_with_the_replica_frozen_the_answer_is_503_within_the_bound_and_the_revocation_holds(
        replicated: tuple[RedisServer, RedisServer], signing_key_file: str) -> None:
    primary, replica = replicated
    actions = Actions(_app(primary, signing_key_file, replicas=1).test_client())
    secret = actions.create_key("secret")
    token = actions.token(secret["key"])
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = actions.revoke(sub="user-42", reason="account closed")
        elapsed = time.monotonic() - started
        body = assert_error(response, 503, "temporarily_unavailable")
        assert "in force on the primary" in body["error_description"]
        assert WAIT_MS / 1000 * 0.9 <= elapsed < WAIT_MS / 1000 + SOCKET_TIMEOUT + 2.0, elapsed  # it waited, boundedly
        # not undone: the primary enforces it, and the listing shows it
        assert actions.verify(token).status_code == 401
        listed = actions.admin("GET", "/v1/admin/revocations").get_json()["items"]
        assert [(item["type"], item["value"]) for item in listed] == [("sub", "user-42")]
        # every write of the use case is done before the 503: the key is revoked with its tokens
        other = actions.token(secret["key"], sub="user-43")
        assert_error(actions.admin("DELETE", f"/v1/admin/api-keys/{secret['id']}?revoke_tokens=true"), 503, "temporarily_unavailable")
        assert actions.verify(other).status_code == 401
        actions.mint(secret["key"], expect=401)  # the key itself is revoked
        # without WAIT the same Redis answers 201: the 503 above comes from the replica's silence
        plain = Actions(_app(primary, signing_key_file, replicas=0).test_client())
        assert plain.revoke(sub="user-44").status_code == 201
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)


def test_with_the_replica_frozen_a_revoked_signing_key_is_still_replaced_before_the_503(
        replicated: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = replicated
    settings = Settings(redis_url=primary.url, admin_key=ADMIN_KEY, key_encryption_key=secrets.token_bytes(32), log_level="ERROR",
                        redis_socket_timeout=SOCKET_TIMEOUT, redis_wait_replicas=1, redis_wait_timeout=WAIT_MS)
    actions = Actions(create_app(settings).test_client())
    key = actions.create_key("secret")["key"]
    token = actions.token(key)
    kid = token_parts(token)[0]["kid"]
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        assert_error(actions.revoke(kid=kid, reason="leaked"), 503, "temporarily_unavailable")
        assert actions.verify(token).status_code == 401
        fresh = actions.token(key)  # the successor signs: the ring was changed before the answer
        assert token_parts(fresh)[0]["kid"] != kid
        assert actions.verify(fresh).status_code == 200
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)


# -- SIGKILL right after acknowledged revocations ---------------------------------------------------


def _request(instance: Instance, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    status, _, answer = instance.request(method, path, body, token=token)
    return status, answer


def _mint(instance: Instance, key: str, persona: str, sub: str) -> str:
    status, body = _request(instance, "POST", "/v1/tokens", {"personaId": persona, "sub": sub}, token=key)
    assert status == 200, body
    return str(body["token"])


def _revoke_mix(instance: Instance) -> tuple[list[str], list[str]]:
    """Mints 20 tokens and revokes 15 of them by jti, token, sub, personaId and client_id (each call a 201);
    returns (revoked tokens, tokens left alone)."""
    keys = []
    for name in ("backend", "retired-backend"):
        status, body = _request(instance, "POST", "/v1/admin/api-keys", {
            "type": "secret", "name": name, "personas": ["support-bot", "retired-bot"]}, token=ADMIN_KEY)
        assert status == 201, body
        keys.append(body)
    key, retired = keys
    by_jti = [_mint(instance, key["key"], "support-bot", f"jti-user-{i}") for i in range(3)]
    by_token = [_mint(instance, key["key"], "support-bot", f"token-user-{i}") for i in range(3)]
    by_sub = [_mint(instance, key["key"], "support-bot", "gone-user") for _ in range(3)]
    by_persona = [_mint(instance, key["key"], "retired-bot", f"persona-user-{i}") for i in range(3)]
    by_client = [_mint(instance, retired["key"], "support-bot", f"client-user-{i}") for i in range(3)]
    kept = [_mint(instance, key["key"], "support-bot", f"kept-user-{i}") for i in range(5)]
    bodies = [{"jti": token_parts(t)[1]["jti"]} for t in by_jti] + [{"token": t} for t in by_token]
    bodies += [{"sub": "gone-user"}, {"personaId": "retired-bot"}, {"client_id": retired["id"]}]
    for body in bodies:
        status, answer = _request(instance, "POST", "/v1/admin/revocations", body, token=ADMIN_KEY)
        assert status == 201, answer
    return by_jti + by_token + by_sub + by_persona + by_client, kept


def _verdicts(instance: Instance, tokens: list[str]) -> list[int]:
    """The /v1/verify status of each token, once the instance answers again (a 503 is retried, never taken)."""
    deadline = time.monotonic() + 15
    while _request(instance, "GET", "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the instance did not recover"
        time.sleep(0.1)
    statuses = []
    for token in tokens:
        while (status := _request(instance, "GET", "/v1/verify", token=token)[0]) == 503:
            assert time.monotonic() < deadline, "the instance did not recover"
            time.sleep(0.1)
        statuses.append(status)
    return statuses


def _kill_and_restart(server: RedisServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    server.start()  # same port, same directory: it loads what it kept on disk


@pytest.fixture
def instance_on(signing_key_file: str) -> Iterator[Any]:
    instances: list[Instance] = []

    def start(server: RedisServer, **env: str) -> Instance:
        instance = Instance({"TOKEN_SERVICE_REDIS_URL": server.url, "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
                             "TOKEN_SERVICE_LOG_LEVEL": "WARNING", **env})
        instances.append(instance)
        return instance.start()

    yield start
    for instance in instances:
        instance.close()


def test_acknowledged_revocations_survive_a_sigkill_of_redis_with_appendfsync_always(own_redis: Any, instance_on: Any) -> None:
    server = own_redis("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
    # a managed ring: the signing keys live in the same Redis and must survive too
    instance = instance_on(server, TOKEN_SERVICE_KEY_ENCRYPTION_KEY=secrets.token_hex(32))
    revoked, kept = _revoke_mix(instance)
    _kill_and_restart(server)  # right after the last 201, no pause
    restarted = server.client()
    assert restarted.dbsize() > 0  # loaded from the append-only file
    restarted.close()
    assert _verdicts(instance, revoked) == [401] * len(revoked)
    assert _verdicts(instance, kept) == [200] * len(kept)


def test_control_without_the_append_only_file_the_same_steps_see_the_loss(own_redis: Any, instance_on: Any,
                                                                          signing_key_file: str) -> None:
    """The check above can fail: on a Redis that keeps nothing on disk, the revoked tokens pass again."""
    server = own_redis("--appendonly", "no", "--save", "")
    instance = instance_on(server, TOKEN_SERVICE_SIGNING_KEY_FILE=signing_key_file)
    revoked, _ = _revoke_mix(instance)
    _kill_and_restart(server)
    assert _verdicts(instance, revoked) == [200] * len(revoked)


# -- confirmed_writes, the collector the service's use cases run in ----------------------------------


def test_a_shortfall_is_raised_after_the_whole_use_case() -> None:
    steps: list[str] = []
    with pytest.raises(ReplicationIncomplete, match="0 of 1"):
        with confirmed_writes():
            unconfirmed("0 of 1 Redis replicas acknowledged a write within 5 ms")
            steps.append("after the first write")
            with confirmed_writes():  # a nested use case joins the outer one
                unconfirmed("0 of 1 again")
                steps.append("nested")
            steps.append("last")
    assert steps == ["after the first write", "nested", "last"]
    with confirmed_writes():
        steps.append("confirmed")  # no shortfall: nothing raised
    unconfirmed("ring upkeep outside a use case")  # not raised into whichever request ran it


def test_after_one_shortfall_the_rest_of_the_request_does_not_wait_again(
        replicated: tuple[RedisServer, RedisServer], signing_key_file: str) -> None:
    """An exposure report of five keys with the replica frozen: one wait (then 503), not five; every key is revoked."""
    primary, replica = replicated
    actions = Actions(_app(primary, signing_key_file, replicas=1).test_client())
    keys = [actions.create_key("secret")["key"] for _ in range(5)]
    assert replica.process is not None
    on_primary = primary.client()
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        on_primary.config_resetstat()  # from here, the primary counts the WAITs this request sends
        response = actions.client.post("/v1/keys/exposed", json={"keys": keys})
        waits = on_primary.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
        on_primary.close()
    assert_error(response, 503, "temporarily_unavailable")
    assert waits == 1, f"{waits} WAITs: the writes after the first shortfall waited too"
    for key in keys:
        actions.mint(key, expect=401)
