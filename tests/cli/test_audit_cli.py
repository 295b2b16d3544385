"""``token-service audit verify`` and ``audit list``, run as operators run them (a subprocess configured by the
environment) against the Redis an app built in the test writes its audit log to; tampering is done with the
raw Redis client, as someone with access to Redis would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.cli.test_cli import KEK, Cli, LiveClock, cli_environment
from tests.conftest import ADMIN_KEY, Actions
from token_service import Settings, create_app
from token_service.audit_chain import canonical, digest

STREAM = "{ts}:audit"


@pytest.fixture
def app(redis_url: str) -> Any:
    settings = Settings(redis_url=redis_url, admin_key=ADMIN_KEY, key_encryption_key=KEK, log_level="WARNING")
    return create_app(settings, clock=LiveClock())


@pytest.fixture
def actions(app: Any) -> Actions:
    return Actions(app.test_client())


@pytest.fixture
def cli(redis_url: str, app: Any) -> Cli:
    return Cli(cli_environment(TOKEN_SERVICE_REDIS_URL=redis_url, TOKEN_SERVICE_KEY_ENCRYPTION_KEY=KEK.hex(),
                               TOKEN_SERVICE_LOG_LEVEL="WARNING"))


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def five_records(actions: Actions) -> list[dict[str, Any]]:
    for _ in range(3):
        actions.create_key("secret")
    actions.revoke(sub="user-1")
    actions.revoke(jti="j-1")
    items = actions.admin("GET", "/v1/admin/audit").get_json()["items"]
    assert len(items) == 5
    return list(items)


def test_verify_says_ok_with_the_count(cli, actions):
    five_records(actions)
    result = cli("audit", "verify")
    assert result.stdout == "OK: 5 record(s), chained from the anchor to the newest\n"
    assert json.loads(cli("audit", "verify", "--json").stdout) == {"ok": True, "checked": 5, "broken": None}


def test_verify_of_an_empty_log(cli):
    assert cli("audit", "verify").stdout.startswith("OK: 0 record(s)")


def test_verify_names_a_deleted_record(cli, actions, raw):
    items = five_records(actions)
    raw.xdel(STREAM, items[2]["id"])
    result = cli("audit", "verify", expect=1)
    assert result.stdout.startswith(f"BROKEN at {items[3]['id']}: missing: ")
    assert items[1]["id"] in result.stdout and "(2 record(s) before it verified)" in result.stdout
    report = json.loads(cli("audit", "verify", "--json", expect=1).stdout)
    assert report["ok"] is False and report["checked"] == 2
    assert (report["broken"]["record_id"], report["broken"]["problem"]) == (items[3]["id"], "missing")


def rewrite(raw: redis.Redis, record_id: str, recompute: bool, **changes: Any) -> None:
    """Rebuild the stream with the same ids and one entry's fields changed (XADD only appends at the end)."""
    entries = raw.xrange(STREAM)
    raw.delete(STREAM)
    for rid, fields in entries:
        if rid == record_id:
            body = {**json.loads(fields["r"]), **changes}
            fields = {"r": canonical(body), "h": digest(canonical(body)) if recompute else fields["h"]}
        raw.xadd(STREAM, fields, id=rid)


def test_verify_names_an_edited_record(cli, actions, raw):
    items = five_records(actions)
    rewrite(raw, items[1]["id"], recompute=False, actor="someone-else")
    result = cli("audit", "verify", expect=1)
    assert result.stdout.startswith(f"BROKEN at {items[1]['id']}: hash mismatch: ")
    assert "(1 record(s) before it verified)" in result.stdout


def test_verify_names_the_record_after_an_edit_whose_hash_was_recomputed(cli, actions, raw):
    items = five_records(actions)
    rewrite(raw, items[3]["id"], recompute=True, target="something else")
    result = cli("audit", "verify", expect=1)
    assert result.stdout.startswith(f"BROKEN at {items[4]['id']}: prev mismatch: ") and items[3]["id"] in result.stdout


def test_list_prints_json_lines_with_the_chain_fields(cli, actions):
    items = five_records(actions)
    lines = [json.loads(line) for line in cli("audit", "list").stdout.splitlines()]
    assert [{k: v for k, v in line.items() if k not in ("seq", "prev", "hash")} for line in lines] == items
    assert [line["seq"] for line in lines] == [1, 2, 3, 4, 5] and lines[1]["prev"] == lines[0]["hash"]
    created = cli("audit", "list", "--action", "api_key.create").stdout.splitlines()
    assert len(created) == 3 and all(json.loads(line)["action"] == "api_key.create" for line in created)
    assert cli("audit", "list", "--since", str(items[-1]["at"] + 1)).stdout == ""
    assert len(cli("audit", "list", "--since", str(items[0]["at"])).stdout.splitlines()) == 5


def test_two_processes_append_to_one_chain_with_the_cli_as_its_os_user(cli, actions):
    """The app (this process) and the CLI (another) append in turns: each finds the head moved by the other."""
    actions.create_key("secret")
    cli("revoke", "--jti", "j-cli")
    actions.create_key("secret")
    cli("revoke", "--jti", "j-cli-2")
    actions.revoke(jti="j-app")
    lines = [json.loads(line) for line in cli("audit", "list").stdout.splitlines()]
    assert [(line["seq"], line["action"]) for line in lines] == [
        (1, "api_key.create"), (2, "revocation.create"), (3, "api_key.create"), (4, "revocation.create"), (5, "revocation.create")]
    assert lines[1]["actor"].startswith("cli:") and lines[1]["address"] is None and lines[4]["actor"] == "bootstrap"
    assert cli("audit", "verify").stdout.startswith("OK: 5 record(s)")


@pytest.mark.parametrize("args, named", [(("--since", "yesterday"), "since"), (("--action", "API"), "action")])
def test_bad_filters_exit_1_with_the_apis_description(cli, args, named):
    result = cli("audit", "list", *args, expect=1)
    assert result.stderr.startswith(f"error: {named} must be") and result.stdout == ""
