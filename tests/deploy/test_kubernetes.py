"""deploy/kubernetes/ (issue 8, item 7): every manifest parses, the selectors match the pod labels, the probes ask
real routes on the container's port, the key material comes from the Secret as files for the *_FILE settings, the
Ingress routes only public paths (never /v1/admin), resources are requested, the pod runs locked down, and the
shutdown timings agree with gunicorn's. No cluster runs here: this checks the files and how they refer to each
other, the Dockerfile and the application."""

from __future__ import annotations

import math
import re
from functools import cache
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    DEPLOY,
    URL_WITH_PASSWORD,
    gunicorn_settings,
    instructions,
    is_setting,
    secret_looking,
)
from token_service import create_app
from token_service.config import ConfigError, Settings, load_settings

K8S = DEPLOY / "kubernetes"
EXAMPLE_SECRET = "secret.example.yaml"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


@cache
def manifests() -> dict[str, dict[str, Any]]:
    """Every document of every manifest (the kustomization and the example Secret apart), by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in ("kustomization.yaml", EXAMPLE_SECRET):
            continue
        for document in documents(path.name):
            assert document["kind"] not in found, f"two {document['kind']}s"
            found[document["kind"]] = document
    return found


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()["Deployment"]["spec"]["template"]
    return spec


def container() -> dict[str, Any]:
    [only] = pod()["spec"]["containers"]
    return dict(only)


def pod_labels() -> dict[str, str]:
    return dict(pod()["metadata"]["labels"])


def selects_the_pods(selector: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= pod_labels().items()


@cache
def routes() -> frozenset[str]:
    app = create_app(Settings(log_level="ERROR"))
    return frozenset(rule.rule for rule in app.url_map.iter_rules())


def test_every_file_parses_and_every_document_is_named():
    for path in sorted(K8S.glob("*.yaml")):
        docs = documents(path.name)
        assert docs, path.name
        for document in docs:
            assert document.get("apiVersion") and document.get("kind"), path.name
            if document["kind"] != "Kustomization":
                assert document["metadata"]["name"], path.name
    assert {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Ingress"} <= manifests().keys()


def test_the_kustomization_lists_every_manifest_but_the_example_secret():
    [kustomization] = documents("kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {EXAMPLE_SECRET}  # placeholders are never applied by `kubectl apply -k`
    assert kustomization["namespace"] == manifests()["Namespace"]["metadata"]["name"]
    [image] = kustomization["images"]
    assert container()["image"].split(":")[0] == image["name"]


def test_selectors_match_the_pod_labels():
    deployment = manifests()["Deployment"]["spec"]
    assert deployment["selector"]["matchLabels"] == pod_labels()
    assert selects_the_pods(manifests()["Service"]["spec"]["selector"])
    assert selects_the_pods(manifests()["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert selects_the_pods(manifests()["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"])
    assert not selects_the_pods({"app.kubernetes.io/name": "something-else"})  # the check can say no


def test_at_least_two_replicas_and_a_budget_that_keeps_one():
    replicas = manifests()["Deployment"]["spec"]["replicas"]
    assert replicas >= 2
    pdb = manifests()["PodDisruptionBudget"]["spec"]
    assert pdb.get("maxUnavailable", replicas) < replicas or pdb.get("minAvailable", 0) >= 1
    assert manifests()["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def _port(reference: str | int) -> int:
    by_name = {p["name"]: p["containerPort"] for p in container()["ports"]}
    return by_name[reference] if isinstance(reference, str) else reference


def test_probes_ask_real_routes_on_the_container_port():
    served = int(gunicorn_settings()["bind"].rsplit(":", 1)[1])
    assert [p["containerPort"] for p in container()["ports"]] == [served]
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container()[probe]["httpGet"]
        assert get["path"] == path and path in routes(), probe
        assert _port(get["port"]) == served, probe
    # the readiness check makes up to two Redis calls, each bounded by the connect and socket timeouts
    defaults = Settings()
    bound = 2 * (defaults.redis_connect_timeout + defaults.redis_socket_timeout)
    assert container()["readinessProbe"]["timeoutSeconds"] > bound
    assert "/nonexistent" not in routes()


def test_resources_are_requested_and_limited_and_workers_fit_the_cpu_limit():
    resources = container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), kind
    env = {e["name"]: e.get("value") for e in container()["env"]}
    workers = int(env["WEB_CONCURRENCY"])  # set: the default counts every core of the node
    cpu = resources["limits"]["cpu"]
    cores = int(cpu[:-1]) / 1000 if str(cpu).endswith("m") else float(cpu)
    assert 1 <= workers <= 2 * math.ceil(cores) + 1


def test_the_pod_runs_locked_down_as_the_images_user():
    security = pod()["spec"]["securityContext"]
    [user] = instructions("USER")[-1:]
    uid, _, gid = user.value[0].partition(":")
    assert security["runAsNonRoot"] is True and security["runAsUser"] == int(uid) and security["runAsGroup"] == int(gid or uid)
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    own = container()["securityContext"]
    assert own["readOnlyRootFilesystem"] is True and own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"] and "add" not in own["capabilities"]
    assert pod()["spec"]["automountServiceAccountToken"] is False
    # a read-only root: gunicorn's heartbeat directory must be a mounted, writable volume
    mounts = {m["mountPath"]: m for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    tmp_dir = gunicorn_settings()["worker_tmp_dir"]
    assert tmp_dir in mounts and "emptyDir" in volumes[mounts[tmp_dir]["name"]]


def test_key_material_comes_from_the_secret_as_files_for_the_file_settings():
    env = container()["env"]
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod()["spec"]["volumes"]}
    [example] = documents(EXAMPLE_SECRET)
    example_keys = set(example["stringData"])
    referenced: set[str] = set()
    for entry in env:
        name = entry["name"]
        if name.startswith("TOKEN_SERVICE_"):
            assert is_setting(name), f"{name} is not a setting of token_service/config.py"
        value = str(entry.get("value", ""))
        assert not URL_WITH_PASSWORD.search(value), name
        if not (secret_looking(name) or name.endswith("_FILE")):
            continue
        assert name.endswith("_FILE") and "valueFrom" not in entry, f"{name}: a secret must come as a file"
        directory, _, file_name = value.rpartition("/")
        volume = volumes[mounts[directory]]
        assert volume["secret"]["secretName"] == example["metadata"]["name"]
        items = {item["path"]: item["key"] for item in volume["secret"]["items"]}
        referenced.add(items[file_name])
    assert referenced == {"redis-url", "key-encryption-key", "admin-key"}
    assert referenced <= example_keys
    secret_volume = next(v for v in volumes.values() if "secret" in v)
    assert secret_volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
    assert pod()["spec"]["securityContext"]["fsGroup"] == pod()["spec"]["securityContext"]["runAsGroup"]


@pytest.mark.parametrize("key, variable", [
    ("redis-url", "TOKEN_SERVICE_REDIS_URL_FILE"),
    ("key-encryption-key", "TOKEN_SERVICE_KEY_ENCRYPTION_KEY_FILE"),
    ("admin-key", "TOKEN_SERVICE_ADMIN_KEY_FILE"),
])
def test_the_example_secret_holds_placeholders_the_service_refuses(tmp_path, key, variable):
    [example] = documents(EXAMPLE_SECRET)
    value = example["stringData"][key]
    assert "REPLACE-ME" in value
    path = tmp_path / key
    path.write_text(value)
    valid = {"TOKEN_SERVICE_REDIS_URL": "redis://redis:6379/0", "TOKEN_SERVICE_KEY_ENCRYPTION_KEY": "ab" * 32,
             "TOKEN_SERVICE_ADMIN_KEY": "cd" * 32}
    load_settings(valid)  # the control: only the placeholder below is wrong
    environ = {k: v for k, v in valid.items() if k != variable.removesuffix("_FILE")}
    environ[variable] = str(path)
    with pytest.raises(ConfigError, match=variable.removesuffix("_FILE").removeprefix("TOKEN_SERVICE_")):
        load_settings(environ)
    assert "AN EXAMPLE ONLY" in (K8S / EXAMPLE_SECRET).read_text()


def test_the_ingress_routes_only_public_paths():
    ingress = manifests()["Ingress"]["spec"]
    service = manifests()["Service"]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    paths = []
    for rule in ingress["rules"]:
        for entry in rule["http"]["paths"]:
            paths.append(entry["path"])
            assert entry["pathType"] == "Exact", entry  # a Prefix would also route what is below it
            backend = entry["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"] and backend["port"]["name"] in port_names
            assert entry["path"] in routes(), f"{entry['path']} is not a route of the service"
    assert paths
    assert not any(p.startswith("/v1/admin") or p in ("/", "/readyz", "/metrics", "/healthz") for p in paths)
    assert "defaultBackend" not in ingress
    public = {"/v1/tokens", "/v1/verify", "/v1/revoke", "/.well-known/jwks.json"}
    assert public <= set(paths)


def test_the_network_policy_admits_only_the_container_port():
    policy = manifests()["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    port = container()["ports"][0]["containerPort"]
    for rule in policy["ingress"]:
        assert rule["from"], rule  # never from everywhere
        assert [p["port"] for p in rule["ports"]] == [port]
    namespaces = [f["namespaceSelector"] for r in policy["ingress"] for f in r["from"] if "namespaceSelector" in f]
    assert namespaces, "the ingress controller's namespace is admitted"
    assert "NetworkPolicy works at L4" in (K8S / "networkpolicy.yaml").read_text()  # the reason is written down


def test_shutdown_is_graceful_within_the_grace_period():
    spec = pod()["spec"]
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep = int(pre_stop[1])
    assert spec["terminationGracePeriodSeconds"] > sleep + gunicorn_settings()["graceful_timeout"]
    assert re.fullmatch(r"[0-9]+", pre_stop[1])
