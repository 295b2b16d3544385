"""Processes for the developer tools (``tools.soak``, ``tools.bench``): a real redis-server on a free loopback
port and service instances started exactly as production starts them (gunicorn, ``config/gunicorn.conf.py``).

Both raise ``SystemExit("<prog>: ...")`` when a process does not start, so a tool's ``try/finally`` stops what
did start and the user sees one line. Nothing here touches the Redis on 6379.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children_of(pid: int) -> list[int]:
    """Direct children, from /proc/<pid>/stat (the kernel's ``children`` file is often not built in)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


class RedisProcess:
    """A redis-server on a free loopback port, persisting as production must (AOF, noeviction)."""

    def __init__(self, directory: Path, prog: str = "harness"):
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit(f"{prog}: redis-server is not on PATH (apt-get install redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        self.prog = prog
        self.directory = directory
        self.port = free_port()
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
                     "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        self.process: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"{self.prog}: redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()


class Instance:
    """One instance, started as production starts it: ``gunicorn -c config/gunicorn.conf.py <app>``, the worker
    count from ``WEB_CONCURRENCY`` and the address from ``GUNICORN_BIND``. ``extra_args`` go on gunicorn's
    command line (they override the config file: ``--worker-class gthread --threads 4``)."""

    def __init__(self, name: str, env: dict[str, str], workers: int, log_path: Path, app: str = "wsgi:app",
                 extra_args: Sequence[str] = (), prog: str = "harness", ready_path: str = "/readyz"):
        self.name = name
        self.ready_path = ready_path
        self.prog = prog
        self.port = free_port()
        self.app = app
        self.extra_args = list(extra_args)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TOKEN_SERVICE_", "GUNICORN_", "WEB_CONCURRENCY"))}
        self.env = {**base, **env, "WEB_CONCURRENCY": str(workers), "GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, workers: int) -> None:
        """Start and wait until ``ready_path`` answers 200 and every worker runs."""
        args = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", *self.extra_args, self.app]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.prog}: instance {self.name} exited at start-up; see {self.log_path}")
            try:
                if call(self.port, "GET", self.ready_path)[0] == 200 and len(self.workers()) >= workers:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.prog}: instance {self.name} did not become ready; see {self.log_path}")

    def workers(self) -> list[int]:
        return children_of(self.process.pid) if self.process is not None else []

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_problems(self) -> list[str]:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return [line for line in lines if "Traceback" in line or "[ERROR]" in line or "[CRITICAL]" in line or " ERROR " in line
                or '"level":"ERROR"' in line or '"level":"CRITICAL"' in line]  # gunicorn's, the text and the JSON format


def stop_all(instances: Sequence[Instance], store: RedisProcess) -> None:
    """Stop the instances, then Redis, and remove Redis's data directory."""
    for inst in instances:
        inst.stop()
    store.stop()
    shutil.rmtree(store.directory, ignore_errors=True)


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request on a fresh connection (gunicorn's sync workers close each one). Raises OSError/HTTPException."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, None
    finally:
        conn.close()
