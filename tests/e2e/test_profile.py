"""The profiling command (``make profile``, ``python -m tools.profile``) works end to end in its short mode: py-spy
samples the one gunicorn worker under wrk and the in-process verifier loop, and the summary's categories add up to
100 % of the samples. No assertion is about speed or about which category is largest: the shares are for
docs/performance.md.

Skipped when wrk or py-spy is missing or py-spy cannot attach (ptrace refused), unless
TOKEN_SERVICE_REQUIRE_E2E_BINARIES=1 (as in .ci/run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import missing, require_binary
from tools.profile import CATEGORIES, OTHER, can_attach, py_spy, read_collapsed, summarise

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def profiler() -> str:
    require_binary("wrk", "wrk")
    binary = py_spy()
    if binary is None:
        missing("py-spy is not installed (pip install -r requirements-dev.txt)")
    assert binary is not None
    refused = can_attach(binary)
    if refused is not None:
        missing(f"py-spy cannot attach to a process here: {refused}")
    return binary


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TOKEN_SERVICE_", "BENCH_", "PROFILE_", "WEB_CONCURRENCY", "GUNICORN_"))}
    return {**base, **extra}


def test_the_short_profile_samples_each_scenario_and_its_categories_add_up(profiler: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    scenarios = ["verify_repeated", "inproc_feed"]
    result = subprocess.run([sys.executable, "-m", "tools.profile"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=_env(PROFILE_SHORT="1", PROFILE_SECONDS="1", PROFILE_SCENARIOS=",".join(scenarios),
                                     PROFILE_RUN_DIR=str(run_dir)))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^result: ok", out, re.M), out

    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["scenarios"]) == scenarios and summary["problems"] == []
    for name, scenario in summary["scenarios"].items():
        shares = scenario["summary"]["categories"]
        assert set(shares) == {key for key, _, _ in CATEGORIES} | {OTHER[0]}
        assert scenario["summary"]["samples"] > 0, name
        assert abs(sum(shares.values()) - 100.0) < 0.5, (name, shares)  # each sample counted once
        assert 0 < len(scenario["summary"]["top_leaves"]) <= 15
        # the files it says it wrote: collapsed stacks that summarise to the same counts, a flame graph, speedscope
        stacks = read_collapsed((run_dir / f"{name}.txt").read_text().splitlines())
        assert sum(n for _, n in stacks) >= scenario["summary"]["samples"]
        assert ET.parse(run_dir / f"{name}.svg").getroot().tag.endswith("svg")
        assert json.loads((run_dir / f"{name}.speedscope.json").read_text())["profiles"][0]["type"] == "sampled"
    # the HTTP scenario was also sampled on CPU only: its own summary, adding up the same way
    cpu = summary["scenarios"]["verify_repeated"]["cpu_summary"]
    assert cpu["samples"] > 0 and abs(sum(cpu["categories"].values()) - 100.0) < 0.5
    assert read_collapsed((run_dir / "verify_repeated.cpu.txt").read_text().splitlines())
    assert 0 < summary["scenarios"]["verify_repeated"]["on_cpu_percent"]
    # the HTTP scenario sampled the service's request path; the loop sampled the verifier
    assert summary["scenarios"]["verify_repeated"]["summary"]["inclusive"]["view_all"] > 0
    assert summary["scenarios"]["verify_repeated"]["rps"] > 0
    assert summary["scenarios"]["inproc_feed"]["summary"]["categories"]["verifier"] > 0
    assert summary["scenarios"]["inproc_feed"]["calls_per_s"] > 0
    # the printed summary: one "total 100.0%" line per recording (the HTTP scenario has two), the table of shares
    assert len(re.findall(r"^\s+total\s+(?:99\.\d|100\.\d)%$", out, re.M)) == len(scenarios) + 1, out
    assert re.search(r"^share of samples %\s+verify_repeated\s+inproc_feed$", out, re.M), out

    # nothing it printed or left holds a token or a key; Redis's data directory is gone
    leftovers = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())
    for text in (out, result.stderr, leftovers):
        assert "eyJ" not in text and "PRIVATE KEY" not in text
        assert not re.search(r"\b(sk|ak)_[A-Za-z0-9_-]{8}", text)
    assert not (run_dir / "redis").exists()


def test_a_sample_counts_once_for_its_innermost_categorised_frame() -> None:
    stacks = read_collapsed([
        "run (gunicorn/workers/sync.py:1);wsgi_app (flask/app.py:2);verify (token_service/web/public.py:3);"
        "lookup (token_service/stores/redis.py:4);execute_command (redis/client.py:5);recv_into (socket.py:6) 6",
        "run (gunicorn/workers/sync.py:1);wsgi_app (flask/app.py:2);_finish (token_service/web/hooks.py:7);"
        "uuid4 (uuid.py:8) 3",
        "run (gunicorn/workers/sync.py:1);write (gunicorn/util.py:9) 1",
        "<module> (x.py:1) 0",
        "not a stack line",
    ])
    summary = summarise(stacks)
    assert summary["samples"] == 10
    shares = summary["categories"]
    # socket.py and uuid.py are in no category: their samples count for the caller that is
    assert (shares["redis"], shares["hooks"], shares["gunicorn"]) == (60.0, 30.0, 10.0)
    assert sum(shares.values()) == 100.0
    assert summary["inclusive"]["app"] == 90.0 and summary["inclusive"]["view_all"] == 60.0
    assert summary["top_leaves"][0] == {"function": "recv_into (socket.py)", "percent": 60.0, "category": "-", "main_line": 6}


def test_flask_limiter_counts_outside_the_view_it_wraps_only() -> None:
    stacks = read_collapsed([
        # the limiter's decorator around the view: the signature inside the view is the view's, not the limiter's
        "__inner (flask_limiter/_limits.py:1);mint (token_service/web/public.py:2);sign (jwt/algorithms.py:3) 5",
        # the limiter's own check and its Redis call
        "__inner (flask_limiter/_limits.py:1);_check (flask_limiter/_extension.py:4);get (redis/client.py:5) 3",
        # a limit checked from inside the view (our rate_limits.py) counts for the limiter
        "mint (token_service/web/public.py:2);lockout (token_service/web/rate_limits.py:6);get (limits/storage/redis.py:7) 2",
    ])
    inclusive = summarise(stacks)["inclusive"]
    assert inclusive["limiter_all"] == 50.0 and inclusive["view_all"] == 70.0 and inclusive["redis_all"] == 30.0


def test_a_bad_setting_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tools.profile"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=_env(PROFILE_SCENARIOS="verify,nope", PROFILE_RUN_DIR=str(tmp_path / "r")))
    assert result.returncode == 2 and "PROFILE_SCENARIOS: unknown nope, verify" in result.stderr
    assert not (tmp_path / "r").exists()
