"""/metrics under real gunicorn with two workers: prometheus-client's multiprocess mode adds up both workers'
counts in one scrape (config/gunicorn.conf.py sets it up; docs/operations/observability.md)."""

from __future__ import annotations

import glob
import os
import urllib.request
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, free_port
from tests.e2e.servers import Instance

REQUESTS = "token_service_http_requests_total"


def _healthz_count(samples: list[tuple[str, dict[str, str], float]]) -> float:
    return sum(v for name, labels, v in samples if name == REQUESTS and labels.get("route") == "/healthz")


def _scrape(instance: Instance) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(instance.base + "/metrics", timeout=10) as answer:  # noqa: S310 - loopback test server
        text = answer.read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def _per_worker(directory: Path) -> dict[str, float]:
    """/healthz answers counted in each worker's own file, by pid."""
    counts = {}
    for path in glob.glob(str(directory / "counter_*.db")):
        pid = Path(path).stem.split("_")[1]
        metrics = MultiProcessCollector.merge([path])
        counts[pid] = sum(s.value for m in metrics for s in m.samples
                          if s.name == REQUESTS and s.labels.get("route") == "/healthz")
    return counts


def test_one_scrape_adds_up_both_workers(tmp_path: Path, redis_url: str, signing_key_file: str) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir(mode=0o700)
    (directory / "counter_999999.db").write_bytes(b"stale")  # left by an earlier run: wiped at master start
    env = {"TOKEN_SERVICE_REDIS_URL": redis_url, "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
           "TOKEN_SERVICE_ADMIN_KEY": ADMIN_KEY, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    instance = Instance(env, workers=2)
    try:
        instance.start()
        assert not (directory / "counter_999999.db").exists()
        sent = 0
        # Each request is a new connection: both workers accept on the socket. Send until both have answered some.
        while sent < 2000:
            for _ in range(20):
                assert instance.request("GET", "/healthz")[0] == 200
                sent += 1
            workers = _per_worker(directory)
            if len([c for c in workers.values() if c > 0]) >= 2:
                break
        workers = _per_worker(directory)
        assert len([c for c in workers.values() if c > 0]) == 2, workers
        samples = _scrape(instance)
        assert _healthz_count(samples) == sent == sum(workers.values())
        assert any(name == "token_service_build_info" for name, _, _ in samples)
        assert any(name == "token_service_signing_keys" for name, _, _ in samples)
    finally:
        instance.close()
    assert os.path.isdir(directory)  # an operator's directory is kept (only a private one is removed)


def test_host_port_is_served_by_the_master_with_the_workers_sum(redis_url: str, signing_key_file: str) -> None:
    port = free_port()
    env = {"TOKEN_SERVICE_REDIS_URL": redis_url, "TOKEN_SERVICE_SIGNING_KEY_FILE": signing_key_file,
           "TOKEN_SERVICE_METRICS": f"127.0.0.1:{port}"}
    instance = Instance(env, workers=2)
    try:
        instance.start()
        for _ in range(30):
            assert instance.request("GET", "/healthz")[0] == 200
        assert instance.request("GET", "/metrics")[0] == 404  # not on the app
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:  # noqa: S310 - loopback
            samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(answer.read().decode()) for s in f.samples]
    finally:
        instance.close()
    assert _healthz_count(samples) == 30
