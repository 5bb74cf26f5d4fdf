"""The gaps between cycles: background work that can wait is done in them.

A cycle of a 100-account book takes ~80 ms and, at the continuous cadence,
starts every 0.27 s. Behind it, threads land the previous cycles in the
warehouse (~50 ms of CPU a landing, part of it holding the GIL) and publish
the dashboard. On a 2-core machine, whatever CPU they take while a cycle runs
comes out of that cycle: landing during cycles cost ~20 ms of a 100-account
cycle at the median, measured with ``bench pipeline`` against landing nothing.

The monitor marks each cycle (:meth:`CycleGaps.cycle`); a worker whose work
may wait asks :meth:`CycleGaps.hold_s` how long to hold it back, and is woken
when the cycle ends. Nothing is held back for long: after ``max_hold_s`` the
work starts anyway, so at back-to-back cycles (a large book) it runs beside
them as before. Work that must not wait (a journal entry being made durable,
a page, the landing of a cycle that ordered actions) never asks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class CycleGaps:
    """Whether a cycle is running, for the background workers that yield to it.

    Parameters
    ----------
    max_hold_s
        The longest a worker holds work back waiting for a gap (wall-clock seconds); 0 never holds
        it back (what a worker given no gaps uses).
    """

    def __init__(self, max_hold_s: float) -> None:
        self.max_hold_s = max(0.0, float(max_hold_s))
        self._lock = threading.Lock()
        self._running = False
        self._waiters: list[threading.Condition] = []

    @property
    def in_cycle(self) -> bool:
        return self._running

    def subscribe(self, cond: threading.Condition) -> None:
        """Notify ``cond`` whenever a cycle ends (the worker waits on its own condition)."""
        with self._lock:
            self._waiters.append(cond)

    def unsubscribe(self, cond: threading.Condition) -> None:
        with self._lock:
            if cond in self._waiters:
                self._waiters.remove(cond)

    @contextlib.contextmanager
    def cycle(self) -> Iterator[None]:
        """Mark a cycle as running for the duration of the block."""
        self._running = True
        try:
            yield
        finally:
            self._running = False
            with self._lock:
                waiters = list(self._waiters)
            for cond in waiters:  # not under self._lock: a worker may hold its condition and call in here
                with cond:
                    cond.notify_all()

    def hold_s(self, due_since: float, now: float | None = None) -> float:
        """How long a worker whose work has been due since ``due_since`` (``time.monotonic()``) should
        still hold it back: 0 in a gap or once it has waited ``max_hold_s``."""
        if not self._running:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, due_since + self.max_hold_s - now)
