"""The local outbox: escalation state in the pipeline process, each write fsync'd locally, landed behind.

Real DuckLake warehouses, the real Twilio client against the fake server. A "crash"
abandons an outbox whose lander never ran: its journal entries stay on disk,
nothing reached the warehouse, exactly as after a killed process.
"""

from __future__ import annotations

import atexit
import shutil
import time
from datetime import timedelta

import polars as pl
import pytest

from esc_builders import T0, alerts
from risklib.adapters.notifiers import EscalationStateCache, LocalOutbox, OutboxSender, record_ack, run_escalation
from risklib.adapters.notifiers._state import ESCALATION_TABLES, load_escalation_state

pytestmark = pytest.mark.integration


class NoLander(LocalOutbox):
    """An outbox whose lander never lands (the process dies before it gets to it)."""

    def _run(self) -> None:
        return


def crash(outbox: LocalOutbox, warehouse) -> None:
    """Drop the outbox and its warehouse without landing or closing anything cleanly."""
    atexit.unregister(outbox._close_at_exit)
    outbox._lander.close()
    outbox._con.close()
    outbox._owner.close()  # the OS drops a dead process's lock
    warehouse.close()


def pipeline(outbox, notifiers, config, creds, cls=OutboxSender):
    sender = cls(outbox, notifiers, config, secrets=creds.secrets(), sleep=lambda s: None)
    return sender, EscalationStateCache(outbox.watch)


def cycle(outbox, sender, state, config, now, rows=(("A1", 2),)):
    return run_escalation(outbox, sender, alerts(list(rows), now=now), config, now, state=state)


def counts(wh) -> dict[str, int]:
    return {t: int(wh.query(f"SELECT count(*) AS n FROM {t}")["n"][0])
            for t in ("incidents", "notifications", "notification_events")}


def test_writes_land_in_the_warehouse_behind_and_nothing_is_sent_twice(wh, notifiers, config, creds, twilio):
    # Arrange
    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        # Act: the same condition for three cycles
        for s in (0, 5, 10):
            cycle(outbox, sender, state, config, T0 + timedelta(seconds=s))
        outbox.flush()
        ev = wh.query("SELECT event, provider_message_id FROM notification_events ORDER BY event")
    finally:
        outbox.close()
    # Assert: one incident, one page per recipient, every attempt and provider id in the warehouse
    assert len(twilio.created("Messages")) == 2
    assert counts(wh) == {"incidents": 1, "notifications": 3, "notification_events": 4}
    assert ev.filter(pl.col("event") == "attempt").height == 2
    sent = ev.filter(pl.col("event") == "sent")
    assert sent.height == 2 and sent["provider_message_id"].null_count() == 0
    assert wh.query("SELECT count(*) AS n FROM audit_log WHERE action = 'escalation.landed'")["n"][0] == 2


def test_writes_inside_the_landing_interval_land_together_each_with_its_marker(wh, notifiers, config, creds, twilio):
    # Arrange: at most one landing a minute; three incidents open in three cycles
    from risklib.adapters.warehouse import _connect

    def snapshots() -> int:
        return int(wh.query(f"SELECT count(*) AS n FROM ducklake_snapshots('{_connect.CATALOG}')")["n"][0])

    outbox = LocalOutbox(wh, min_interval_s=60)
    sender, state = pipeline(outbox, notifiers, config, creds)
    before = snapshots()
    try:
        # Act
        for i, account in enumerate(("A1", "A2", "A3")):
            cycle(outbox, sender, state, config, T0 + timedelta(seconds=5 * i), rows=((account, 2),))
        written = outbox.backlog + outbox.landed
        waiting = outbox.backlog
        assert outbox.flush(timeout_s=30)  # lands what waits without waiting out the minute
        commits = snapshots() - before
        markers = wh.query("SELECT count(*) AS n FROM audit_log WHERE action = 'escalation.landed'")["n"][0]
        mirrored = {t: int(outbox.query(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in counts(wh)}
    finally:
        outbox.close()
    # Assert: the entries written after the first waited and landed in one commit, every one marked,
    # and the warehouse holds every row the pipeline's mirror holds
    assert written >= 3 and waiting >= 2
    assert commits == 2 and markers == written
    assert counts(wh) == mirrored
    assert wh.query("SELECT count(DISTINCT incident_key) AS n FROM incidents")["n"][0] == 3
    assert wh.verify().ok


def test_writes_during_a_running_cycle_land_once_it_ends_while_pages_go_out_at_once(wh, notifiers, config, creds, twilio):
    # Arrange: landings may wait a minute for the gap after a running cycle
    from risklib.cycle_gaps import CycleGaps

    gaps = CycleGaps(max_hold_s=60.0)
    outbox = LocalOutbox(wh, gaps=gaps)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        # Act
        with gaps.cycle():
            cycle(outbox, sender, state, config, T0)
            time.sleep(0.5)
            held = (outbox.landed, counts(wh)["incidents"], len(twilio.created("Messages")))
        deadline = time.monotonic() + 30
        while outbox.backlog and time.monotonic() < deadline:
            time.sleep(0.02)
        landed = counts(wh)
    finally:
        outbox.close()
    # Assert: the pages went out during the cycle, the rows waited for its end and then landed unflushed
    assert held == (0, 0, 2)
    assert outbox.landed >= 1 and landed["incidents"] == 1 and landed["notifications"] == 3


def test_an_unexpected_landing_error_is_reported_while_paging_goes_on(wh, notifiers, config, creds, twilio, monkeypatch):
    # Arrange: landing breaks outside the per-entry retries
    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)

    def broken(items):
        raise RuntimeError("catalog went away")

    monkeypatch.setattr(outbox, "_land_items", broken)
    try:
        # Act
        cycle(outbox, sender, state, config, T0)
        flushed = outbox.flush(timeout_s=30)
        kept = sorted(p.name for p in outbox.directory.glob("[0-9]*.esc"))
    finally:
        outbox.close()
    # Assert: the page went out, the entries stay on disk for the next start, and the failure says so
    assert flushed and len(twilio.created("Messages")) == 2
    assert kept and counts(wh)["incidents"] == 0
    assert outbox.failure is not None and "RuntimeError: catalog went away" in outbox.failure
    assert kept[-1] in outbox.failure  # the latest failure


def test_a_send_outcome_alone_keeps_the_open_incident_state_cached_and_an_ack_reloads_it(
        wh, notifiers, config, creds, twilio):
    # Arrange: one cycle planned and sent the first page; the next load reads what it wrote
    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        cycle(outbox, sender, state, config, T0)
        open_incidents, _ = state.load(outbox)
        key = open_incidents["incident_key"][0]
        sent = outbox.query("SELECT * FROM notification_events WHERE event = 'sent' LIMIT 1")
        assert sent.height == 1
        # Act: a delivery receipt (notification_events only), then an acknowledgement
        outbox.append("notification_events",
                      sent.with_columns(pl.lit("delivered").alias("event"), pl.col("at") + timedelta(seconds=1)),
                      actor="test", action="delivery")
        after_delivery, _ = state.load(outbox)
        reloaded_after_delivery = state.reloaded
        pending_sees_delivery = outbox.watch.changed("outbox.pending", ESCALATION_TABLES)
        record_ack(outbox, [key], at=T0 + timedelta(seconds=2), channel="api", operator="op")
        _, acks = state.load(outbox)
        reloaded_after_ack = state.reloaded
    finally:
        outbox.close()
    # Assert
    assert not reloaded_after_delivery and after_delivery.equals(open_incidents)
    assert pending_sees_delivery  # what is still due to be sent does read notification_events
    assert reloaded_after_ack and acks["incident_key"].to_list() == [key]


def test_a_prefetch_after_a_cycle_reads_the_changed_state_once_and_the_next_load_reuses_it(
        wh, notifiers, config, creds, twilio):
    # Arrange: a cycle opened an incident (its rows changed the open-incident state)
    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        cycle(outbox, sender, state, config, T0)
        # Act
        read_in_gap = state.prefetch(outbox)
        open_incidents, _ = state.load(outbox)
        read_again = state.reloaded
        nothing_new = state.prefetch(outbox)
        fresh = load_escalation_state(outbox)[0]
    finally:
        outbox.close()
    # Assert: the prefetch read the new incident; the cycle's load reused it, and it is what a read returns
    assert read_in_gap and not read_again and not nothing_new
    assert open_incidents["account_id"].to_list() == ["A1"]
    assert open_incidents.equals(fresh)


def test_a_prefetch_that_fails_leaves_the_error_to_the_next_load(wh, notifiers, config, creds, twilio, monkeypatch):
    # Arrange: the mirror cannot be read once the incident was written
    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        cycle(outbox, sender, state, config, T0)

        def broken(sql, params=None):
            raise RuntimeError("mirror unreadable")

        monkeypatch.setattr(outbox, "query", broken)
        # Act / Assert: the prefetch reports it did not read; the cycle's own load raises
        assert state.prefetch(outbox) is False
        with pytest.raises(RuntimeError, match="mirror unreadable"):
            state.load(outbox)
    finally:
        monkeypatch.undo()
        outbox.close()


def test_an_outgrown_mirror_is_compacted_only_when_asked_after_the_cycle_has_acted(
        wh, notifiers, config, creds, twilio):
    # Arrange: a mirror bound far below one market-wide event's rows
    outbox = LocalOutbox(wh, compact_rows=10)
    sender, state = pipeline(outbox, notifiers, config, creds)
    accounts = [(f"A{i}", 2) for i in range(1, 7)]
    try:
        cycle(outbox, sender, state, config, T0, rows=accounts)  # six incidents open, pages go out
        cycle(outbox, sender, state, config, T0 + timedelta(seconds=30), rows=())  # all six resolve
        # Act
        grown = outbox.rows()
        due_after_escalating = outbox.compact_due
        compacted = outbox.compact_if_due()
        again = outbox.compact_if_due()
        left = outbox.query("SELECT count(*) AS n FROM incidents")["n"][0]
        # the pipeline goes on over the compacted mirror: a new episode pages again
        plan, fast, _ = cycle(outbox, sender, state, config, T0 + timedelta(seconds=60), rows=[("A1", 2)])
        outbox.flush()
    finally:
        outbox.close()
    # Assert: the escalate stage only marked it; the compaction dropped the resolved conversations once
    assert grown > 10 and due_after_escalating
    assert compacted and not again
    assert left == 0
    assert plan.incident_events.height == 1 and len(fast.sent) >= 1
    assert counts(wh)["incidents"] >= 13  # the warehouse keeps the whole history


def test_crash_after_send_before_landing_is_landed_on_restart_and_not_resent(wh_path, notifiers, config, creds, twilio):
    # Arrange: a cycle sends, then the process dies before anything reached the warehouse.
    from risklib.warehouse import Warehouse

    w1 = Warehouse.open(wh_path)
    ob1 = NoLander(w1)
    sender, state = pipeline(ob1, notifiers, config, creds)
    cycle(ob1, sender, state, config, T0)
    landed_before = counts(w1)
    crash(ob1, w1)
    # Act: restart, and keep escalating the same condition past the in-doubt window
    with Warehouse.open(wh_path) as w2:
        ob2 = LocalOutbox(w2)
        sender2, state2 = pipeline(ob2, notifiers, config, creds)
        try:
            for s in (5, config.retry.in_doubt_after_s + 1, 600):
                cycle(ob2, sender2, state2, config, T0 + timedelta(seconds=s))
            ob2.flush()
            after = counts(w2)
            sent = w2.query("SELECT provider_message_id FROM notification_events WHERE event = 'sent'")
        finally:
            ob2.close()
    # Assert
    assert landed_before == {"incidents": 0, "notifications": 0, "notification_events": 0}
    assert len(twilio.created("Messages")) == 2  # never paged twice
    assert after == {"incidents": 1, "notifications": 3, "notification_events": 4}
    assert sent.height == 2 and sent["provider_message_id"].null_count() == 0


def test_crash_after_durable_plan_before_provider_call_sends_once_after_restart(wh_path, notifiers, config, creds, twilio):
    # Arrange: the plan and its attempts are durable locally, then the process dies before calling Twilio.
    from risklib.warehouse import Warehouse

    class DiesBeforeCall(OutboxSender):
        def _call_and_record(self, batch, clock, sent_keys, report):
            raise SystemExit("killed")

    w1 = Warehouse.open(wh_path)
    ob1 = NoLander(w1)
    sender, state = pipeline(ob1, notifiers, config, creds, cls=DiesBeforeCall)
    with pytest.raises(SystemExit):
        cycle(ob1, sender, state, config, T0)
    crash(ob1, w1)
    # Act
    with Warehouse.open(wh_path) as w2:
        ob2 = LocalOutbox(w2)
        sender2, state2 = pipeline(ob2, notifiers, config, creds)
        try:
            reports = [cycle(ob2, sender2, state2, config, T0 + timedelta(seconds=s))
                       for s in (5, config.retry.in_doubt_after_s + 1, 60)]
            ob2.flush()
        finally:
            ob2.close()
    # Assert: not lost, not doubled
    assert reports[0][2].sent == [] and len(reports[0][2].in_flight) == 2
    assert len(reports[1][2].sent) == 2 and reports[2][2].sent == []
    assert sorted(r.form["To"][0] for r in twilio.created("Messages")) == ["+15555550101", "+15555550104"]


def test_an_entry_left_after_its_commit_is_not_landed_twice(wh_path, notifiers, config, creds, twilio, tmp_path):
    # Arrange: entries written, landed by a restart, then put back (a crash between COMMIT and delete).
    from risklib.warehouse import Warehouse

    w1 = Warehouse.open(wh_path)
    ob1 = NoLander(w1)
    sender, state = pipeline(ob1, notifiers, config, creds)
    cycle(ob1, sender, state, config, T0)
    saved = tmp_path / "saved"
    shutil.copytree(ob1.directory, saved)
    journal = ob1.directory
    crash(ob1, w1)
    with Warehouse.open(wh_path) as w2:
        LocalOutbox(w2).close()
        first = counts(w2)
    for entry in saved.glob("*.esc"):
        shutil.copy(entry, journal / entry.name)
    # Act
    with Warehouse.open(wh_path) as w3:
        LocalOutbox(w3).close()
        second = counts(w3)
    # Assert
    assert first == {"incidents": 1, "notifications": 3, "notification_events": 4}
    assert second == first
    assert list(journal.glob("*.esc")) == []


@pytest.mark.parametrize("acknowledged", [True, False])
def test_an_acknowledgement_from_another_process_stops_the_ladder(wh_path, notifiers, config, creds, twilio, acknowledged):
    # Arrange: the pipeline pages tier 1; the API (its own warehouse connection) records an ack.
    from risklib.adapters.warehouse import ChangeWatch
    from risklib.warehouse import Warehouse

    wait = config.levels[2].ack_wait_s
    with Warehouse.open(wh_path) as wh, Warehouse.open(wh_path) as api:
        watch = ChangeWatch.for_warehouse(wh)
        outbox = LocalOutbox(wh)
        sender, state = pipeline(outbox, notifiers, config, creds)
        try:
            watch.refresh()
            outbox.refresh(watch)
            cycle(outbox, sender, state, config, T0)
            outbox.flush()
            if acknowledged:
                record_ack(api, ["A1:drawdown:e1"], at=T0 + timedelta(seconds=10), channel="api", operator="op")
            # Act: cycles after the ack wait, each first looking at what other processes wrote
            for s in (wait + 1, wait + 2):
                watch.refresh()
                outbox.refresh(watch)
                cycle(outbox, sender, state, config, T0 + timedelta(seconds=s))
        finally:
            outbox.close()
    # Assert: tier 1 got the page; tier 2 is paged only without the acknowledgement
    to = [r.form["To"][0] for r in twilio.created("Messages")]
    assert sorted(to[:2]) == ["+15555550101", "+15555550104"]
    assert (len(to) == 2) is acknowledged


def test_one_owner_at_a_time_and_drain_refuses_beside_a_running_pipeline(wh, wh_path):
    # Arrange
    import subprocess
    import sys

    from risklib.adapters.notifiers import OutboxInUse

    owner = LocalOutbox(wh)
    try:
        # Act: a second outbox in this process, and `riskctl alerts drain` in another one
        with pytest.raises(OutboxInUse) as second:
            LocalOutbox(wh)
        drain = subprocess.run(
            [sys.executable, "-c", "from risklib.cli import main; main()", "alerts", "drain", "--warehouse", str(wh_path)],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        owner.close()
    reopened = LocalOutbox(wh)
    reopened.close()
    # Assert
    assert str(owner.directory) in str(second.value) and "owned by another process" in str(second.value)
    assert drain.returncode == 2 and "owned by another process" in drain.stderr
    assert reopened.directory == owner.directory


def test_outcomes_written_from_another_thread_survive_compactions_of_the_mirror(wh, notifiers, config, creds, twilio):
    # Arrange: an open incident with its messages sent; the dispatcher's thread will add their events
    import threading

    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        cycle(outbox, sender, state, config, T0)
        nid = outbox.query("SELECT notification_id FROM notifications WHERE recipient <> 'dashboard' LIMIT 1")[
            "notification_id"][0]
        before = outbox.query("SELECT count(*) AS n FROM notification_events")["n"][0]
        writes = 150

        def write_outcomes():
            for i in range(writes):
                event = pl.DataFrame({"notification_id": [nid], "event": ["delivered"], "provider": ["twilio"],
                                      "attempt": [1], "at": [T0 + timedelta(milliseconds=i + 1)]})
                outbox.append("notification_events", event, actor="escalation", action="notification.deliver")

        writer = threading.Thread(target=write_outcomes)
        # Act: the cycle's thread compacts the mirror while the writes go on
        writer.start()
        compactions = 0
        while writer.is_alive() or compactions < 5:
            outbox.compact()
            compactions += 1
        writer.join()
        after = outbox.query("SELECT count(*) AS n FROM notification_events")["n"][0]
        outbox.flush()
        landed = wh.query("SELECT count(*) AS n FROM notification_events WHERE event = 'delivered'")["n"][0]
    finally:
        outbox.close()
    # Assert: every write is in the mirror and in the warehouse
    assert after == before + writes
    assert landed == writes


def test_a_compaction_that_fails_half_way_leaves_the_mirror_as_it_was(wh, notifiers, config, creds, twilio, monkeypatch):
    # Arrange: two open incidents with their messages; the compaction's second insert will fail
    from risklib.adapters.notifiers._local import LOCAL_TABLES

    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        cycle(outbox, sender, state, config, T0, rows=[("A1", 2), ("A2", 3)])
        before = {t: outbox.query(f'SELECT count(*) AS n FROM "{t}"')["n"][0] for t in LOCAL_TABLES}
        real, inserts = outbox._insert, []

        def fails_second(table, frame):
            inserts.append(table)
            if len(inserts) == 2:
                raise MemoryError("out of memory")
            real(table, frame)

        monkeypatch.setattr(outbox, "_insert", fails_second)
        # Act
        with pytest.raises(MemoryError):
            outbox.compact()
        monkeypatch.undo()
        after = {t: outbox.query(f'SELECT count(*) AS n FROM "{t}"')["n"][0] for t in LOCAL_TABLES}
    finally:
        outbox.close()
    # Assert
    assert len(inserts) == 2 and before["notifications"] > 0
    assert after == before


def test_a_write_whose_journal_entry_fails_leaves_the_mirror_as_it_was_and_the_next_write_works(
    wh, notifiers, config, creds, twilio, monkeypatch
):
    # Arrange: one incident already written; the next entry cannot be written to the disk
    from risklib.adapters.notifiers import _local
    from risklib.adapters.notifiers._local import LOCAL_TABLES

    outbox = LocalOutbox(wh)
    sender, state = pipeline(outbox, notifiers, config, creds)
    try:
        cycle(outbox, sender, state, config, T0, rows=[("A1", 2)])
        before = {t: outbox.query(f'SELECT count(*) AS n FROM "{t}"')["n"][0] for t in LOCAL_TABLES}
        versions = dict(outbox.versions)

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(_local, "write_entry", disk_full)
        # Act
        with pytest.raises(OSError, match="No space left"):
            cycle(outbox, sender, state, config, T0 + timedelta(seconds=30), rows=[("A1", 2), ("A2", 3)])
        after = {t: outbox.query(f'SELECT count(*) AS n FROM "{t}"')["n"][0] for t in LOCAL_TABLES}
        versions_after = dict(outbox.versions)
        monkeypatch.undo()
        cycle(outbox, sender, state, config, T0 + timedelta(seconds=60), rows=[("A1", 2), ("A2", 3)])
        recovered = {t: outbox.query(f'SELECT count(*) AS n FROM "{t}"')["n"][0] for t in LOCAL_TABLES}
    finally:
        outbox.close()
    # Assert: nothing of the failed write is in the mirror, and readers were not told of a change
    assert after == before and versions_after == versions
    assert recovered["incidents"] > before["incidents"]  # A2's incident, written once the disk took it
    assert counts(wh)["incidents"] == recovered["incidents"]  # and landed
