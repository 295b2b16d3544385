"""gunicorn's graceful shutdown under config/gunicorn.conf.py, as Docker and Kubernetes trigger it: SIGTERM while a
request is in flight. The request is held inside the service deterministically: the test's own Redis is frozen
(SIGSTOP) so the revocation lookup of /v1/verify waits; the test sees the command sitting unread in Redis's
receive queue (/proc/net/tcp), sends SIGTERM to the master, waits until gunicorn logs it, thaws Redis, and the
held request is answered 200: nothing in flight is cut; then the master exits 0."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, RedisServer
from tests.e2e.servers import Instance


def _unread_bytes_on_port(port: int) -> int:
    """Bytes waiting in the receive queues of sockets bound to loopback ``port`` (Redis's side of its connections)."""
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            rx_queue = int(fields[4].split(":")[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                waiting += rx_queue
    return waiting


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_sigterm_lets_the_request_in_flight_finish(redis: RedisServer, signing_key_file: str) -> None:
    instance = Instance({
        "TOKEN_SERVICE_REDIS_URL": redis.url, "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY, "TOKEN_SERVICE_LOG_LEVEL": "WARNING",
        # long enough that the held request is still waiting when Redis is thawed (never reached: no timing here)
        "TOKEN_SERVICE_REDIS_SOCKET_TIMEOUT": "30",
    }, workers=1)
    instance.start()
    try:
        key = instance.create_key(ADMIN_KEY, name="shutdown", personas=["support-bot"])
        status, _, minted = instance.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": "u1"}, token=key)
        assert status == 200, minted
        token = minted["token"]
        assert instance.request("GET", "/v1/verify", token=token)[0] == 200

        assert redis.process is not None
        os.kill(redis.process.pid, signal.SIGSTOP)
        answers: list[Any] = []
        held = threading.Thread(target=lambda: answers.append(instance.request("GET", "/v1/verify", token=token)))
        held.start()
        deadline = time.monotonic() + 10
        while _unread_bytes_on_port(redis.port) == 0:  # the verify's lookup has reached Redis: the request is held
            assert time.monotonic() < deadline and held.is_alive(), "the request never reached Redis"
            time.sleep(0.01)

        assert instance.process is not None
        instance.process.send_signal(signal.SIGTERM)  # what `docker stop` and the kubelet send
        deadline = time.monotonic() + 10
        while "Handling signal: term" not in instance.output():  # the master has begun its graceful stop
            assert time.monotonic() < deadline, instance.output()
            time.sleep(0.01)
        assert held.is_alive() and not answers

        os.kill(redis.process.pid, signal.SIGCONT)
        held.join(timeout=30)
        assert answers and answers[0][0] == 200, answers  # answered in full, not cut
        assert instance.process.wait(timeout=30) == 0
        assert "WORKER TIMEOUT" not in instance.output() and "SIGKILL" not in instance.output()
    finally:
        instance.close()
