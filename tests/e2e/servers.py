"""Real service instances for end-to-end tests: gunicorn processes on loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


class Instance:
    """One gunicorn-served instance of the service."""

    def __init__(self, env: dict[str, str], workers: int = 2, keep_stdout: bool = False):
        self.port = free_port()
        self.keep_stdout = keep_stdout  # gunicorn's stdout goes to the same log as its stderr
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("TOKEN_SERVICE_")}, **env}
        self.args = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.conf.py"),
                     "--workers", str(workers), "--bind", f"127.0.0.1:{self.port}", "wsgi:app"]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Instance:
        stdout = self.log if self.keep_stdout else subprocess.DEVNULL
        self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=stdout, stderr=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("instance exited: " + self.output())
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("instance did not become ready")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop the instance and release its log."""
        self.stop()
        self.log.close()

    def output(self) -> str:
        """What the instance wrote to stderr so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                headers: dict[str, str] | None = None, form: str | None = None) -> tuple[int, dict[str, str], Any]:
        """One request: ``body`` sent as JSON, or ``form`` as application/x-www-form-urlencoded."""
        data = None
        all_headers = dict(headers or {})
        if form is not None:
            data = form.encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test server
                raw = resp.read()
                return resp.status, dict(resp.headers), json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, dict(err.headers), json.loads(raw) if raw else None

    def create_key(self, admin_key: str, **fields: Any) -> str:
        """The text of a new API key made through the admin API (a secret key unless ``type`` says otherwise)."""
        status, _, body = self.request("POST", "/v1/admin/api-keys", {"type": "secret", **fields}, token=admin_key)
        assert status == 201, body
        return str(body["key"])


@contextmanager
def two_instances(env: dict[str, str]) -> Iterator[tuple[Instance, Instance]]:
    """Two instances on the same settings, started in order (the first creates a managed ring's first
    key, the second reads it), both stopped afterwards whatever happens."""
    a, b = Instance(env), Instance(env)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.close()
        b.close()
