"""The benchmark command (``make bench``, ``python -m tools.bench``) works end to end in its short mode: every
scenario runs against a real Redis and gunicorn and prints its numbers, every issue-7 target gets a value and
a verdict, the results file holds the same, and nothing it prints or leaves behind carries a token or a key.
No assertion is about speed: the numbers are for docs/performance.md.

Skipped when wrk is not installed, unless TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1 (as in .ci/run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tools.bench import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"[\d,]+(?:\.\d+)?"


@pytest.fixture
def wrk() -> str:
    return require_binary("wrk", "wrk")


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOKEN_SERVICE_", "BENCH_", "WEB_CONCURRENCY", "GUNICORN_"))}
    return {**base, **extra}


def test_the_short_benchmark_prints_every_scenario_with_numbers(wrk: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "tools.bench"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=_env(BENCH_SHORT="1", BENCH_WORKERS="2", BENCH_CONNECTIONS="8", BENCH_RUN_DIR=str(run_dir)))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^result: ok", out, re.M), out

    # the table: one row per wrk scenario, with req/s, p50, p99, requests and no errors
    for name, (label, *_rest) in SCENARIOS.items():
        label = label.format(n="2,000")
        row = re.search(rf"^{re.escape(label)}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+(\d+)\s+(\d+)$", out, re.M)
        assert row is not None, f"{name} missing from the table:\n{out}"
        assert float(row.group(1).replace(",", "")) > 0 and int(row.group(4)) > 0 and row.group(5) == "0", row.group(0)
    for label in ("PyJWT encode", "PyJWT decode", "TokenCodec.encode", "TokenCodec.verify", "Verifier, repeated token (feed",
                  "Verifier, fresh tokens (feed", "Verifier, repeated token (Redis", "Verifier, fresh tokens (Redis"):
        assert re.search(rf"^{re.escape(label)}.*\s{NUMBER}$", out, re.M), f"{label} missing:\n{out}"
    assert re.search(rf"^revocations: 2,000 jti loaded .* = {NUMBER} bytes per jti", out, re.M), out
    assert re.search(r"^  after expiry \(TTL\): .* jti buckets \d+ \(\d+ fields\), stream entries \d+$", out, re.M), out
    assert re.search(r"^  after [\d,]+ more revocations \(sweeps\): .* stream entries \d+$", out, re.M), out
    # every target of issue 7 has a value from this run and a verdict
    targets = re.findall(r"^(.*?)\s+(\S+)(?: \S+)?\s+(>=|<=) .*  (met|NOT MET|-)$", out, re.M)
    assert len(targets) >= 17 and all(value != "-" and verdict != "-" for _, value, _, verdict in targets), targets

    # the results file says the same
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["scenarios"]) == set(SCENARIOS)
    for name, scenario in results["scenarios"].items():
        assert scenario["requests"] > 0 and scenario["rps"] > 0 and scenario["unexpected"] == 0, name
        assert 0 < scenario["p50_ms"] <= scenario["p99_ms"], name
    assert all(r["value"] is not None and r["met"] in (True, False) for r in results["ratios"])
    assert results["revocations"]["count"] == 2000 and results["revocations"]["bytes_per_jti"] > 0
    expiry = results["revocations"]["expiry"]
    assert expiry["after_expiry"]["dbsize"] < results["revocations"]["after_load"]["dbsize"]  # the TTLs did their work
    # the buckets that held only loaded entries expired whole (those left hold the other scenarios' revocations, swept
    # of the loaded entries by their next add, or expired whole one horizon after their last)
    assert expiry["after_expiry"]["jti_buckets"] < results["revocations"]["after_load"]["jti_buckets"]
    # and the adds after it swept the rest: only their own entries and the admin scenario's (unexpired) are left
    more, swept = expiry["more"]["count"], expiry["after_sweep"]
    admin = results["scenarios"]["revoke"]["requests"] + 64  # + the requests in flight when wrk stopped counting
    assert swept["jti_fields"] <= more + admin and swept["jti_stream"] <= more + admin
    assert swept["jti_stream"] < expiry["after_expiry"]["jti_stream"] or expiry["after_expiry"]["jti_stream"] <= more + admin
    assert results["settings"]["workers"] == 2 and results["problems"] == []

    # no token, key or signing key in what it printed or left: the private directory is gone, Redis's data too
    leftovers = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())
    for text in (out, result.stderr, leftovers):
        assert "eyJ" not in text and "PRIVATE KEY" not in text
        assert not re.search(r"\b(sk|ak)_[A-Za-z0-9_-]{8}", text)
    assert not (run_dir / "redis").exists()


def test_a_bad_setting_is_refused_before_anything_starts(wrk: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tools.bench"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=_env(BENCH_SECONDS="0", BENCH_RUN_DIR=str(tmp_path / "r")))
    assert result.returncode == 2 and "BENCH_SECONDS must be a whole number of at least 1" in result.stderr
    assert not (tmp_path / "r").exists()
