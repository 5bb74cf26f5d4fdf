"""The page dispatcher: provider calls on a thread of their own, so no action waits for a page.

The escalate stage runs before the act stage. Called inline, a provider that
answers slowly (``retry.request_timeout_s`` = 10 s per call, inline retries up to
``retry.drain_budget_s``) would hold back the cycle's emergency actions for as
long, against the 60 s the specification allows an emergency stop and the 2 s
the pipeline aims for. So the escalate stage only plans and records (the plan
and its ``attempt`` events are durable before it returns, see
:meth:`OutboxSender.record_sends`), hands the messages to this dispatcher, and
the cycle goes on to act.

One thread makes every provider call of the pipeline, in the order the cycles
handed them over, then drains what older messages are due (retries, fallbacks,
held messages), as the escalate stage used to: once the queue is empty, and at
least every ``drain_every_s`` while it is not. One thread means a drain never
runs beside a delivery: the only messages a drain could take for crashed are
those recorded by a later cycle and not yet delivered, and the sender leaves
those alone (they are in flight). A crash loses nothing: what was recorded but
not answered is "in doubt" and reconciled with the provider at the next drain.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from risklib.adapters.notifiers._outbox import DrainReport, PlannedSends

log = logging.getLogger("risklib.escalation.dispatch")


class PageDispatcher:
    """Delivers what the escalate stage recorded, and drains the outbox, behind the cycle.

    Parameters
    ----------
    sender
        The session's :class:`OutboxSender` (``deliver`` and ``drain``); its store must
        allow a second thread (the :class:`LocalOutbox` does).
    drain_every_s
        Drain at least this often while hand-overs keep queueing: fresh pages go first,
        but retries and fallbacks of failed ones must not wait for a quiet moment that
        a crisis at the continuous cadence may not give.
    monotonic
        Injected for tests.
    """

    def __init__(self, sender: Any, *, drain_every_s: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.sender = sender
        self.drain_every_s = drain_every_s
        self.monotonic = monotonic
        self._drained_at = monotonic()
        self._cv = threading.Condition()
        self._jobs: deque[PlannedSends] = deque()
        self._drain_from: tuple[datetime, float] | None = None  # (cycle time, monotonic) of the newest hand-over
        self._busy = False
        self._started: float | None = None  # recorded_at of the oldest hand-over being delivered
        self._closed = False
        self._abandon = False  # set when close() ran out of time: stop after the delivery under way
        self._done = DrainReport()  # what deliveries and drains did since the last take_report()
        self._thread: threading.Thread | None = None

    def submit(self, planned: PlannedSends) -> None:
        """Hand over one cycle's recorded messages (possibly none: the outbox is drained after each hand-over)."""
        with self._cv:
            if self._closed:
                raise RuntimeError("the page dispatcher is closed")
            self._jobs.append(planned)
            self._drain_from = (planned.now, planned.recorded_at)
            if self._thread is None or not self._thread.is_alive():  # first use, or a thread that died
                self._thread = threading.Thread(target=self._run, name="page-dispatcher", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    @property
    def waiting(self) -> int:
        """Messages handed over and not yet passed to a provider."""
        with self._cv:
            return sum(len(job.batch) for job in self._jobs)

    def behind_s(self) -> float:
        """How long the oldest message handed over and not yet answered by its provider has waited (0: none)."""
        with self._cv:
            times = [job.recorded_at for job in self._jobs if job.batch]
            if self._started is not None:
                times.append(self._started)
        return max(0.0, self.monotonic() - min(times)) if times else 0.0

    def take_report(self) -> DrainReport:
        """What was sent, retried, failed… since the last call (the escalate stage's summary)."""
        with self._cv:
            done, self._done = self._done, DrainReport()
        return done

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until everything handed over was delivered and drained; False on timeout."""
        deadline = None if timeout_s is None else self.monotonic() + timeout_s
        with self._cv:
            while self._jobs or self._busy:
                left = None if deadline is None else deadline - self.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout_s: float = 60.0) -> None:
        """Deliver what was handed over (up to ``timeout_s``), then stop; later hand-overs are refused.

        Past ``timeout_s`` the delivery under way is finished (its outcomes written) and
        the hand-overs not yet started are left: their attempts are recorded without an
        outcome, so the next start reconciles them with the provider ("in doubt").
        """
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is None:
            return
        thread.join(timeout_s)
        if thread.is_alive():
            with self._cv:
                self._abandon = True
                left = self.waiting
            log.error("page dispatcher still busy after %.0f s at close: %d message(s) not sent, left in doubt "
                      "and reconciled with the provider at the next start", timeout_s, left)
            thread.join()  # the delivery under way ends within its provider timeout and retry budget

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._jobs or self._abandon:
                    return
                job = self._jobs.popleft()  # one at a time: `waiting` and `behind_s` see the rest
                self._started = job.recorded_at if job.batch else None
                self._busy = True
            report = DrainReport()
            try:
                self._step(report, lambda: self.sender.deliver(job), f"{len(job.batch)} message(s)")
                with self._cv:
                    self._started = None
                    # fresh pages first, then the older ones: when the queue is empty, or it has been a while
                    due = not self._jobs or self.monotonic() - self._drained_at >= self.drain_every_s
                    drain = due and not self._abandon
                    now, at = self._drain_from
                if drain:
                    self._drained_at = self.monotonic()
                    # the newest cycle's time, moved on by the wall time since it handed over
                    drain_now = now + timedelta(seconds=self.monotonic() - at)
                    self._step(report, lambda: self.sender.drain(drain_now), "the outbox drain")
            finally:
                with self._cv:
                    self._started = None
                    self._done.merge(report)
                    self._busy = False
                    self._cv.notify_all()

    @staticmethod
    def _step(report: DrainReport, work: Callable[[], DrainReport], what: str) -> None:
        try:
            report.merge(work())
        except Exception as exc:  # noqa: BLE001 - the next drain retries; the dispatcher must go on
            error = f"{type(exc).__name__}: {exc}"
            report.errors.append(f"dispatch of {what}: {error}")
            log.error("page dispatch of %s failed (the next drain retries it): %s", what, error)
