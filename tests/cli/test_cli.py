"""The operator CLI (token_service/cli.py), run as operators run it: ``python -m token_service ...`` in a
subprocess, configured by the environment, against the same Redis and managed key ring as an app built in
the test. Each effect of a CLI command is checked through the app, as it would be through a running
instance. The app's clock is real time (plus an offset a test may advance past the ring's refresh
interval), since the CLI's is."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, Actions, all_items, bearer, store_unchanged, token_parts
from token_service import Settings, create_app
from token_service.service import DEFAULT_GRACE

ROOT = Path(__file__).resolve().parents[2]
KEK = secrets.token_bytes(32)
KEY_TEXT = re.compile(r"\b[psa]k_[A-Za-z0-9]{16}_[A-Za-z0-9]{49}\b")
OS_USER = pwd.getpwuid(os.geteuid()).pw_name


class LiveClock:
    """Real time (the CLI's clock) plus an offset the test can advance."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def cli_environment(**settings: str) -> dict[str, str]:
    """The process environment without any TOKEN_SERVICE_* variable, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKEN_SERVICE_")}
    env.update(settings)
    return env


class Cli:
    """Runs ``python -m token_service`` from the checkout with an environment; stdin is always a pipe."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def __call__(self, *args: str, stdin: str = "", expect: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "token_service", *args], cwd=ROOT, env={**self.env, **env}, input=stdin,
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
        return result

    def json(self, *args: str, stdin: str = "") -> Any:
        return json.loads(self(*args, "--json", stdin=stdin).stdout)


@pytest.fixture
def live_clock() -> LiveClock:
    return LiveClock()


@pytest.fixture
def managed(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, admin_key=ADMIN_KEY, key_encryption_key=KEK, log_level="WARNING")


@pytest.fixture
def app(managed: Settings, live_clock: LiveClock) -> Any:
    """The running instance: built first, it creates the managed ring in Redis."""
    return create_app(managed, clock=live_clock)


@pytest.fixture
def cli(redis_url: str, app: Any) -> Cli:
    return Cli(cli_environment(
        TOKEN_SERVICE_REDIS_URL=redis_url, TOKEN_SERVICE_KEY_ENCRYPTION_KEY=KEK.hex(), TOKEN_SERVICE_ADMIN_KEY=ADMIN_KEY,
        TOKEN_SERVICE_LOG_LEVEL="INFO",  # audit lines on stderr: the tests check that they never hold a secret
    ))


def kid_of(token: str) -> str:
    return str(token_parts(token)[0]["kid"])


def signing_keys(actions: Actions) -> dict[str, dict[str, Any]]:
    response = actions.admin("GET", "/v1/admin/signing-keys")
    assert response.status_code == 200, response.get_json()
    return {entry["kid"]: entry for entry in response.get_json()["keys"]}


def key_record(actions: Actions, key_id: str) -> dict[str, Any]:
    return next(item for item in all_items(actions, "/v1/admin/api-keys") if item["id"] == key_id)


# -- effects, checked through the app -----------------------------------------------------------


def test_a_key_created_by_the_cli_mints_through_the_app(cli, actions):
    created = cli.json("api-keys", "create", "--type", "secret", "--name", "backend", "--persona", "support-bot",
                       "--scope", "chat:read", "--permission", "introspect")
    assert created["key"].startswith(f"sk_{created['id']}_")
    assert (created["personas"], created["scopes"], created["permissions"]) == (["support-bot"], ["chat:read"], ["introspect"])
    token = actions.token(created["key"], scopes=["chat:read"])
    assert token_parts(token)[1]["client_id"] == created["id"]
    assert key_record(actions, created["id"])["name"] == "backend"
    listed = cli.json("api-keys", "list")
    assert created["id"] in [item["id"] for item in listed["items"]] and listed["next_cursor"] is None
    assert all("key" not in item for item in listed["items"])


def test_public_and_admin_keys_and_a_wildcard_persona(cli, actions):
    public = cli.json("api-keys", "create", "--type", "public", "--persona", "*", "--origin", "https://chat.example.com")
    actions.mint(public["key"], personaId="any-persona", headers={"Origin": "https://chat.example.com"})
    admin = cli.json("api-keys", "create", "--type", "admin", "--name", "on-call")
    assert actions.client.get("/v1/admin/signing-keys", headers=bearer(admin["key"])).status_code == 200


def test_revoke_sub_through_the_cli_refuses_the_apps_token_at_once(cli, actions):
    token = actions.token(actions.create_key("secret")["key"], sub="user-42")
    assert actions.verify(token).status_code == 200
    entry = cli.json("revoke", "--sub", "user-42", "--reason", "account closed")
    assert (entry["type"], entry["value"], entry["reason"]) == ("sub", "user-42", "account closed")
    assert actions.verify(token).status_code == 401
    assert entry in all_items(actions, "/v1/admin/revocations")

    assert cli.json("revocations", "lift", entry["id"]) == {"id": entry["id"], "lifted": True}
    assert actions.verify(token).status_code == 200
    assert cli.json("revocations", "list")["items"] == []


def test_revoke_a_token_read_from_stdin(cli, actions):
    token = actions.token(actions.create_key("secret")["key"])
    result = cli("revoke", "--token-stdin", stdin=token + "\n")
    assert result.stdout.startswith("revoked jti ")
    assert actions.verify(token).status_code == 401
    assert token not in result.stdout + result.stderr


def test_api_keys_revoke_with_revoke_tokens_kills_the_key_and_its_tokens(cli, actions):
    secret = actions.create_key("secret")
    token = actions.token(secret["key"])
    result = cli("api-keys", "revoke", secret["id"], "--revoke-tokens")
    assert result.stdout == f"revoked API key {secret['id']} and every token it minted\n"
    actions.mint(secret["key"], expect=401)
    assert actions.verify(token).status_code == 401
    assert key_record(actions, secret["id"])["revoked_at"] is not None
    [entry] = all_items(actions, "/v1/admin/revocations")
    assert (entry["type"], entry["value"]) == ("client_id", secret["id"])


def test_api_keys_revoke_alone_leaves_the_tokens(cli, actions):
    secret = actions.create_key("secret")
    token = actions.token(secret["key"])
    assert cli.json("api-keys", "revoke", secret["id"]) == {"id": secret["id"], "revoked": True, "revoke_tokens": False}
    actions.mint(secret["key"], expect=401)
    assert actions.verify(token).status_code == 200


def test_api_keys_rotate(cli, actions, live_clock):
    old = actions.create_key("secret", name="backend")
    new = cli.json("api-keys", "rotate", old["id"], "--grace-seconds", "60")
    assert new["rotated_from"] == old["id"] and new["name"] == "backend" and new["id"] != old["id"]
    actions.mint(new["key"])
    actions.mint(old["key"])  # within the grace period
    live_clock.advance(61)
    actions.mint(old["key"], expect=401)
    actions.mint(new["key"])


def test_api_keys_rotate_by_default_keeps_the_old_key_a_day(cli, actions):
    old = actions.create_key("secret")
    result = cli("api-keys", "rotate", old["id"])
    assert f"stops working within {DEFAULT_GRACE} seconds" in result.stdout
    assert abs(key_record(actions, old["id"])["expires_at"] - (int(time.time()) + DEFAULT_GRACE)) <= 5


def test_report_exposed_reads_key_texts_from_stdin(cli, actions):
    secret = actions.create_key("secret")
    result = cli("api-keys", "report-exposed", "--json", stdin=f"{secret['key']}\nnot-a-key\n")
    assert json.loads(result.stdout) == {"revoked": 1}
    actions.mint(secret["key"], expect=401)
    assert secret["key"] not in result.stdout + result.stderr


def test_signing_keys_rotate_stages_a_next_key_the_app_lists(cli, actions, live_clock):
    [first] = signing_keys(actions)
    staged = cli.json("signing-keys", "rotate")
    assert staged["status"] == "next" and staged["kid"] != first
    live_clock.advance(6)  # past the ring's refresh interval (5 s)
    ring = signing_keys(actions)
    assert ring[staged["kid"]]["status"] == "next" and ring[first]["status"] == "current"
    assert staged["kid"] in {key["kid"] for key in actions.client.get("/.well-known/jwks.json").get_json()["keys"]}
    listed = cli.json("signing-keys", "list")["keys"]
    assert {entry["kid"]: entry["status"] for entry in listed} == {first: "current", staged["kid"]: "next"}
    assert "already staged" in cli("signing-keys", "rotate", expect=1).stderr


def test_signing_keys_revoke_makes_the_app_sign_with_a_new_kid(cli, actions):
    secret = actions.create_key("secret")["key"]
    old_token = actions.token(secret)
    old_kid = kid_of(old_token)
    result = cli("signing-keys", "revoke", old_kid, "--reason", "compromised")
    assert result.stdout.startswith(f"revoked kid {old_kid}: revocation rev_")
    [successor] = re.findall(r"^now signing with (\S+)$", result.stdout, re.MULTILINE)
    assert actions.verify(old_token).status_code == 401  # at once, without waiting for the ring's refresh
    new_token = actions.token(secret)
    assert kid_of(new_token) == successor != old_kid
    assert actions.verify(new_token).status_code == 200
    assert signing_keys(actions)[old_kid]["status"] == "revoked"
    assert old_kid not in {key["kid"] for key in actions.client.get("/.well-known/jwks.json").get_json()["keys"]}


def test_token_status_reads_the_token_from_stdin(cli, actions):
    token = actions.token(actions.create_key("secret")["key"])
    verdict = cli.json("token-status", stdin=token + "\n")
    assert verdict["active"] is True and verdict["reasons"] == []
    assert verdict["claims"]["sub"] == "user-42" and verdict["header"]["kid"] == kid_of(token)
    assert cli("token-status", stdin=token).stdout.startswith("active\n")

    revoked = actions.revoke(jti=verdict["claims"]["jti"]).get_json()
    verdict = cli.json("token-status", stdin=token)
    assert verdict["active"] is False
    assert verdict["reasons"] == [{"code": "revoked", "detail": "The token has been revoked (by jti).", "revocation_id": revoked["id"]}]
    human = cli("token-status", stdin=token).stdout
    assert human.startswith("inactive\n") and f"(revocation {revoked['id']})" in human
    assert token not in human

    assert cli.json("token-status", stdin="not.a.token")["reasons"][0]["code"] == "malformed"
    assert cli("token-status", expect=1).stderr == (
        "error: the token is required on stdin (it is never taken from the command line).\n"
    )
    assert cli("token-status", token, expect=2).stdout == ""  # no argument is accepted


# -- output -------------------------------------------------------------------------------------


def test_the_key_text_is_printed_once_on_stdout_and_never_on_stderr(cli, actions):
    result = cli("api-keys", "create", "--type", "secret", "--name", "backend", "--persona", "support-bot")
    [text] = KEY_TEXT.findall(result.stdout)
    assert result.stdout.count(text) == 1 and "shown this once" in result.stdout
    assert text not in result.stderr and KEY_TEXT.search(result.stderr) is None
    key_id = text.split("_")[1]
    # the audit line is there (INFO), with the id and the CLI's actor, never the text
    # on Redis the log is JSON lines (TOKEN_SERVICE_LOG_FORMAT's default): an audit record's members are its line's
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    audit = [{k: v for k, v in line.items() if k not in ("time", "level", "logger")}
             for line in lines if line["logger"] == "token_service.audit" and "action" in line]
    assert len(audit) == 1
    chained = {name: audit[0].pop(name) for name in ("id", "seq", "prev", "hash")}  # its place in the audit chain
    assert audit == [{"action": "api_key.create", "actor": f"cli:{OS_USER}", "address": None, "at": audit[0]["at"],
                      "outcome": "ok", "target": f"{key_id} secret"}]
    assert len(chained["hash"]) == 64 and chained["seq"] >= 1
    actions.mint(text)

    rotated = cli("api-keys", "rotate", key_id)
    [new_text] = KEY_TEXT.findall(rotated.stdout)
    assert new_text != text and rotated.stdout.count(new_text) == 1 and KEY_TEXT.search(rotated.stderr) is None
    as_json = cli("api-keys", "create", "--type", "secret", "--persona", "support-bot", "--json")
    [json_text] = KEY_TEXT.findall(as_json.stdout)
    assert json.loads(as_json.stdout)["key"] == json_text and KEY_TEXT.search(as_json.stderr) is None


def test_every_json_output_parses(cli, actions):
    secret = actions.create_key("secret")
    revocation = cli.json("revoke", "--persona", "support-bot")
    assert revocation["type"] == "personaId"
    outputs = [
        cli.json("api-keys", "list", "--limit", "1"),
        cli.json("revocations", "list"),
        cli.json("signing-keys", "list"),
        cli.json("revocations", "lift", revocation["id"]),
        cli.json("api-keys", "revoke", secret["id"]),
    ]
    assert all(isinstance(output, dict) for output in outputs)
    assert [item["id"] for item in outputs[0]["items"]] == [secret["id"]] and outputs[0]["next_cursor"] is None


def test_listings_page_with_the_cursor(cli, actions):
    ids = [actions.create_key("secret")["id"] for _ in range(3)]
    first = cli.json("api-keys", "list", "--limit", "2")
    assert [item["id"] for item in first["items"]] == ids[:2] and first["next_cursor"]
    second = cli.json("api-keys", "list", "--limit", "2", "--cursor", first["next_cursor"])
    assert [item["id"] for item in second["items"]] == ids[2:] and second["next_cursor"] is None
    human = cli("api-keys", "list", "--limit", "2").stdout
    assert human.splitlines()[0].split()[:3] == ["ID", "TYPE", "NAME"] and f"more: --cursor {first['next_cursor']}" in human


# -- refusals -----------------------------------------------------------------------------------

REFUSALS = [
    (["api-keys", "create", "--type", "root"], "POST", "/v1/admin/api-keys", {"type": "root"}),
    (["api-keys", "create", "--type", "secret", "--persona", "bad persona"], "POST", "/v1/admin/api-keys",
     {"type": "secret", "personas": ["bad persona"]}),
    (["api-keys", "create", "--type", "secret", "--persona", "support-bot", "--scope", "chat:admin"], "POST", "/v1/admin/api-keys",
     {"type": "secret", "personas": ["support-bot"], "scopes": ["chat:admin"]}),
    (["api-keys", "create", "--type", "public", "--persona", "support-bot"], "POST", "/v1/admin/api-keys",
     {"type": "public", "personas": ["support-bot"]}),
    (["api-keys", "create", "--type", "admin", "--persona", "support-bot"], "POST", "/v1/admin/api-keys",
     {"type": "admin", "personas": ["support-bot"]}),
    (["api-keys", "create", "--type", "secret", "--persona", "support-bot", "--expires-at", "1"], "POST", "/v1/admin/api-keys",
     {"type": "secret", "personas": ["support-bot"], "expires_at": 1}),
    (["api-keys", "revoke", "nope"], "DELETE", "/v1/admin/api-keys/nope", None),
    (["api-keys", "revoke", "bootstrap"], "DELETE", "/v1/admin/api-keys/bootstrap", None),
    (["api-keys", "rotate", "nope", "--grace-seconds", "-1"], "POST", "/v1/admin/api-keys/nope/rotate", {"grace_seconds": -1}),
    (["api-keys", "list", "--limit", "0"], "GET", "/v1/admin/api-keys?limit=0", None),
    (["revoke", "--sub", "has space"], "POST", "/v1/admin/revocations", {"sub": "has space"}),
    (["revoke", "--kid", "nope"], "POST", "/v1/admin/revocations", {"kid": "nope"}),
    (["revoke", "--sub", "user-42", "--reason", "x" * 257], "POST", "/v1/admin/revocations", {"sub": "user-42", "reason": "x" * 257}),
    (["signing-keys", "revoke", "nope"], "POST", "/v1/admin/revocations", {"kid": "nope"}),
    (["revocations", "lift", "nope"], "DELETE", "/v1/admin/revocations/nope", None),
    (["revocations", "list", "--cursor", "bogus"], "GET", "/v1/admin/revocations?cursor=bogus", None),
]


@pytest.mark.parametrize(("args", "method", "path", "body"), REFUSALS, ids=[" ".join(r[0])[:60] for r in REFUSALS])
def test_bad_input_exits_1_with_the_admin_apis_description_and_stores_nothing(cli, actions, args, method, path, body):
    with store_unchanged(actions):
        result = cli(*args, expect=1)
        response = actions.admin(method, path, **({"json": body} if body is not None else {}))
    assert response.status_code in (400, 404, 409)
    assert result.stderr == f"error: {response.get_json()['error_description']}\n"
    assert result.stdout == ""


def test_revoke_needs_exactly_one_target(cli, actions):
    with store_unchanged(actions):
        for args in (["revoke"], ["revoke", "--sub", "a", "--jti", "b"], ["revoke", "--kid", "k", "--token-stdin"]):
            assert cli(*args, expect=1).stderr == (
                "error: Give exactly one of --jti, --token-stdin, --sub, --persona, --client-id or --kid.\n"
            )


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("TOKEN_SERVICE_MAX_TTL", "0", "TOKEN_SERVICE_MAX_TTL"),
    ("TOKEN_SERVICE_KEY_ENCRYPTION_KEY", "too-short", "TOKEN_SERVICE_KEY_ENCRYPTION_KEY"),
    ("TOKEN_SERVICE_KEY_ENCRYPTION_KEY", secrets.token_hex(32), "TOKEN_SERVICE_KEY_ENCRYPTION_KEY"),  # not the ring's KEK
    ("TOKEN_SERVICE_REDIS_URL", "", "TOKEN_SERVICE_REDIS_URL"),  # embedded stores: the CLI would act on nothing shared
], ids=["max-ttl", "short-kek", "another-kek", "no-redis"])
def test_a_bad_setting_exits_2_with_one_line(cli, actions, setting, value, named):
    with store_unchanged(actions):
        env = {setting: value} if value else {}
        runner = cli if value else Cli({k: v for k, v in cli.env.items() if k != setting})
        result = runner("api-keys", "list", expect=2, **env)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("token-service: ") and named in line


def test_an_unreachable_store_exits_3(closed_port, signing_key_file):
    down = Cli(cli_environment(
        TOKEN_SERVICE_REDIS_URL=f"redis://127.0.0.1:{closed_port}/0", TOKEN_SERVICE_SIGNING_KEY_FILE=signing_key_file,
        TOKEN_SERVICE_REDIS_CONNECT_TIMEOUT="0.2", TOKEN_SERVICE_REDIS_SOCKET_TIMEOUT="0.2",
    ))
    for args in (["revocations", "list"], ["revoke", "--sub", "user-42"], ["api-keys", "list"]):
        result = down(*args, expect=3)
        assert result.stderr == "error: The revocation and key store cannot be reached; retry shortly.\n"
    # a token of the same key (minted by an app on embedded stores): its verdict needs the revocation store
    minting = Actions(create_app(Settings(admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="ERROR")).test_client())
    token = minting.token(minting.create_key("secret")["key"])
    result = down("token-status", stdin=token, expect=3)
    assert result.stderr == "error: The revocation store cannot be reached; the verdict would be incomplete.\n"


def test_a_static_ring_cannot_rotate(redis_url, signing_key_file):
    static = Cli(cli_environment(TOKEN_SERVICE_REDIS_URL=redis_url, TOKEN_SERVICE_SIGNING_KEY_FILE=signing_key_file))
    assert "managed key ring" in static("signing-keys", "rotate", expect=1).stderr
    [entry] = static.json("signing-keys", "list")["keys"]
    assert entry["status"] == "current"


# -- one entry point, and the Flask CLI ---------------------------------------------------------


def test_dev_and_check_config_are_still_there(cli):
    assert cli("check-config").stdout == "ok\n"
    result = cli("check-config", expect=2, TOKEN_SERVICE_MAX_TTL="0")
    assert result.stderr.startswith("token-service: TOKEN_SERVICE_MAX_TTL")
    commands = cli("--help").stdout
    for name in ("dev", "check-config", "api-keys", "signing-keys", "revoke", "revocations", "token-status"):
        assert re.search(rf"^  {name}\b", commands, re.MULTILINE), name
    assert "--run-dir" in cli("dev", "--help").stdout
    assert "Invalid value for '--port'" in cli("dev", "--port", "0", expect=2).stderr


def test_the_console_script_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"] == {"token-service": "token_service.cli:main"}


def test_the_commands_are_flask_cli_commands_of_the_app(app, actions):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["api-keys", "create", "--type", "secret", "--persona", "support-bot", "--json"])
    assert created.exit_code == 0, created.output
    actions.mint(json.loads(created.stdout)["key"])
    listed = runner.invoke(args=["api-keys", "list", "--json"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)["items"]) == 1
    refused = runner.invoke(args=["revoke", "--kid", "nope"])
    assert refused.exit_code == 1 and refused.stderr == "error: No signing key has this kid.\n"


def test_the_flask_cli_refuses_an_app_on_embedded_stores(signing_key_file):
    embedded = create_app(Settings(admin_key=ADMIN_KEY, signing_key_file=signing_key_file, log_level="ERROR"))
    result = embedded.test_cli_runner().invoke(args=["api-keys", "list"])
    assert result.exit_code == 2 and "TOKEN_SERVICE_REDIS_URL is unset" in result.stderr
