"""Recording a plan apart from sending it, and the dispatcher that sends behind the cycle.

Real warehouse, real twilio client against the local fake.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from esc_builders import T0, alerts
from risklib.adapters.notifiers import DrainReport, OutboxSender, PageDispatcher, load_escalation_state, run_escalation
from risklib.core.escalation import plan_escalation
from tests.fakes import Behaviour

pytestmark = pytest.mark.integration


def _recorded(wh, sender, config, rows, now=T0):
    open_, acks = load_escalation_state(wh)
    return sender.record_sends(plan_escalation(now, alerts(rows, now=now), open_, acks, config), now)


def test_a_drain_leaves_recorded_messages_to_their_delivery_however_late(wh, sender, config, twilio):
    # Arrange: level 3 recorded with its attempts (two calls, two SMS), no provider called yet
    planned = _recorded(wh, sender, config, [("A1", 3)])
    # Act: a drain long after in_doubt_after_s would take the attempts for a crash and resend them
    late = T0 + timedelta(seconds=config.retry.in_doubt_after_s * 10)
    drained = sender.drain(late)
    delivered = sender.deliver(planned)
    again = sender.drain(late + timedelta(seconds=1))
    # Assert: each message went out once, by its delivery
    assert sorted(drained.in_flight) == sorted(planned.ids) and drained.sent == []
    assert sorted(delivered.sent) == sorted(planned.ids) and again.sent == []
    assert len(twilio.created("Messages")) == 2 and len(twilio.created("Calls")) == 2


def test_a_message_with_the_dedup_key_of_one_in_flight_is_suppressed_not_sent_twice(wh, sender, config, twilio):
    # Arrange: level 2 recorded (two SMS), not yet delivered; a second plan carries the same two messages
    import dataclasses

    import polars as pl

    open_, acks = load_escalation_state(wh)
    plan = plan_escalation(T0, alerts([("A1", 2)]), open_, acks, config)
    first = sender.record_sends(plan, T0)
    again = dataclasses.replace(plan, incident_events=plan.incident_events.clear(), notifications=pl.DataFrame(
        [dict(r, notification_id=r["notification_id"] + "-again") for r in plan.notifications.to_dicts()],
        schema=plan.notifications.schema,
    ).filter(pl.col("recipient") != "dashboard"))
    # Act
    second = sender.record_sends(again, T0)
    sender.deliver(first)
    sender.deliver(second)
    # Assert: the copies were suppressed as duplicates; each person got one SMS
    assert len(first.batch) == 2 and second.batch == [] and len(second.report.suppressed) == 2
    assert len(twilio.created("Messages")) == 2


def test_a_message_whose_delivery_died_is_reconciled_by_the_next_drain(wh, notifiers, config, twilio):
    # Arrange: recorded, then the delivery fails inside (its outcome write, say): the attempts have no outcome
    class FailsOnce(OutboxSender):
        failed = False

        def _call_and_record(self, batch, clock, sent_keys, report):
            if not self.failed:
                self.failed = True
                raise OSError("disk full")
            return super()._call_and_record(batch, clock, sent_keys, report)

    sender = FailsOnce(wh, notifiers, config, sleep=lambda s: None)
    planned = _recorded(wh, sender, config, [("A1", 2)])
    with pytest.raises(OSError):
        sender.deliver(planned)
    # Act: no longer in flight, the messages are in doubt and sent by a drain after in_doubt_after_s
    report = sender.drain(T0 + timedelta(seconds=config.retry.in_doubt_after_s + 1))
    # Assert
    assert sorted(report.sent) == sorted(planned.ids)
    assert len(twilio.created("Messages")) == 2


def test_the_dispatcher_sends_in_order_and_reports_on_the_next_hand_over(wh, sender, config, twilio):
    # Arrange: Twilio answers the first request late, so the second cycle hands over while the first is sending
    twilio.fail(Behaviour(delay_s=0.3))
    dispatcher = PageDispatcher(sender)
    try:
        # Act
        _, first, nothing_yet = run_escalation(wh, sender, alerts([("A1", 2)]), config, T0, dispatcher=dispatcher)
        _, second, _ = run_escalation(wh, sender, alerts([("A1", 2), ("A2", 3)], now=T0 + timedelta(seconds=1)),
                                      config, T0 + timedelta(seconds=1), dispatcher=dispatcher)
        assert dispatcher.wait_idle(30)
        done = dispatcher.take_report()
    finally:
        dispatcher.close()
    # Assert: the stage returned before any provider answered; everything went out once, in hand-over order
    assert first.sent == [] and len(first.dispatched) == 2 and nothing_yet.sent == []
    assert len(second.dispatched) == 4
    assert sorted(done.sent) == sorted(first.dispatched + second.dispatched) and done.errors == []
    sms = [r.form["To"][0] for r in twilio.created("Messages")]
    assert len(sms) == 4 and len(set(zip(sms, [r.form["Body"][0] for r in twilio.created("Messages")]))) == 4
    assert dispatcher.take_report().sent == []  # reported once


class _Sender:
    """A sender whose first delivery raises; records what it was asked to do (dispatcher logic only)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()

    def deliver(self, planned):
        self.release.wait(10)
        self.calls.append(f"deliver {planned.now:%S}")
        if len(self.calls) == 1:
            raise OSError("disk full")
        return DrainReport(sent=list(planned.ids))

    def drain(self, now):
        self.calls.append("drain")
        return DrainReport()


def _planned(second: int):
    from risklib.adapters.notifiers import PlannedSends

    return PlannedSends(T0 + timedelta(seconds=second), [], set(), DrainReport(), 0.0)


def test_a_failed_delivery_is_reported_and_the_dispatcher_goes_on():
    # Arrange
    sender = _Sender()
    dispatcher = PageDispatcher(sender)
    # Act: three hand-overs while the first delivery is held, then released
    for second in (1, 2, 3):
        dispatcher.submit(_planned(second))
    waited_out = dispatcher.wait_idle(0.05)
    sender.release.set()
    idle = dispatcher.wait_idle(30)
    report = dispatcher.take_report()
    dispatcher.close()
    # Assert: waiting was bounded; every hand-over was delivered in order, a drain after the queue emptied
    assert not waited_out and idle
    assert [c for c in sender.calls if c != "drain"] == ["deliver 01", "deliver 02", "deliver 03"]
    assert sender.calls[-1] == "drain"
    assert len(report.errors) == 1 and "disk full" in report.errors[0]
    with pytest.raises(RuntimeError, match="closed"):
        dispatcher.submit(_planned(4))


def test_behind_counts_from_the_oldest_hand_over_not_yet_answered():
    # Arrange: a delivery that is held until released, on an injected clock
    from risklib.adapters.notifiers import PlannedSends

    clock = [100.0]
    entered = threading.Event()
    sender = _Sender()
    sender.deliver = lambda planned: (entered.set(), sender.release.wait(10), DrainReport())[-1]
    dispatcher = PageDispatcher(sender, monotonic=lambda: clock[0])
    with_messages = PlannedSends(T0, [("row", "message", "notifier")], set(), DrainReport(), 90.0)
    later = PlannedSends(T0, [("row", "message", "notifier")], set(), DrainReport(), 97.0)
    # Act
    idle = dispatcher.behind_s()
    dispatcher.submit(with_messages)
    assert entered.wait(10)
    dispatcher.submit(later)
    delivering = dispatcher.behind_s()
    sender.release.set()
    assert dispatcher.wait_idle(10)
    done = dispatcher.behind_s()
    dispatcher.close()
    # Assert: 100 - 90 while the first is with the provider; nothing once all are answered
    assert idle == 0.0 and delivering == 10.0 and done == 0.0


def test_a_close_that_runs_out_of_time_finishes_the_delivery_under_way_and_leaves_the_rest():
    # Arrange: the first delivery is held past the close's timeout; two more are queued behind it
    sender = _Sender()
    dispatcher = PageDispatcher(sender)
    for second in (1, 2, 3):
        dispatcher.submit(_planned(second))
    threading.Timer(0.5, sender.release.set).start()
    # Act
    dispatcher.close(timeout_s=0.1)
    # Assert: close returned only after the delivery under way ended; the queued ones were not started
    assert sender.release.is_set()
    assert sender.calls == ["deliver 01"]


# the thread dying of an uncaught exception is what this test sets up
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dispatcher_thread_that_died_is_replaced_by_the_next_hand_over():
    # Arrange: the first delivery ends its thread with an exception nothing catches
    class Killed(BaseException):
        pass

    sender = _Sender()
    sender.release.set()
    real = sender.deliver

    def dies_first(planned):
        if not sender.calls:
            sender.calls.append("killed")
            raise Killed()
        return real(planned)

    sender.deliver = dies_first
    dispatcher = PageDispatcher(sender)
    dispatcher.submit(_planned(1))
    dispatcher._thread.join(10)
    # Act
    dispatcher.submit(_planned(2))
    idle = dispatcher.wait_idle(10)
    dispatcher.close()
    # Assert: the second hand-over was delivered by a new thread
    assert idle and sender.calls[:2] == ["killed", "deliver 02"]


def test_a_queue_that_never_empties_is_still_drained_every_few_seconds():
    # Arrange: each delivery takes 2 s of an injected clock, and three hand-overs wait behind the first
    clock = [0.0]
    sender = _Sender()
    sender.release.set()
    real = sender.deliver

    def slow(planned):
        clock[0] += 2.0
        return real(planned)

    hold = threading.Event()  # the first delivery starts only once all four are queued
    sender.deliver = lambda planned: (hold.wait(10), slow(planned))[-1]
    dispatcher = PageDispatcher(sender, drain_every_s=5.0, monotonic=lambda: clock[0])
    # Act
    for second in (1, 2, 3, 4):
        dispatcher.submit(_planned(second))
    hold.set()
    assert dispatcher.wait_idle(10)
    dispatcher.close()
    # Assert: after 6 s of deliveries a drain ran although the queue was not empty; then one at the end
    assert sender.calls == ["deliver 01", "deliver 02", "deliver 03", "drain", "deliver 04", "drain"]
