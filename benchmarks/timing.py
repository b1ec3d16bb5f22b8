"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``,
which puts this folder on ``sys.path``)."""

from __future__ import annotations

import time


def best_time(function, repeat: int) -> tuple[float, object]:
    """(fastest of ``repeat`` calls of ``function()`` in seconds, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = function()
        best = min(best, time.perf_counter() - t)
    return best, out
