"""Fail closed, recover by itself (issue 6, item 3): a real gunicorn instance and the in-process verifier
on a real Redis that the test kills (SIGKILL, then restarts from its append-only file on the same port)
or freezes (SIGSTOP, then SIGCONT).

While the store is out, nothing says "valid": /v1/verify and every other call that needs the store answer
503 ``temporarily_unavailable`` with ``Retry-After``, within a time bound derived from the Redis timeout
settings, and no worker hangs; /readyz says 503 and why, /healthz stays 200. When the store is back the
same processes answer again, and what was revoked before the outage is still refused."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, RedisServer, token_parts
from tests.e2e.servers import Instance
from tests.reliability.workers import wait_until_booted, workers
from token_service.verifier import RevocationUnavailable, TokenInvalid, Verifier
from token_service.verifier.redis_source import RedisRevocations

CONNECT_TIMEOUT = 0.25
SOCKET_TIMEOUT = 0.25
# A request makes a few store calls, each bounded by the two timeouts: generous, yet far below gunicorn's
# 30 s worker timeout and far below what an unbounded call (the kernel's TCP timeouts) would take.
BOUND = 3 * (CONNECT_TIMEOUT + SOCKET_TIMEOUT) + 1.0
RECOVERY = 5.0  # seconds allowed between the store coming back and the first good answer
ISSUER = "http://localhost:8000"
AUDIENCE = "persona-api"
MODES = ["killed", "hanging"]
SLOWEST: dict[str, float] = {}  # the slowest 503 of each kind, printed for docs/design.md


class Store:
    """The test's own Redis: append-only with fsync on every write, so that a SIGKILL loses nothing."""

    def __init__(self, workdir: Path):
        self.server = RedisServer(workdir, ("--appendonly", "yes", "--appendfsync", "always"))
        self.frozen = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    @contextmanager
    def outage(self, mode: str) -> Iterator[None]:
        """The store is out inside the block: ``killed`` (SIGKILL; restarted on the same port from its
        append-only file afterwards) or ``hanging`` (SIGSTOP: connections open, nothing answers; SIGCONT)."""
        if mode == "killed":
            self.kill()
            yield
            self.server.start()
        else:
            os.kill(self.pid, signal.SIGSTOP)
            self.frozen = True
            try:
                yield
            finally:
                self.thaw()

    def kill(self) -> None:
        process = self.server.process
        if process is not None:
            self.thaw()
            process.kill()
            process.wait(timeout=10)
        self.server.process = None

    def thaw(self) -> None:
        if self.frozen and self.server.process is not None:
            os.kill(self.server.process.pid, signal.SIGCONT)
        self.frozen = False


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    s.server.start()
    try:
        yield s
    finally:
        s.kill()


@pytest.fixture
def instance(store: Store) -> Iterator[Instance]:
    """A gunicorn instance (two workers) on the store, with a managed signing-key ring kept in that Redis and
    re-read from it every half second."""
    served = Instance({
        "TOKEN_SERVICE_REDIS_URL": store.url,
        "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": secrets.token_hex(32),
        "TOKEN_SERVICE_SIGNING_KEY_REFRESH": "0.5",  # the ring's re-read from the store falls due during every outage
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
        "TOKEN_SERVICE_REDIS_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "TOKEN_SERVICE_REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
    })
    try:
        served.start()
        yield served
    finally:
        served.close()


def timed(instance: Instance, method: str, path: str, body: Any = None, token: str | None = None,
          form: str | None = None) -> tuple[int, dict[str, str], Any, float]:
    """One request: status, headers, body and the seconds it took."""
    start = time.monotonic()
    status, answer_headers, answer = instance.request(method, path, body, token=token, form=form)
    return status, answer_headers, answer, time.monotonic() - start


def assert_unavailable(answer: tuple[int, dict[str, str], Any, float], what: str) -> dict[str, Any]:
    """API.md's 503: the error body, ``Retry-After`` in delta-seconds, within the bound."""
    status, headers, body, elapsed = answer
    assert status == 503, (what, status, body)
    assert body["error"] == "temporarily_unavailable", (what, body)
    assert isinstance(body["error_description"], str) and body["error_description"], (what, body)
    assert int(headers["Retry-After"]) >= 1, (what, headers)
    assert headers["X-Content-Type-Options"] == "nosniff" and headers.get("X-Request-Id"), (what, headers)
    assert elapsed < BOUND, f"{what}: answered after {elapsed:.2f} s, bound {BOUND:.2f} s"
    SLOWEST[what] = max(elapsed, SLOWEST.get(what, 0.0))
    return dict(body)


def secret_key(instance: Instance) -> str:
    return instance.create_key(ADMIN_KEY, name="fail closed", personas=["support-bot"], permissions=["introspect"])


def mint(instance: Instance, key: str, sub: str) -> str:
    status, _, body = instance.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": sub}, token=key)
    assert status == 200, body
    return str(body["token"])


def verify(instance: Instance, token: str) -> int:
    return instance.request("GET", "/v1/verify?personaId=support-bot", token=token)[0]


def revoke(instance: Instance, **body: str) -> tuple[int, Any]:
    status, _, answer = instance.request("POST", "/v1/admin/revocations", body, token=ADMIN_KEY)
    return status, answer


def jti(token: str) -> str:
    return str(token_parts(token)[1]["jti"])


def first_success(call: Any, seconds: float = RECOVERY) -> float:
    """Calls ``call`` until it returns True; the seconds that took (fails past ``seconds``)."""
    start = time.monotonic()
    while not call():
        assert time.monotonic() - start < seconds, f"not recovered {seconds} s after the store came back"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.parametrize("mode", MODES)
def test_the_service_fails_closed_within_the_bound_and_recovers_without_restart(
        store: Store, instance: Instance, mode: str) -> None:
    key = secret_key(instance)
    good = mint(instance, key, "alice")
    by_jti = mint(instance, key, "bob")
    by_sub = mint(instance, key, "mallory")
    later = mint(instance, key, "carol")  # revoked during the outage: refused (503), then retried
    assert revoke(instance, jti=jti(by_jti))[0] == 201
    assert revoke(instance, sub="mallory")[0] == 201
    assert [verify(instance, t) for t in (good, by_jti, by_sub, later)] == [200, 401, 401, 200]
    before = wait_until_booted(instance, store.server.port, 2)

    with store.outage(mode):
        for token, what in ((good, "verify of a good token"), (by_jti, "verify of a revoked token")):
            for method in ("GET", "POST", "HEAD"):
                answer = timed(instance, method, "/v1/verify?personaId=support-bot", token=token)
                if method == "HEAD":  # no body: the status, the header and the bound
                    status, headers, _, elapsed = answer
                    assert status == 503 and int(headers["Retry-After"]) >= 1 and elapsed < BOUND, (what, answer)
                    continue
                body = assert_unavailable(answer, f"{what} ({method})")
                assert body["active"] is False, body  # verify's error bodies say inactive
                assert "X-Auth-Subject" not in answer[1]

        # introspection never says active: true: 503, whether the caller's key or the revocations need the store
        for caller in (key, ADMIN_KEY):
            body = assert_unavailable(timed(instance, "POST", "/v1/introspect", {"token": good}, token=caller), "introspect")
            assert body.get("active") is not True
            assert_unavailable(timed(instance, "POST", "/v1/introspect", form=f"token={good}", token=caller), "introspect (form)")

        # readiness names the store; liveness stays 200 (the process is fine: no restart is wanted)
        body = assert_unavailable(timed(instance, "GET", "/readyz"), "readyz")
        assert "store" in body["error_description"], body
        status, _, health, elapsed = timed(instance, "GET", "/healthz")
        assert status == 200 and health == {"status": "ok"} and elapsed < BOUND

        # minting reads the new token's watermarks: 503 (design.md "Failure policy"), no token handed out
        body = assert_unavailable(timed(instance, "POST", "/v1/tokens", {"personaId": "support-bot", "sub": "dave"}, token=key), "mint")
        assert "token" not in body
        # revocations cannot be recorded: 503, never a 201
        assert_unavailable(timed(instance, "POST", "/v1/admin/revocations", {"jti": jti(later)}, token=ADMIN_KEY), "admin revoke")
        assert_unavailable(timed(instance, "POST", "/v1/revoke", form=f"token={later}"), "self-revoke")
        assert_unavailable(timed(instance, "GET", "/v1/admin/revocations", token=ADMIN_KEY), "admin listing")
        assert_unavailable(timed(instance, "GET", "/v1/revocations/feed", token=key), "revocation feed")
        assert_unavailable(timed(instance, "POST", "/v1/keys/exposed", {"keys": [key]}), "exposure report")

        # more requests at once than there are workers: every one is answered, none waits on the store for long
        with ThreadPoolExecutor(max_workers=8) as pool:
            start = time.monotonic()
            answers = list(pool.map(lambda _: timed(instance, "GET", "/v1/verify", token=good), range(8)))
            took = time.monotonic() - start
        assert [a[0] for a in answers] == [503] * 8
        assert took < 4 * BOUND, f"8 requests on 2 workers took {took:.2f} s"

    # the same master and workers (no worker was killed for a timeout, nothing was restarted) answer again
    recovery = first_success(lambda: verify(instance, good) == 200)
    slowest = max(SLOWEST, key=lambda k: SLOWEST[k])
    print(f"\n{mode}: slowest 503 {SLOWEST[slowest]:.2f} s ({slowest}, bound {BOUND:.2f} s); "
          f"first good answer {recovery:.2f} s after the store came back")
    SLOWEST.clear()
    assert workers(instance) == before, instance.output()
    assert "WORKER TIMEOUT" not in instance.output()
    assert timed(instance, "GET", "/readyz")[0] == 200
    # what was revoked before the outage is still refused
    assert verify(instance, by_jti) == 401
    assert verify(instance, by_sub) == 401
    # the revocation refused during the outage succeeds when retried, and is in force at once
    status, entry = revoke(instance, jti=jti(later), reason="retried after the outage")
    assert status == 201, entry
    assert verify(instance, later) == 401
    # minting works again, and the new token verifies
    assert verify(instance, mint(instance, key, "erin")) == 200
    status, _, body = instance.request("POST", "/v1/introspect", {"token": good}, token=key)
    assert status == 200 and body["active"] is True


# -- the in-process verifier (docs/verifier.md): RedisRevocations on the same Redis --------------------------

HEALTH_CHECK = 0.5
# Refusing a token cached as "not revoked" may wait for the link to be found dead: one health check
# interval plus its answer's timeout, plus the listener's polling step; generous margin on top.
VERIFIER_BOUND = HEALTH_CHECK + SOCKET_TIMEOUT + CONNECT_TIMEOUT + 1.5


@pytest.fixture
def source(store: Store) -> Iterator[RedisRevocations]:
    s = RedisRevocations(store.url, connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT,
                         health_check_interval=HEALTH_CHECK, reconnect_delay=0.05)
    try:
        assert s.wait_current(10)
        yield s
    finally:
        store.thaw()  # closing sends nothing, but do not leave the listener waiting on a frozen server
        s.close()


def accepted(verifier: Verifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except (TokenInvalid, RevocationUnavailable):
        return False
    return True


@pytest.mark.parametrize("mode", MODES)
def test_the_in_process_verifier_refuses_within_its_bound_and_recovers(
        store: Store, instance: Instance, source: RedisRevocations, mode: str) -> None:
    key = secret_key(instance)
    cached, fresh, revoked = mint(instance, key, "vera"), mint(instance, key, "walt"), mint(instance, key, "xena")
    assert revoke(instance, jti=jti(revoked))[0] == 201
    verifier = Verifier(ISSUER, AUDIENCE, instance.base + "/.well-known/jwks.json", revocations=source)
    try:
        verifier.verify(cached)
        verifier.verify(cached)  # its markers are now cached as "not revoked"
        with pytest.raises(TokenInvalid):
            verifier.verify(revoked)
        assert source.current

        with store.outage(mode):
            start = time.monotonic()
            # a token whose markers are not cached needs Redis: refused at once (within the timeouts)
            with pytest.raises(RevocationUnavailable) as refused:
                verifier.verify(fresh)
            assert refused.value.status_code == 503
            assert time.monotonic() - start < BOUND
            # the cached one is refused too once the link is found dead, within the health-check bound
            while accepted(verifier, cached):
                assert time.monotonic() - start < VERIFIER_BOUND, "a cached token is still accepted with the store out"
                time.sleep(0.02)
            print(f"\n{mode}: cached token refused {time.monotonic() - start:.2f} s into the outage")
            assert not source.current
            for token in (cached, fresh, revoked):
                call = time.monotonic()
                with pytest.raises(RevocationUnavailable):
                    verifier.verify(token)
                assert time.monotonic() - call < BOUND

        # back: subscribed again, and the answers are the store's (the revocation survived the outage)
        assert source.wait_current(10)
        first_success(lambda: accepted(verifier, cached))
        assert accepted(verifier, fresh)
        with pytest.raises(TokenInvalid) as invalid:
            verifier.verify(revoked)
        assert invalid.value.code == "revoked"
    finally:
        verifier.close()
