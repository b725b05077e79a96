"""Helpers shared by the benchmark scripts (each runs as its own process from the repository root)."""

from __future__ import annotations

import time
from typing import Callable


def interleaved(rounds: int, *fns: Callable[[], object]) -> list[list[float]]:
    """Every run time of each of ``fns``, in seconds, over ``rounds`` rounds.

    Each round runs every function once, in turn, so that a measurement and its baseline see the same
    moments of a shared, noisy machine.
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return times


def fastest(rounds: int, *fns: Callable[[], object]) -> list[float]:
    """The fastest run of each of ``fns`` over ``rounds`` interleaved rounds: the run least disturbed by
    the rest of the machine."""
    return [min(runs) for runs in interleaved(rounds, *fns)]
