"""Hypothesis profiles of the fuzz tests: bounded and derandomized by default, so that a run (CI's too) draws
the same examples every time and a failure reproduces; HYPOTHESIS_PROFILE=explore draws new ones, more of them."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", max_examples=1000, derandomize=False, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
