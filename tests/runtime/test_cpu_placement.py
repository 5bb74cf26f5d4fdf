"""The monitor keeps its own CPUs and leaves the rest to the local Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from risklib.cpu_placement import DEFAULT_MONITOR_CPUS, Placement, monitor_cpu_count, plan

SPARE_CPU = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2


@pytest.mark.parametrize(
    ("available", "keep", "expected"),
    [
        ({0, 1}, 1, Placement(monitor=frozenset({1}), server=frozenset({0}))),
        ({0, 1, 2, 3}, 2, Placement(monitor=frozenset({2, 3}), server=frozenset({0, 1}))),
        ({2, 5, 7}, 1, Placement(monitor=frozenset({7}), server=frozenset({2, 5}))),
        ({3}, 1, None),  # nothing to spare: nobody is placed
        ({0, 1}, 2, None),
        ({0, 1}, 0, None),  # placement turned off
    ],
)
def test_the_monitor_keeps_the_highest_cpus_and_the_server_gets_the_rest(available, keep, expected):
    # Act / Assert
    assert plan(available, keep) == expected


@pytest.mark.parametrize(("raw", "expected"), [("", DEFAULT_MONITOR_CPUS), ("0", 0), (" 3 ", 3)])
def test_the_monitors_cpu_count_comes_from_the_environment(monkeypatch, raw, expected):
    # Arrange
    monkeypatch.setenv("RISK_MONITOR_CPUS", raw)
    # Act / Assert
    assert monitor_cpu_count() == expected


@pytest.mark.parametrize("raw", ["one", "-1", "1.5"])
def test_a_bad_cpu_count_names_the_setting_and_value(monkeypatch, raw):
    # Arrange
    monkeypatch.setenv("RISK_MONITOR_CPUS", raw)
    # Act / Assert
    with pytest.raises(ValueError, match=rf"RISK_MONITOR_CPUS='{raw}'"):
        monitor_cpu_count()


# Starts worker threads (Polars' pool, a Python thread), then reports every thread's CPUs before,
# inside and after the placement, and those of a thread started inside it. In a process of its own,
# so the test run's threads are never moved.
_PROBE = textwrap.dedent("""
    import json, os, sys, threading
    import polars as pl
    from risklib.cpu_placement import monitor_placement, current_plan

    pl.DataFrame({"a": range(100)}).sort("a")  # Polars' pool is running
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()

    def cpus():
        out = {}
        for tid in os.listdir("/proc/self/task"):
            try:
                out[tid] = sorted(os.sched_getaffinity(int(tid)))
            except OSError:
                pass
        return out

    before = cpus()
    with monitor_placement(current_plan()) as placement:
        inside = cpus()
        started = []
        t = threading.Thread(target=lambda: started.append(sorted(os.sched_getaffinity(0))))
        t.start(); t.join()
    after = cpus()
    print(json.dumps({"placement": placement and [sorted(placement.monitor), sorted(placement.server)],
                      "before": before, "inside": inside, "started": started[0], "after": after}))
""")


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


@pytest.mark.skipif(not SPARE_CPU, reason="placement needs a CPU to spare for the server; this machine has one")
def test_every_thread_of_the_monitor_runs_on_its_cpu_until_the_placement_ends():
    # Arrange
    available = sorted(os.sched_getaffinity(0))
    # Act
    seen = _probe({"RISK_MONITOR_CPUS": "1"})
    # Assert
    assert seen["placement"] == [available[-1:], available[:-1]]
    assert len(seen["inside"]) >= 3  # the main thread, Polars' pool and the Python thread at least
    assert all(cpus == available[-1:] for cpus in seen["inside"].values())
    assert seen["started"] == available[-1:]  # threads started meanwhile inherit it
    assert all(seen["after"][tid] == seen["before"][tid] for tid in seen["before"] if tid in seen["after"])


def test_no_thread_is_moved_when_placement_is_turned_off():
    # Act
    seen = _probe({"RISK_MONITOR_CPUS": "0"})
    # Assert
    assert seen["placement"] is None
    assert all(seen["inside"][tid] == seen["before"][tid] for tid in seen["before"] if tid in seen["inside"])
