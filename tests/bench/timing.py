"""Helpers shared by the benchmark scripts (each runs as its own process from the repository root)."""

from __future__ import annotations

import time
from typing import Callable


def fastest(rounds: int, *fns: Callable[[], object]) -> list[float]:
    """The fastest run of each of ``fns``, in seconds, over ``rounds`` rounds.

    Each round runs every function once, in turn, so that a measurement and its baseline see the same
    moments of a shared, noisy machine; the minimum is the run least disturbed by the rest of it.
    """
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best
