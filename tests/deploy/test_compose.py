"""deploy/compose.yaml (issue 8, item 7): the file parses, every file it names exists (or is written by
deploy/secrets/generate.sh), the host names in its URLs are its services, every TOKEN_SERVICE_* variable is a
real setting, no secret is inline, and the start order waits on health checks.

Docker cannot run here, so the same pieces run outside containers: redis-server with deploy/redis/redis.conf
and the generated ACL, two instances started with exactly the image's CMD and the environment compose gives
them (secret paths pointed at the generated files), and nginx with deploy/nginx/nginx.conf, host names and
ports rewritten to loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import RedisServer, free_port, require_binary
from tests.deploy.support import (
    DEPLOY,
    ROOT,
    URL_WITH_PASSWORD,
    generate_secrets,
    gunicorn_settings,
    image_command,
    is_setting,
    secret_looking,
)
from tests.e2e.servers import Instance
from token_service.config import load_settings

COMPOSE = DEPLOY / "compose.yaml"
NGINX_CONF = DEPLOY / "nginx" / "nginx.conf"
REDIS_CONF = DEPLOY / "redis" / "redis.conf"
INSTANCES = ("token-service-a", "token-service-b")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def redis_conf() -> dict[str, str]:
    """deploy/redis/redis.conf as {directive: value} (the last one wins, as in Redis)."""
    values: dict[str, str] = {}
    for line in REDIS_CONF.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            values[name.lower()] = value.strip()
    return values


def upstream_servers() -> list[tuple[str, int]]:
    """The ``server host:port`` lines of the nginx configuration's upstreams."""
    return [(host, int(port)) for host, port in re.findall(r"^\s*server\s+([A-Za-z0-9.-]+):([0-9]+)\b", NGINX_CONF.read_text(), re.M)]


def secret_mounts(service: dict[str, Any]) -> dict[str, str]:
    """{path in the container: secret name} for a service's secrets (short syntax: /run/secrets/<name>)."""
    mounts = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, str):
            mounts[f"/run/secrets/{entry}"] = entry
        else:
            mounts[entry.get("target") or f"/run/secrets/{entry['source']}"] = entry["source"]
    return mounts


# -- the file itself --------------------------------------------------------------------------------


def test_it_parses_and_has_redis_two_instances_and_nginx():
    assert set(services()) == {"redis", *INSTANCES, "nginx"}
    for name in INSTANCES:
        built = services()[name]["build"]
        assert (COMPOSE.parent / built["context"] / built["dockerfile"]).resolve() == ROOT / "Dockerfile"
        assert "command" not in services()[name] and "entrypoint" not in services()[name]  # the image's CMD runs


def test_every_file_it_names_exists_or_is_generated(tmp_path):
    document = compose()
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).is_file(), f"{name}: {source} does not exist"
    generated = generate_secrets(tmp_path / "secrets")
    for name, secret in document["secrets"].items():
        path = (COMPOSE.parent / secret["file"]).resolve()
        assert path.parent == (DEPLOY / "secrets").resolve(), name
        assert path.name in generated and generated[path.name].strip(), f"generate.sh does not write {path.name}"
    used = {s for service in services().values() for s in secret_mounts(service).values()}
    assert used == set(document["secrets"])


def test_the_redis_keeps_what_it_acknowledged_and_evicts_nothing():
    conf = redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] in ("everysec", "always")
    assert conf["maxmemory-policy"] == "noeviction"
    redis = services()["redis"]
    assert redis["command"][-1] == "/usr/local/etc/redis/redis.conf"
    assert any(v.endswith(":/usr/local/etc/redis/redis.conf:ro") and v.startswith("./redis/redis.conf") for v in redis["volumes"])
    assert conf["aclfile"] in secret_mounts(redis)  # the password comes from the mounted ACL secret
    assert any(v.endswith(":/data") for v in redis["volumes"])  # the append-only file outlives the container


def test_host_names_in_urls_are_services_and_ports_match(tmp_path):
    port = int(gunicorn_settings()["bind"].rsplit(":", 1)[1])
    servers = upstream_servers()
    assert {host for host, _ in servers} == set(INSTANCES)
    assert {p for _, p in servers} == {port}
    url = urlsplit(generate_secrets(tmp_path)["redis-url"].strip())
    assert url.hostname in services() and url.port == int(redis_conf()["port"])
    for name in INSTANCES:
        assert f":{port}/readyz" in " ".join(services()[name]["healthcheck"]["test"])


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_every_variable_is_a_real_setting_and_no_secret_is_inline():
    for name, service in services().items():
        env = _environment(service)
        for variable, value in env.items():
            if variable.startswith("TOKEN_SERVICE_"):
                assert is_setting(variable), f"{name}: {variable} is not a setting of token_service/config.py"
            if secret_looking(variable):
                assert variable.endswith("_FILE") and value in secret_mounts(service), f"{name}: {variable} inline"
            assert not URL_WITH_PASSWORD.search(value), f"{name}: {variable} holds a password"
        command = " ".join(service.get("command", []))
        assert "requirepass" not in command and "--pass" not in command
    text = COMPOSE.read_text()
    assert not URL_WITH_PASSWORD.search(text)
    assert is_setting("TOKEN_SERVICE_ADMIN_KEY_FILE") and not is_setting("TOKEN_SERVICE_ISSUER_FILE")  # the checker says no too
    assert not is_setting("TOKEN_SERVICE_NO_SUCH_SETTING")


def test_start_order_waits_on_health_checks_and_shutdown_is_graceful():
    for name, service in services().items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services()[dependency], dependency
    assert set(services()["nginx"]["depends_on"]) == set(INSTANCES)
    graceful = gunicorn_settings()["graceful_timeout"]
    for name in INSTANCES:
        assert int(services()[name]["stop_grace_period"].rstrip("s")) > graceful
        assert services()[name]["read_only"] is True and services()[name]["cap_drop"] == ["ALL"]


def test_only_the_operators_listener_routes_the_admin_api():
    ports = services()["nginx"]["ports"]
    assert "127.0.0.1:8081:8081" in ports  # operators: loopback only
    assert not any(p.endswith(":8081") and not p.startswith("127.0.0.1:") for p in ports)
    public = NGINX_CONF.read_text().split("listen 8081;")[0]
    assert "/v1/admin" not in "".join(line.split("#")[0] for line in public.splitlines())


# -- the same pieces, outside containers -----------------------------------------------------------


def _request(url: str, token: str | None = None, data: bytes | None = None, content_type: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback test servers
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"null")


def _gunicorn() -> str:
    """The image's ``gunicorn`` on PATH: this interpreter's (the venv's) console script."""
    script = Path(sys.executable).parent / "gunicorn"
    assert script.exists(), script
    return str(script)


@dataclass
class Stack:
    redis: RedisServer
    instances: list[Instance]
    public: str
    operators: str
    admin_key: str
    redis_password: str


def _container_path(path: str, secrets: dict[str, str], directory: Path) -> str:
    """A /run/secrets/<name> path of the compose file, as the file generate.sh wrote."""
    name = secrets[path]
    return str(directory / Path(compose()["secrets"][name]["file"]).name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis, the two instances and nginx, started once for this module's tests (they change nothing shared)."""
    nginx = require_binary("nginx", "nginx-light", also=("/usr/sbin/nginx",))
    tmp_path = tmp_path_factory.mktemp("stack")
    secrets_dir = tmp_path / "secrets"
    generated = generate_secrets(secrets_dir)

    # Redis: deploy/redis/redis.conf as it is, and the generated ACL; only where it listens and writes differ.
    redis = RedisServer(tmp_path)
    redis.args = ["redis-server", str(REDIS_CONF), "--port", str(redis.port), "--bind", "127.0.0.1",
                  "--dir", str(tmp_path), "--aclfile", str(secrets_dir / "redis.acl"), "--daemonize", "no"]
    redis.start()  # RedisServer pings without a password: the ACL allows PING to anyone
    url = urlsplit(generated["redis-url"].strip())
    (secrets_dir / "redis-url").write_text(url._replace(netloc=url.netloc.replace("@redis:6379", f"@127.0.0.1:{redis.port}")).geturl())

    instances: list[Instance] = []
    nginx_process = None
    try:
        for name in INSTANCES:
            service = services()[name]
            mounts = secret_mounts(service)
            env = {k: _container_path(v, mounts, secrets_dir) if v in mounts else v for k, v in _environment(service).items()}
            load_settings(env)  # every value is valid as compose gives it
            instance = Instance({})
            instance.env.update(env, GUNICORN_BIND=f"127.0.0.1:{instance.port}")
            command = image_command()
            assert command[0] == "gunicorn"
            instance.args = [_gunicorn(), *command[1:]]  # exactly the CMD, run from the repository root
            instances.append(instance.start())

        ports = (free_port(), free_port())
        conf = NGINX_CONF.read_text()
        for old, new in (("server token-service-a:8000 ", f"server 127.0.0.1:{instances[0].port} "),
                         ("server token-service-b:8000 ", f"server 127.0.0.1:{instances[1].port} "),
                         ("listen 8080;", f"listen 127.0.0.1:{ports[0]};"), ("listen 8081;", f"listen 127.0.0.1:{ports[1]};")):
            assert conf.count(old) == 1, old
            conf = conf.replace(old, new)
        (tmp_path / "logs").mkdir()
        (tmp_path / "nginx.conf").write_text(conf)
        args = [nginx, "-p", str(tmp_path), "-e", str(tmp_path / "logs" / "error.log"), "-c", str(tmp_path / "nginx.conf"),
                "-g", f"pid {tmp_path}/nginx.pid; daemon off;"]
        checked = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30, check=False)
        assert checked.returncode == 0, checked.stderr
        nginx_process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        public, operators = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
        for _ in range(100):
            try:
                urllib.request.urlopen(operators + "/nginx-health", timeout=1).close()  # noqa: S310
                break
            except OSError:
                if nginx_process.poll() is not None:
                    raise RuntimeError("nginx exited") from None
                subprocess.run(["sleep", "0.05"], check=True)
        password = url.password or ""
        yield Stack(redis, instances, public, operators, generated["admin-key"].strip(), password)
    finally:
        if nginx_process is not None:
            nginx_process.terminate()
            nginx_process.wait(timeout=10)
        for instance in instances:
            instance.close()
        redis.stop()


def test_the_image_command_serves_with_the_compose_environment(stack: Stack):
    for instance in stack.instances:
        assert instance.request("GET", "/healthz")[0] == 200
        status, _, body = instance.request("GET", "/readyz")
        assert status == 200 and body["status"] == "ready", body
        assert body["checks"]["store"]["ok"] is True and body["checks"]["store"]["shared"] is True
        assert body["checks"]["signing_key"]["ring"] == "managed"  # KEY_ENCRYPTION_KEY_FILE was read
        output = instance.output()
        assert "docs/operations/redis.md" not in output, output  # deploy/redis/redis.conf passes the durability check
        assert stack.redis_password not in output and stack.admin_key not in output
    # one ring for both: the second instance read the key the first created
    kids = {i.request("GET", "/readyz")[2]["checks"]["signing_key"]["kid"] for i in stack.instances}
    assert len(kids) == 1


def test_nginx_routes_the_public_api_and_keeps_the_admin_api_to_operators(stack: Stack):
    status, body = _request(stack.public + "/.well-known/jwks.json")
    assert status == 200 and body["keys"]
    assert _request(stack.public + "/v1/revoke", data=b"token=not-a-token", content_type="application/x-www-form-urlencoded") == (200, {})
    for path in ("/v1/admin/api-keys", "/v1/admin/revocations", "/readyz", "/metrics", "/healthz", "/v1/admin/../admin/api-keys"):
        status, body = _request(stack.public + path, token=stack.admin_key)
        assert status == 404 and body["error"] == "not_found", (path, status, body)

    status, body = _request(stack.operators + "/v1/admin/api-keys", token=stack.admin_key)  # ADMIN_KEY_FILE was read
    assert status == 200 and "items" in body, body
    assert _request(stack.operators + "/v1/admin/api-keys")[0] == 401  # nginx adds no credentials
    assert _request(stack.operators + "/readyz")[0] == 200


def test_the_redis_url_may_come_from_a_file_and_is_never_echoed(tmp_path):
    from token_service.config import ConfigError

    path = tmp_path / "redis-url"
    path.write_text("  redis://token-service:s3cret-password@redis:6379/0\n")
    kek = {"TOKEN_SERVICE_KEY_ENCRYPTION_KEY": "ab" * 32}
    settings = load_settings({**kek, "TOKEN_SERVICE_REDIS_URL_FILE": str(path)})
    assert settings.redis_url == "redis://token-service:s3cret-password@redis:6379/0"
    with pytest.raises(ConfigError, match="both set"):
        load_settings({**kek, "TOKEN_SERVICE_REDIS_URL_FILE": str(path), "TOKEN_SERVICE_REDIS_URL": "redis://redis:6379/0"})
    path.write_text("http://token-service:s3cret-password@redis:6379/0")
    with pytest.raises(ConfigError) as refused:
        load_settings({**kek, "TOKEN_SERVICE_REDIS_URL_FILE": str(path)})
    assert "s3cret-password" not in str(refused.value)


def test_the_health_check_commands_work_against_a_running_instance(stack: Stack):
    """The Dockerfile's HEALTHCHECK and compose's health check, run as they are but for the port."""
    from tests.deploy.support import instructions

    [healthcheck] = instructions("HEALTHCHECK")
    commands = {"image": list(healthcheck.value[1:]), "compose": services()[INSTANCES[0]]["healthcheck"]["test"][1:]}
    closed = free_port()
    for what, command in commands.items():
        assert command[0] == "python", what
        for port, expected in ((stack.instances[0].port, 0), (closed, 1)):
            argv = [sys.executable, *[part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in command[1:]]]
            assert argv != [sys.executable, *command[1:]], what  # the port was there to replace
            result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
            assert result.returncode == expected, (what, port, result.stderr)
