"""The soak command (``make soak``, ``python -m tools.soak``) works end to end, and its checker counts
what it claims to count: a revoked token accepted is a violation, a valid token refused a failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.soak import Driver, Ledger, Tok, verdict

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_passes_and_reports_every_kind_of_traffic(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TOKEN_SERVICE_", "SOAK_"))},
           "SOAK_SECONDS": "5", "SOAK_CLIENTS": "4", "SOAK_ADMIN_INTERVAL": "0.5", "SOAK_RUN_DIR": str(tmp_path),
           "SOAK_MAX_GROWTH": "50"}  # 5 s cannot judge memory (caches still filling); `make soak` keeps the 10 % default
    result = subprocess.run([sys.executable, "-m", "tools.soak"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result: PASS" in result.stdout
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 2
    last = samples[-1]
    for kind in ("mint_secret", "mint_public", "mint_hmac", "verify_fresh", "verify", "introspect", "self_revoke", "admin_jti"):
        assert last["requests"].get(kind, 0) > 0, kind
    # the correctness checks ran in both directions
    assert last["checks"]["good_accepted"] > 0 and last["checks"]["revoked_refused"] > 0
    assert last["errors"] == {} and last["failures"] == {} and last["violations"] == {}
    # two masters and two workers each were measured; the revocation store was sampled
    assert sorted(last["rss_kib"]) == ["A master", "A worker 1", "A worker 2", "B master", "B worker 1", "B worker 2"]
    assert all(v > 0 for v in last["rss_kib"].values())
    assert last["redis"]["entries"] > 0 and last["redis"]["dbsize"] > last["redis"]["entries"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["total"] == last["total"] and set(summary["memory"]) == set(last["rss_kib"])
    # neither the printed figures nor the instance logs carry a token or an API key
    logs = "".join(p.read_text() for p in tmp_path.glob("instance-*.log"))
    for text in (result.stdout, result.stderr, logs):
        assert "eyJ" not in text and "sk_" not in text and "pk_" not in text
    assert not (tmp_path / "redis").exists()  # the append-only file is removed with the run's Redis


def test_a_bad_duration_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tools.soak", "--seconds", "0", "--run-dir", str(tmp_path / "r")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "must be positive" in result.stderr
    assert not (tmp_path / "r").exists()


def _tok(jti: str = "j1", sub: str = "user-1", persona: str = "support-bot", iat: int | None = None) -> Tok:
    now = int(time.time())
    return Tok("not-a-token", jti, sub, persona, now if iat is None else iat, now + 60)


def test_ledger_revoked_only_once_acknowledged_and_unknown_while_in_flight() -> None:
    ledger, tok = Ledger(), _tok()
    assert ledger.verdict(tok, time.time()) == "good"
    ledger.start_jti("j1")
    assert ledger.verdict(tok, time.time()) == "unknown"
    ledger.ack_jti("j1")
    assert ledger.verdict(tok, time.time()) == "revoked"
    assert ledger.verdict(_tok(jti="j2"), time.time()) == "good"


def test_ledger_watermarks_cover_tokens_issued_at_or_before_the_revocation_second() -> None:
    ledger = Ledger()
    handle = ledger.start_mark("sub", "user-1")
    assert ledger.verdict(_tok(iat=100), time.time()) == "unknown"
    ledger.ack_mark("sub", "user-1", handle, 100)
    assert ledger.verdict(_tok(iat=100), time.time()) == "revoked"
    assert ledger.verdict(_tok(iat=101), time.time()) == "good"
    assert ledger.verdict(_tok(sub="user-2", iat=50), time.time()) == "good"
    persona = ledger.start_mark("personaId", "billing-bot")
    ledger.ack_mark("personaId", "billing-bot", persona, 200)
    assert ledger.verdict(_tok(sub="user-3", persona="billing-bot", iat=200), time.time()) == "revoked"
    assert ledger.verdict(_tok(sub="user-3", persona="support-bot", iat=200), time.time()) == "good"


def test_ledger_does_not_expect_a_token_about_to_expire_to_verify() -> None:
    tok = _tok()
    assert Ledger().verdict(tok, tok.exp - 1) == "unknown"


def test_judge_counts_a_revoked_token_accepted_as_a_violation_and_a_valid_token_refused_as_a_failure() -> None:
    driver = Driver([], "admin")
    driver._judge("verify", 1, "revoked", "revoked", accepted=True, expected_shape=True, seen="200")
    driver._judge("verify", 1, "revoked", "revoked", accepted=False, expected_shape=True, seen="401")
    driver._judge("verify", 1, "good", "good", accepted=False, expected_shape=True, seen="401")
    driver._judge("verify", 1, "good", "unknown", accepted=False, expected_shape=True, seen="401")  # a revocation raced it
    driver._judge("introspect", 1, "good", "good", accepted=True, expected_shape=True, seen="200")
    driver._judge("mint", 1, "unknown", "unknown", accepted=False, expected_shape=False, seen="429")
    snap = driver.snapshot()
    assert snap["violations"] == {"verify": 1}
    assert snap["failures"] == {"verify": 1, "mint": 1}
    assert snap["checks"] == {"revoked_refused": 1, "good_accepted": 1}


def test_a_crashing_driver_step_is_counted_as_an_error_not_lost() -> None:
    driver = Driver([], "admin")

    def broken() -> None:
        raise KeyError("revoked_at")

    driver._safely(broken)
    assert driver.snapshot()["errors"] == {"driver": 1}


@pytest.mark.parametrize(("changes", "reason"), [
    ({"errors": 1}, "1 errors"),
    ({"failures": 2}, "2 failures"),
    ({"violations": 1}, "1 violations"),
    ({"memory": {"A worker 1": {"percent": 25.0}}}, "A worker 1 grew 25.0%"),
])
def test_the_run_fails_on_any_error_failure_violation_or_memory_growth(changes: dict[str, object], reason: str) -> None:
    clean: dict[str, object] = {"errors": 0, "failures": 0, "violations": 0, "memory": {"A worker 1": {"percent": 19.0}}}
    assert verdict(clean, 20) == []
    reasons = verdict({**clean, **changes}, 20)
    assert len(reasons) == 1 and reasons[0].startswith(reason)
