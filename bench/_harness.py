"""Shared helpers for benchmarks: repeated timing and percentiles."""

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
