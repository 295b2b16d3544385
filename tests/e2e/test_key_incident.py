"""docs/runbook.md, run as written: the leaked-key response and a routine rotation, on two gunicorn
instances (two workers each) sharing one real Redis. Each runbook step goes through one instance and
its effect is checked through the other, as soon as the step's answer has arrived.

The shell blocks are read from the runbook (``<!-- runbook: NAME -->`` followed by a ``sh`` block) and
run with bash (``set -euo pipefail``), curl and python3; a block's variables that a later step needs
are handed back through a file, never printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, RedisServer
from tests.e2e.servers import ROOT, Instance, two_instances

RUNBOOK = ROOT / "docs" / "runbook.md"
BLOCK = re.compile(r"^<!-- runbook: ([a-z-]+) -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runbook_blocks() -> dict[str, str]:
    """The runbook's marked shell blocks by name."""
    blocks: dict[str, str] = {}
    for name, body in BLOCK.findall(RUNBOOK.read_text(encoding="utf-8")):
        assert name not in blocks, f"two runbook blocks are named {name}"
        blocks[name] = body
    return blocks


class Runbook:
    """Runs runbook blocks in a working directory, with the helpers block first."""

    def __init__(self, workdir: Path):
        self.blocks = runbook_blocks()
        self.workdir = workdir
        self.secrets: list[str] = [ADMIN_KEY]

    def run(self, name: str, base: Instance, keep: tuple[str, ...] = (), **variables: str) -> tuple[str, dict[str, str]]:
        """Run block ``name`` with ``BASE`` = ``base``; its stdout, and the values of ``keep`` when it ends."""
        state = self.workdir / "state.json"
        state.unlink(missing_ok=True)
        keep_code = " ".join(f'"{v}" "${{{v}-}}"' for v in keep)
        script = "\n".join([
            "set -euo pipefail",
            self.blocks["helpers"],
            self.blocks[name],
            f'python3 -c \'import json, sys; it = iter(sys.argv[2:]); json.dump(dict(zip(it, it)), open(sys.argv[1], "w"))\' '
            f'"{state}" {keep_code}',
        ])
        python_dir = str(Path(sys.executable).parent)  # python3 of the virtualenv first
        env = {"PATH": f"{python_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "BASE": base.base, "ADMIN": ADMIN_KEY,
               **variables}
        result = subprocess.run(["bash", "-c", script], cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60)
        self.check_no_secret(result.stdout, result.stderr)
        assert result.returncode == 0, f"runbook block {name} failed ({result.returncode}): {result.stderr[-2000:]}"
        kept: dict[str, str] = json.loads(state.read_text())
        return result.stdout, kept

    def check_no_secret(self, *texts: str) -> None:
        """No key text (nor the admin key) appears in ``texts``."""
        for secret in self.secrets:
            assert not any(secret in text for text in texts), "a key text appears in the output"


@pytest.fixture
def pair(redis_server: RedisServer, redis_url: str, signing_key_file: str) -> Iterator[tuple[Instance, Instance]]:
    env = {
        "TOKEN_SERVICE_REDIS_URL": redis_url,
        "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_LOG_LEVEL": "INFO",  # the audit trail is at INFO
    }
    with two_instances(env) as pair:
        yield pair


@pytest.fixture
def runbook(tmp_path: Path) -> Runbook:
    for tool in ("bash", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the runbook's blocks use it")
    return Runbook(tmp_path)


def _create_key(instance: Instance) -> dict[str, str]:
    status, _, body = instance.request("POST", "/v1/admin/api-keys", {
        "type": "secret", "name": "backend", "personas": ["support-bot"], "scopes": ["chat:read"], "permissions": ["introspect"],
    }, token=ADMIN_KEY)
    assert status == 201, body
    return dict(body)


def _mint_status(instance: Instance, key: str) -> tuple[int, str | None]:
    status, _, body = instance.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": "user-1", "scopes": ["chat:read"]},
                                       token=key)
    return status, body.get("token") if status == 200 else None


def _mint(instance: Instance, key: str) -> str:
    status, token = _mint_status(instance, key)
    assert status == 200 and token is not None, status
    return token


def _verify(instance: Instance, token: str) -> int:
    return instance.request("GET", "/v1/verify", token=token)[0]


def _record(instance: Instance, key_id: str) -> dict[str, object]:
    status, _, body = instance.request("GET", "/v1/admin/api-keys?limit=100", token=ADMIN_KEY)
    assert status == 200, body
    return next(item for item in body["items"] if item["id"] == key_id)


def test_the_leaked_key_response_as_the_runbook_says(pair: tuple[Instance, Instance], runbook: Runbook, tmp_path: Path) -> None:
    a, b = pair
    leaked = _create_key(a)
    runbook.secrets.append(leaked["key"])
    tokens = [_mint(a, leaked["key"]), _mint(b, leaked["key"])]

    # 1. the key is reported through A: B refuses it at once
    out, _ = runbook.run("leak-report", a, LEAKED_KEY=leaked["key"])
    assert json.loads(out) == {"revoked": 1}
    status, _, body = b.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": "u"}, token=leaked["key"])
    assert status == 401 and body["error"] == "unauthorized"
    assert _mint_status(a, leaked["key"])[0] == 401
    # its tokens are still valid (API.md) until step 2
    assert [_verify(b, token) for token in tokens] == [200, 200]

    # 2. its tokens are revoked by client_id through B: A refuses them at once
    out, kept = runbook.run("leak-revoke-tokens", b, keep=("KEY_ID",), LEAKED_KEY=leaked["key"])
    entry = json.loads(out)
    assert (entry["type"], entry["value"], entry["reason"]) == ("client_id", leaked["id"], "leaked API key")
    assert kept["KEY_ID"] == leaked["id"]
    assert [_verify(a, token) for token in tokens] == [401, 401]

    # 3. a new key with the same settings, created through A, works at both
    _, kept = runbook.run("leak-replace", a, keep=("NEW_KEY",), KEY_ID=leaked["id"])
    new_key = kept["NEW_KEY"]
    runbook.secrets.append(new_key)
    assert new_key.startswith("sk_") and new_key != leaked["key"]
    new_id = new_key.split("_")[1]
    old_record, new_record = _record(b, leaked["id"]), _record(b, new_id)
    for field in ("type", "name", "personas", "scopes", "origins", "permissions", "expires_at"):
        assert new_record[field] == old_record[field], field
    assert new_record["revoked_at"] is None and old_record["revoked_at"] is not None
    for minter, checker in ((a, b), (b, a)):
        token = _mint(minter, new_key)
        assert _verify(checker, token) == 200
        status, _, body = checker.request("POST", "/v1/introspect", {"token": token}, token=new_key)
        assert status == 200 and body["active"] is True and body["client_id"] == new_id

    # 4. the audit trail tells the story, in the instances' logs
    logs = []
    for name, instance in (("a", a), ("b", b)):
        path = tmp_path / f"{name}.log"
        path.write_text(instance.output())
        logs.append(str(path))
    out, _ = runbook.run("leak-audit", a, LOGS=" ".join(logs), KEY_ID=leaked["id"])
    records = [json.loads(line[line.index("{"):]) for line in out.splitlines()]
    seen = {(r["action"], r["actor"], r["outcome"]) for r in records}
    assert ("api_key.create", "bootstrap", "ok") in seen
    assert ("api_key.first_use", leaked["id"], "ok") in seen
    assert ("api_key.exposed", "report", "revoked") in seen
    assert all(r["target"].startswith(leaked["id"]) for r in records)
    all_logs = a.output() + b.output()
    assert '"action":"revocation.create"' in all_logs
    runbook.check_no_secret(all_logs)


def test_a_routine_rotation_as_the_runbook_says(pair: tuple[Instance, Instance], runbook: Runbook) -> None:
    a, b = pair
    old = _create_key(a)
    runbook.secrets.append(old["key"])
    _mint(a, old["key"])  # in use: last_used_at is set

    # 1. rotate through B with a day's grace
    _, kept = runbook.run("rotate", b, keep=("NEW_KEY",), OLD_ID=old["id"])
    new_key = kept["NEW_KEY"]
    runbook.secrets.append(new_key)
    new_id = new_key.split("_")[1]
    assert _record(a, new_id)["rotated_from"] == old["id"]
    # 2. both keys work on both instances during the grace period
    for instance in (a, b):
        assert _mint_status(instance, new_key)[0] == 200
        assert _mint_status(instance, old["key"])[0] == 200

    # 3. the old key's last use
    out, _ = runbook.run("rotate-check", a, OLD_ID=old["id"])
    assert "last used: 20" in out and "expires:   20" in out

    # 4. delete the old key through A: B refuses it at once, the new key goes on
    out, _ = runbook.run("rotate-delete", a, OLD_ID=old["id"])
    assert out.strip() == "204"
    assert _mint_status(b, old["key"])[0] == 401
    assert _mint_status(b, new_key)[0] == 200
    assert '"action":"api_key.rotate"' in a.output() + b.output()


def test_every_runbook_block_is_run_by_these_tests() -> None:
    """A new block in the runbook needs a step here; a renamed one fails loudly. (The ``signing-`` blocks are
    test_signing_key_incident.py's.)"""
    assert {name for name in runbook_blocks() if not name.startswith("signing-")} == {
        "helpers", "leak-report", "leak-revoke-tokens", "leak-replace", "leak-audit", "rotate", "rotate-check", "rotate-delete",
    }
