"""docs/runbook.md's signing-key procedures, run as written on two gunicorn instances (two workers each)
sharing one real Redis: the response to a leaked signing key on a managed ring and on a static key file,
and the move from a static key file to a managed ring. Each step goes through one instance and its
effect is checked through the other (and through both workers of each) as soon as its answer arrives.

The blocks are run by the runbook runner of ``test_key_incident.py`` (bash, curl, python3, and openssl
for the key-file blocks).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, RedisServer
from tests.e2e.servers import Instance
from tests.e2e.test_key_incident import Runbook, runbook_blocks
from token_service.signing import REFRESH_SECONDS

TRIES = 6
"""Requests per check and instance: a check holds on each of its two workers, not only the one that answered first."""


def environment(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "TOKEN_SERVICE_REDIS_URL": redis_url,
        "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY,
        "TOKEN_SERVICE_LOG_LEVEL": "INFO",  # the audit trail is at INFO
        **extra,
    }


class Pair:
    """Instances A and B on one Redis; ``restart`` replaces one with another environment (a rolling restart)."""

    def __init__(self, env: dict[str, str]):
        self.a = Instance(env).start()
        self.b = Instance(env).start()
        self.retired: list[Instance] = []

    def restart(self, name: str, env: dict[str, str]) -> Instance:
        old = getattr(self, name)
        old.stop()
        self.retired.append(old)
        new = Instance(env).start()
        setattr(self, name, new)
        return new

    def close(self) -> None:
        for instance in (self.a, self.b, *self.retired):
            instance.close()


@pytest.fixture
def runbook(tmp_path: Path) -> Runbook:
    for tool in ("bash", "curl", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: the runbook's blocks use it")
    return Runbook(tmp_path)


@pytest.fixture
def managed(redis_server: RedisServer, redis_url: str) -> Iterator[Pair]:
    pair = Pair(environment(redis_url, TOKEN_SERVICE_KEY_ENCRYPTION_KEY=secrets.token_hex(32)))
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture
def static(redis_server: RedisServer, redis_url: str, signing_key_file: str) -> Iterator[Pair]:
    pair = Pair(environment(redis_url, TOKEN_SERVICE_SIGNING_KEY_FILE=signing_key_file))
    try:
        yield pair
    finally:
        pair.close()


def kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def secret_key(instance: Instance) -> str:
    status, _, body = instance.request("POST", "/v1/admin/api-keys", {"type": "secret", "name": "backend", "personas": ["support-bot"]},
                                       token=ADMIN_KEY)
    assert status == 201, body
    return str(body["key"])


def mint(instance: Instance, key: str) -> tuple[int, Any]:
    status, _, body = instance.request("POST", "/v1/tokens", {"personaId": "support-bot", "sub": "user-1"}, token=key)
    return status, body


def token(instance: Instance, key: str) -> str:
    status, body = mint(instance, key)
    assert status == 200, body
    return str(body["token"])


def verified(instance: Instance, jwt: str) -> set[int]:
    """The statuses /v1/verify answers for ``jwt``, asked TRIES times."""
    return {instance.request("GET", "/v1/verify", token=jwt)[0] for _ in range(TRIES)}


def published(instance: Instance) -> set[frozenset[str]]:
    """The kid sets the JWKS answers, asked TRIES times."""
    answers = set()
    for _ in range(TRIES):
        status, _, body = instance.request("GET", "/.well-known/jwks.json")
        assert status == 200, body
        answers.add(frozenset(key["kid"] for key in body["keys"]))
    return answers


def status_lines(out: str) -> tuple[dict[str, str], list[str], str]:
    """The ``signing-status`` block's output: {kid: status}, the JWKS kids, the Cache-Control line."""
    lines = out.strip().splitlines()
    ring = {line.split()[1]: line.split()[0] for line in lines[:-2]}
    assert lines[-2].startswith("jwks:"), out
    assert lines[-1].lower().startswith("cache-control: public, max-age="), out
    return ring, lines[-2].split()[1:], lines[-1]


def test_a_leaked_signing_key_on_a_managed_ring(managed: Pair, runbook: Runbook, tmp_path: Path) -> None:
    a, b = managed.a, managed.b
    key = secret_key(a)
    runbook.secrets.append(key)
    old_tokens = [token(a, key), token(b, key)]
    assert verified(b, old_tokens[0]) == verified(a, old_tokens[1]) == {200}

    # 1. the signing kid, found through A
    out, kept = runbook.run("signing-leak-find", a, keep=("KID",))
    leaked = kept["KID"]
    assert out.strip() == leaked == kid_of(old_tokens[0]) == kid_of(old_tokens[1])

    # 2. revoked through B
    out, _ = runbook.run("signing-leak-revoke", b, KID=leaked)
    entry = json.loads(out)
    assert (entry["type"], entry["value"], entry["reason"], entry["expires_at"]) == ("kid", leaked, "leaked signing key", None)

    # its tokens fail at A and B at once, on every worker
    for instance in (a, b):
        for jwt in old_tokens:
            assert verified(instance, jwt) == {401}
    # a token minted at A right after is signed by a successor, and B accepts it
    fresh = token(a, key)
    successor = kid_of(fresh)
    assert successor != leaked
    assert verified(b, fresh) == verified(a, fresh) == {200}
    assert kid_of(token(b, key)) == successor

    # 3. the JWKS of both no longer lists the revoked kid, and lists the successor, on every worker
    for instance in (a, b):
        assert published(instance) == {frozenset({successor})}
    for instance in (a, b):
        out, _ = runbook.run("signing-status", instance)
        ring, jwks, _ = status_lines(out)
        assert ring == {leaked: "revoked", successor: "current"}, out
        assert jwks == [successor], out
    out, _ = runbook.run("signing-leak-token-status", a, TOKEN=old_tokens[1])
    verdict = json.loads(out)
    assert verdict["active"] is False
    assert {"code": "key_revoked", "revocation_id": entry["id"]}.items() <= verdict["reasons"][0].items(), verdict

    # 4. the audit trail, in the instances' logs
    logs = []
    for name, instance in (("a", a), ("b", b)):
        path = tmp_path / f"{name}.log"
        path.write_text(instance.output())
        logs.append(str(path))
    out, _ = runbook.run("signing-leak-audit", a, LOGS=" ".join(logs))
    records = {(r["action"], r["target"], r["actor"]) for r in map(json.loads, (line[line.index("{"):] for line in out.splitlines()))}
    assert ("signing_key.revoke", leaked, "bootstrap") in records
    assert ("signing_key.stage", f"{successor} current", "bootstrap") in records
    runbook.check_no_secret(a.output() + b.output())


def test_a_leaked_static_signing_key_file(static: Pair, runbook: Runbook, redis_url: str) -> None:
    a, b = static.a, static.b
    key = secret_key(a)
    runbook.secrets.append(key)
    old = token(a, key)

    _, kept = runbook.run("signing-leak-find", a, keep=("KID",))
    leaked = kept["KID"]
    assert leaked == kid_of(old)
    out, _ = runbook.run("signing-leak-revoke", b, KID=leaked)  # 201, even though nothing can take over
    entry = json.loads(out)
    assert (entry["type"], entry["value"]) == ("kid", leaked)

    for instance in (a, b):
        assert verified(instance, old) == {401}
        for _ in range(TRIES):
            status, body = mint(instance, key)
            assert status == 503 and body["error"] == "temporarily_unavailable", body
            assert "replace TOKEN_SERVICE_SIGNING_KEY_FILE" in body["error_description"], body
        status, _, body = instance.request("POST", "/v1/admin/signing-keys/rotate", token=ADMIN_KEY)
        assert status == 409 and body["error"] == "conflict", body
        assert "managed key ring" in body["error_description"], body
        assert published(instance) == {frozenset()}
        assert instance.request("GET", "/readyz")[0] == 200  # verification still works

    # a new key file, and the instances restarted with it: minting resumes, the revoked kid stays refused
    runbook.run("signing-new-key-file", a)
    env = environment(redis_url, TOKEN_SERVICE_SIGNING_KEY_FILE=str(runbook.workdir / "signing-key.pem"))
    a, b = static.restart("a", env), static.restart("b", env)
    fresh = token(a, key)
    assert kid_of(fresh) != leaked
    assert verified(b, fresh) == {200}
    assert verified(a, old) == verified(b, old) == {401}
    out, _ = runbook.run("signing-status", b)
    ring, jwks, _ = status_lines(out)
    assert ring == {kid_of(fresh): "current"} and jwks == [kid_of(fresh)], out


def test_moving_from_a_static_key_file_to_a_managed_ring(static: Pair, runbook: Runbook, redis_url: str, signing_key_file: str) -> None:
    a, b = static.a, static.b
    key = secret_key(a)
    runbook.secrets.append(key)
    before = [token(a, key), token(b, key)]
    [kid] = {kid_of(t) for t in before}

    runbook.run("signing-kek", a)
    kek_file = runbook.workdir / "key-encryption-key"
    assert kek_file.stat().st_mode & 0o077 == 0
    env = environment(redis_url, TOKEN_SERVICE_SIGNING_KEY_FILE=signing_key_file, TOKEN_SERVICE_KEY_ENCRYPTION_KEY_FILE=str(kek_file))

    # rolling restart: A first, while B still runs on the static key
    a = static.restart("a", env)
    assert "the mounted key" in a.output()
    during = token(a, key)
    assert kid_of(during) == kid
    assert verified(b, during) == {200}
    assert all(verified(a, t) == {200} for t in before)
    b = static.restart("b", env)

    for instance in (a, b):
        out, _ = runbook.run("signing-status", instance)
        ring, jwks, _ = status_lines(out)
        assert ring == {kid: "current"} and jwks == [kid], out
        assert all(verified(instance, t) == {200} for t in [*before, during])
    assert kid_of(token(b, key)) == kid

    # and the ring now rotates; every worker publishes the staged key within its 5 s re-read of the ring
    out, _ = runbook.run("signing-rotate", b)
    staged = json.loads(out)
    assert staged["status"] == "next" and staged["kid"] != kid
    both = frozenset({kid, staged["kid"]})
    deadline = time.monotonic() + REFRESH_SECONDS + 1.5
    while time.monotonic() < deadline and not (published(a) == published(b) == {both}):
        time.sleep(0.2)
    assert published(a) == published(b) == {both}
    for instance in (a, b):
        ring, _, _ = status_lines(runbook.run("signing-status", instance)[0])
        assert ring == {kid: "current", staged["kid"]: "next"}, ring


def test_right_after_a_compromise_every_worker_publishes_the_successor(managed: Pair, runbook: Runbook) -> None:
    """A gateway told to refetch the JWKS after the revocation must get the successor from any worker: an
    answer without it would be cached for the full max-age (300 s) while the successor signs every token.
    And the operator's listing shows the successor wherever it is asked."""
    a, b = managed.a, managed.b
    key = secret_key(a)
    runbook.secrets.append(key)
    _, kept = runbook.run("signing-leak-find", a, keep=("KID",))
    out, _ = runbook.run("signing-leak-revoke", b, KID=kept["KID"])
    assert json.loads(out)["type"] == "kid"
    answers = set()
    for name, instance in (("A", a), ("B", b)):
        for _ in range(TRIES):
            status, headers, body = instance.request("GET", "/.well-known/jwks.json")
            assert status == 200, body
            answers.add((name, frozenset(k["kid"] for k in body["keys"]), headers["Cache-Control"]))
    listings = set()
    for name, instance in (("A", a), ("B", b)):
        for _ in range(TRIES):
            status, _, body = instance.request("GET", "/v1/admin/signing-keys", token=ADMIN_KEY)
            assert status == 200, body
            listings.add((name, frozenset((entry["kid"], entry["status"]) for entry in body["keys"])))
    successor = kid_of(token(b, key))  # the worker that mints re-reads the ring: its signer was revoked
    wrong = sorted((name, sorted(kids), cache) for name, kids, cache in answers if kids != {successor})
    assert not wrong, f"JWKS answers without the successor {successor}: {wrong}"
    expected = frozenset({(kept["KID"], "revoked"), (successor, "current")})
    wrong_listings = sorted((name, sorted(entries)) for name, entries in listings if entries != expected)
    assert not wrong_listings, f"listings without the successor {successor}: {wrong_listings}"


def test_every_signing_block_is_run_by_the_signing_key_tests() -> None:
    """A new signing-key block in the runbook needs a step here or in test_rotation_under_load.py."""
    assert {name for name in runbook_blocks() if name.startswith("signing-")} == {
        "signing-rotate", "signing-status", "signing-leak-find", "signing-leak-revoke", "signing-leak-token-status",
        "signing-leak-audit", "signing-new-key-file", "signing-kek",
    }
