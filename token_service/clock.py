"""Time as an injectable dependency: every decision that depends on "now" asks a Clock."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns the current Unix time in seconds (float)."""


def system_clock() -> float:
    """The wall clock: Unix seconds."""
    return time.time()
