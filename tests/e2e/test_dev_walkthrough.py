"""The dev server's printed walk-through works as printed.

Starts ``python -m token_service dev`` (gunicorn, embedded stores, a generated admin key in a temporary
run directory), runs the shell block between the walk-through markers with bash and curl, and checks
that the token verified (200) before its revocation and not after (401). The admin key is read from
its file only to check that it appears in no output; it is never printed, not even on failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
BEGIN = "# >>> token-service walk-through >>>"
END = "# <<< token-service walk-through <<<"
STATUS_LINE = re.compile(r"^HTTP/[0-9.]+ ([0-9]{3})", re.MULTILINE)


@dataclass
class DevServer:
    port: int
    run_dir: Path
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace")

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # gunicorn's graceful shutdown
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[DevServer]:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (apt-get install curl): the walk-through uses it")
    port = free_port()
    server = DevServer(port, tmp_path / "run", tmp_path / "dev.stdout", tmp_path / "dev.stderr")
    # the embedded default, whatever the developer's shell exports
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKEN_SERVICE_")}
    command = [sys.executable, "-m", "token_service", "dev", "--port", str(port), "--run-dir", str(server.run_dir)]
    with server.stdout.open("wb") as out, server.stderr.open("wb") as err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not _healthy(port):
            if process.poll() is not None:
                pytest.fail(f"the dev server exited with {process.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the dev server did not answer /healthz within 30 s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)


def _walkthrough(text: str) -> str:
    lines = text.splitlines()
    assert BEGIN in lines and END in lines, "the walk-through markers are missing from the dev server's output"
    return "\n".join(lines[lines.index(BEGIN) + 1:lines.index(END)]) + "\n"


def _admin_key_in(run_dir: Path, *texts: str) -> bool:
    """Whether the generated admin key occurs in any of ``texts`` (the key never leaves this function)."""
    secret = (run_dir / "admin-key").read_text().strip()
    return len(secret) >= 32 and any(secret in text for text in texts)


def test_walkthrough_mints_verifies_revokes(dev_server: DevServer, tmp_path: Path) -> None:
    key_file = dev_server.run_dir / "admin-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    block = _walkthrough(dev_server.output())
    assert f"BASE=http://127.0.0.1:{dev_server.port}\n" in block
    assert f"ADMIN=$(cat {key_file})" in block

    result = subprocess.run(["bash", "-c", block], cwd=tmp_path, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    statuses = STATUS_LINE.findall(result.stdout)
    assert statuses == ["200", "401"], f"{statuses}\n{result.stdout}\n{result.stderr}"
    assert "X-Auth-Subject: user-42" in result.stdout
    assert "X-Auth-Persona: support-bot" in result.stdout
    assert 'error="invalid_token"' in result.stdout

    leaked = _admin_key_in(dev_server.run_dir, dev_server.output(), dev_server.log(), result.stdout, result.stderr)
    assert not leaked, "the admin key appears in the dev server's or the walk-through's output"
