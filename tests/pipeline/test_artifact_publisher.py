"""The monitor's background artifact publisher: newest cycle wins, failures never stop it."""

from __future__ import annotations

import contextvars
import logging
import threading

from flows.monitor import ArtifactPublisher

_CYCLE = contextvars.ContextVar("cycle", default="none")


def test_a_slow_publish_skips_the_cycles_behind_it_and_close_publishes_the_newest():
    # Arrange
    done: list[str] = []
    first_started, release = threading.Event(), threading.Event()

    def slow():
        first_started.set()
        release.wait(10)
        done.append("c1")

    publisher = ArtifactPublisher(logging.getLogger("test"))
    # Act
    publisher.submit(slow)
    assert first_started.wait(10)
    publisher.submit(lambda: done.append("c2"))
    publisher.submit(lambda: done.append("c3"))
    release.set()
    publisher.close()
    # Assert
    assert done == ["c1", "c3"]
    assert (publisher.published, publisher.skipped) == (2, 1)


def test_a_failing_publish_is_logged_and_the_next_one_still_runs(caplog):
    # Arrange
    done: list[str] = []
    failing = threading.Event()
    publisher = ArtifactPublisher(logging.getLogger("test.publisher"))

    def broken():
        failing.set()
        raise ConnectionError("API unreachable")

    # Act
    with caplog.at_level(logging.WARNING, logger="test.publisher"):
        publisher.submit(broken)
        assert failing.wait(10)
        publisher.submit(lambda: done.append("next"))
        publisher.close()
    # Assert
    assert "dashboard artifacts not published: ConnectionError: API unreachable" in caplog.text
    assert done == ["next"]
    assert publisher.published == 1


def test_the_publish_runs_in_the_context_of_the_cycle_that_handed_it_over():
    # Arrange
    seen: list[str] = []
    publisher = ArtifactPublisher(logging.getLogger("test"))
    token = _CYCLE.set("cycle-7")
    # Act
    try:
        publisher.submit(lambda: seen.append(_CYCLE.get()))
    finally:
        _CYCLE.reset(token)
    publisher.close()
    # Assert
    assert seen == ["cycle-7"]


def test_publishes_start_at_least_the_minimum_interval_apart_and_close_publishes_the_newest_at_once():
    # Arrange: a minute between publishes, far longer than this test
    done: list[str] = []
    first_done = threading.Event()
    publisher = ArtifactPublisher(logging.getLogger("test"), min_interval_s=60.0)

    def first():
        done.append("c1")
        first_done.set()

    # Act
    publisher.submit(first)
    assert first_done.wait(10)
    publisher.submit(lambda: done.append("c2"))
    publisher.submit(lambda: done.append("c3"))
    held = list(done)
    publisher.close(timeout_s=10)
    # Assert: c2 and c3 waited for the interval, c3 replaced c2, and close did not wait the minute
    assert held == ["c1"]
    assert done == ["c1", "c3"]
    assert (publisher.published, publisher.skipped) == (2, 1)
    assert not publisher._thread.is_alive()


def _gapped_publisher(max_hold_s: float):
    from risklib.cycle_gaps import CycleGaps

    gaps = CycleGaps(max_hold_s=max_hold_s)
    return gaps, ArtifactPublisher(logging.getLogger("test"), gaps=gaps), threading.Event()


def test_a_publish_waits_for_the_running_cycle_to_end():
    # Arrange: a cycle is running; the publisher may hold back up to a minute for it
    gaps, publisher, done = _gapped_publisher(60.0)
    # Act
    with gaps.cycle():
        publisher.submit(done.set)
        held = not done.wait(0.5)
    # Assert: nothing was published during the cycle, and it was at once after it
    assert held
    assert done.wait(10)
    publisher.close(timeout_s=10)
    assert publisher.published == 1


def test_a_publish_held_back_longer_than_the_limit_runs_during_the_cycle():
    # Arrange: cycles back to back leave no gap; the publisher holds back at most 0.2 s
    gaps, publisher, done = _gapped_publisher(0.2)
    # Act / Assert: published while the cycle still runs
    with gaps.cycle():
        publisher.submit(done.set)
        assert done.wait(10)
        assert gaps.in_cycle
    publisher.close(timeout_s=10)
