"""Shared helpers for benchmarks: repeated timing, percentiles and the machine's speed."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np


def time_calls(fn: Callable[[], object], *, repeat: int, warmup: int = 1) -> np.ndarray:
    """Seconds taken by each of ``repeat`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeat)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeat):
            t0 = time.perf_counter()
            fn()
            out[i] = time.perf_counter() - t0
    finally:
        if gc_was:
            gc.enable()
    return out


def p(values: np.ndarray, q: float) -> float:
    """The ``q``-th percentile of ``values`` (linear interpolation)."""
    return float(np.percentile(values, q))


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def machine_reference() -> dict[str, float]:
    """How fast this machine is right now, in two units that runs on different days can be compared by.

    ``machine_polars_filter_us``: a filter of a 10-row Polars frame (median of 2,000), the
    per-query cost that most of a small cycle's ~170 queries pay; ``machine_python_loop_ms``:
    a million additions in a Python loop (median of 5). The same code ran twice as slow end to
    end on one virtual machine as on another of the same kind; these say which a run had.
    """
    import polars as pl

    frame = pl.DataFrame({"a": np.arange(10), "b": np.arange(10.0)})
    query = time_calls(lambda: frame.filter(pl.col("a") > 3), repeat=2000, warmup=200)

    def loop() -> int:
        total = 0
        for i in range(1_000_000):
            total += i
        return total

    return {
        "machine_polars_filter_us": round(p(query, 50) * 1e6, 1),
        "machine_python_loop_ms": round(p(time_calls(loop, repeat=5), 50) * 1e3, 1),
    }
