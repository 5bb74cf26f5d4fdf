"""CycleGaps: background work that can wait is held back while a cycle runs, never for long."""

from __future__ import annotations

import threading

import pytest

from risklib.cycle_gaps import CycleGaps


def test_work_is_held_only_while_a_cycle_runs_and_only_up_to_the_limit():
    gaps = CycleGaps(max_hold_s=2.0)
    assert gaps.hold_s(due_since=100.0, now=100.5) == 0.0  # no cycle: at once
    with gaps.cycle():
        assert gaps.in_cycle
        assert gaps.hold_s(due_since=100.0, now=100.5) == pytest.approx(1.5)
        assert gaps.hold_s(due_since=100.0, now=102.5) == 0.0  # waited long enough
    assert not gaps.in_cycle


def test_the_end_of_a_cycle_wakes_the_subscribed_workers_even_when_it_raised():
    gaps = CycleGaps(max_hold_s=60.0)
    cond = threading.Condition()
    gaps.subscribe(cond)
    woke = threading.Event()

    def worker():
        with cond:
            while gaps.in_cycle:
                cond.wait(30)
        woke.set()

    with pytest.raises(RuntimeError), gaps.cycle():
        thread = threading.Thread(target=worker)
        thread.start()
        assert not woke.wait(0.3)  # held while the cycle runs
        raise RuntimeError("stage failed")
    assert woke.wait(10) and not gaps.in_cycle
    thread.join(10)
    gaps.unsubscribe(cond)
    gaps.unsubscribe(cond)  # twice is harmless
