"""A cycle's state is carried, and its gate state put in force, only once its journal entry is durable."""

from __future__ import annotations

import shutil
import threading
from types import SimpleNamespace

import polars as pl
import pytest

from flows.monitor import cycle_warnings  # imported first: Prefect sets up logging when it loads
from risklib.core import frames
from risklib.cycle.stages import run_cycle


def _run_cycle(session):
    """One cycle through the stage functions, as the monitor's tasks call them; returns its result."""
    now = session.clock.now()
    session.run_market(now)
    result = run_cycle(session, now, session.next_cycle_id())
    session.clock.advance(60)
    return result


def _hold_journal_writes(session) -> threading.Event:
    """Keep the journal's writing thread busy (as a slow disk would) until the event is set."""
    release = threading.Event()
    session.journal._syncer.submit(release.wait)
    return release


def test_the_gate_keeps_the_previous_state_until_the_cycle_is_durable(make_session):
    # Arrange
    session = make_session(accounts=4)
    release = _hold_journal_writes(session)
    # Act: the cycle is recorded, its entry not yet written
    _run_cycle(session)
    before = session.gate_state
    reader = threading.Thread(target=lambda: session.state, daemon=True)
    reader.start()
    reader.join(0.3)
    waiting = reader.is_alive()
    release.set()
    reader.join(60)
    # Assert: no gate state was in force before (orders fail closed), the next cycle's read of the
    # carried state waited for the disk, and both are in force once it is durable
    assert before is None and waiting
    assert session.journal.flush(timeout_s=60)
    assert session.gate_state is not None and session.state is not None and session.state.height == 4


def test_a_cycle_that_never_became_durable_is_not_relied_on(make_session):
    # Arrange: one durable cycle, then one whose journal entry cannot be written
    session = make_session(accounts=4)
    _run_cycle(session)
    session.journal.flush(timeout_s=60)
    gate_before, state_before = session.gate_state, session.state
    release = _hold_journal_writes(session)
    _run_cycle(session)
    shutil.rmtree(session.journal.directory)
    # Act
    release.set()
    session.journal.flush(timeout_s=60)
    # Assert: the gate keeps the durable cycle's state; the next reader of the carried state gets
    # the error (its cycle fails and is recorded), once; the state stays the durable cycle's
    assert session.gate_state is gate_before
    with pytest.raises(OSError):
        session.state  # noqa: B018 - the property is what is tested
    assert session.state is state_before
    # and the session goes on once the disk is back
    (session.journal.directory / "failed").mkdir(parents=True)
    _run_cycle(session)
    session.flush()
    assert session.gate_state is not gate_before


def test_an_outgrown_escalation_mirror_is_compacted_in_the_gap_after_the_cycle_not_inside_it(make_session):
    # Arrange: the mirror outgrows its bound during a cycle (as a market-wide event's rows do)
    session = make_session(accounts=4)
    _run_cycle(session)
    session.prepare_next_cycle().result()
    execute = session.broker.execute

    def execute_and_outgrow(*args, **kwargs):
        session.outbox.compact_due = True  # as a write past compact_rows leaves it
        return execute(*args, **kwargs)

    session.broker.execute = execute_and_outgrow
    compactions: list[str] = []
    compact = session.outbox.compact
    session.outbox.compact = lambda: (compactions.append(threading.current_thread().name), compact())[1]
    # Act
    _run_cycle(session)
    during_cycle = list(compactions)
    read_again = session.prepare_next_cycle().result()
    # Assert: nothing was compacted inside the cycle; the gap's job compacted once, on its own
    # thread, and read the open incidents again from the compacted mirror
    assert during_cycle == []
    assert len(compactions) == 1 and compactions[0].startswith("cycle-prep")
    assert session.outbox.compact_due is False
    assert read_again is True


def test_a_failed_compaction_in_the_gap_is_reported_by_the_next_cycles_and_tried_again(make_session, caplog):
    # Arrange: a mirror due for compaction whose first compaction fails
    session = make_session(accounts=4)
    _run_cycle(session)
    session.outbox.compact_due = True
    compact = session.outbox.compact
    calls: list[int] = []

    def failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk full")
        compact()

    session.outbox.compact = failing_once
    # Act
    with caplog.at_level("ERROR", logger="risklib.cycle.session"):
        session.prepare_next_cycle().result()
    still_due = session.outbox.compact_due
    reported = _run_cycle(session)
    session.prepare_next_cycle().result()
    after_success = _run_cycle(session)
    # Assert: the failure was logged, left the mirror due and was reported by the next cycle's
    # escalate stage and dashboard warnings; the next gap compacted it and the report went away
    assert "compacting the escalation mirror failed" in caplog.text and "disk full" in caplog.text
    assert still_due is True
    assert "disk full" in reported.escalation["compaction_failure"]
    assert any(w.startswith("Escalation housekeeping failed") and "disk full" in w for w in cycle_warnings(reported))
    assert len(calls) == 2 and session.outbox.compact_due is False
    assert "compaction_failure" not in after_success.escalation
    assert not any(w.startswith("Escalation housekeeping") for w in cycle_warnings(after_success))


def test_the_next_cycle_computes_its_metrics_while_the_previous_entry_is_written(make_session, monkeypatch):
    import risklib.cycle.stages as stages

    # Arrange: one cycle recorded, its journal entry held back (a slow disk)
    session = make_session(accounts=4)
    release = _hold_journal_writes(session)
    _run_cycle(session)
    metrics_done, acted = threading.Event(), threading.Event()
    size_positions, act = stages.size_positions, stages.act

    def size_positions_after_metrics(*args, **kwargs):
        metrics_done.set()
        return size_positions(*args, **kwargs)

    def act_and_note(*args, **kwargs):
        acted.set()
        return act(*args, **kwargs)

    monkeypatch.setattr(stages, "size_positions", size_positions_after_metrics)
    monkeypatch.setattr(stages, "act", act_and_note)
    failed: list[BaseException] = []

    def next_cycle():
        try:
            _run_cycle(session)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(exc)

    # Act
    cycle = threading.Thread(target=next_cycle, daemon=True)
    cycle.start()
    computed_while_held = metrics_done.wait(60)
    cycle.join(0.3)
    waiting_before_deciding = cycle.is_alive() and not acted.is_set()
    release.set()
    cycle.join(120)
    # Assert: metrics went ahead; the next read of the state waited for the disk; the cycle completed
    assert computed_while_held
    assert waiting_before_deciding
    assert not cycle.is_alive() and failed == [] and acted.is_set()
    assert session.journal.flush(timeout_s=60) and session.state.height == 4


def test_an_operators_halt_executed_at_the_broker_binds_the_gate_from_the_next_durable_cycle(make_session):
    # Arrange: a calm book, every account ACTIVE; one account's book gets a halt of every order, another
    # one a halt of entries, as the act stage executes operators' requests
    session = make_session(accounts=4)
    _run_cycle(session)
    session.flush()
    accounts = session.state.filter(pl.col("trading_mode") == "ACTIVE")["account_id"].to_list()
    halted, entries_only, free = accounts[:3]
    positions = session.broker.positions()
    held = positions.filter(pl.col("account_id") == entries_only).row(0, named=True)
    for request_id, account, action in (("h1", halted, "HALT_ALL"), ("h2", entries_only, "HALT_ENTRIES")):
        session.warehouse.append("manual_action_requests", pl.DataFrame(
            {"request_id": [request_id], "account_id": [account], "action": [action], "fraction": [0.0],
             "operator": ["alice"], "authority_level": [3], "reason": ["desk asked"], "requested_at": [session.clock.now()]},
            schema_overrides={"requested_at": frames.UTC_TS},
        ), actor="alice", action="emergency.request")

    def order(account, instrument="EUR/USD", strategy=None, side="BUY", quantity=10.0):  # well inside every limit
        return SimpleNamespace(account_id=account, strategy=strategy or held["strategy"], instrument=instrument,
                               side=side, quantity=quantity, price=None)

    # Act: the next cycle executes the requests at the broker, and is recorded and durable
    _run_cycle(session)
    session.flush()
    # Assert: the policy's state still says ACTIVE, the gate holds the broker's halts
    assert session.broker.modes() == {halted: "HALT_ALL", entries_only: "HALT_ENTRIES"} | {
        a: m for a, m in session.broker.modes().items() if a not in (halted, entries_only)}
    assert session.broker.mode(halted) == "HALT_ALL" and session.broker.mode(entries_only) == "HALT_ENTRIES"
    modes = dict(session.state.select("account_id", "trading_mode").iter_rows())
    assert modes[halted] == modes[entries_only] == modes[free] == "ACTIVE"
    refused = session.gate_check(order(halted))
    assert not refused.approved and "TRADING_HALTED" in [r.code for r in refused.reasons]
    entry = session.gate_check(order(entries_only))
    assert not entry.approved and "ENTRIES_HALTED" in [r.code for r in entry.reasons]
    reduce_side = "SELL" if held["quantity"] > 0 else "BUY"
    reduction = session.gate_check(order(entries_only, held["instrument"], held["strategy"], reduce_side,
                                         abs(held["quantity"]) / 2))
    assert reduction.approved
    free_holds = set(positions.filter(pl.col("account_id") == free)["instrument"].to_list())
    unheld = next(i for i in ("EUR/USD", "GBP/USD", "USD/JPY", "AUD/USD", "USD/CHF") if i not in free_holds)
    assert session.gate_check(order(free, unheld)).approved
