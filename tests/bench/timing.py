"""Helpers shared by the benchmark scripts (each runs as its own process from the repository root)."""

from __future__ import annotations

import time
from typing import Callable


def best_of(n: int, fn: Callable[[], object]) -> float:
    """The fastest of ``n`` runs of ``fn``, in seconds (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
