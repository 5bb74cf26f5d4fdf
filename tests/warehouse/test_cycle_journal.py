"""CycleJournal: cycles become durable behind the cycle, land in the warehouse in order, and survive crashes."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import replace
from datetime import timedelta

import polars as pl
import pytest

from risklib.adapters.warehouse import _connect
from risklib.adapters.warehouse._journal import COMPRESS_FROM_BYTES, read_entry, write_entry
from risklib.errors import WarehouseError
from risklib.warehouse import CycleJournal, Warehouse
from warehouse_builders import T0, account_metrics, alert_rows, cycle, position_metrics, risk_state_rows


def _entries(journal: CycleJournal) -> list[str]:
    return sorted(p.name for p in journal.directory.glob("[0-9]*.cycle"))


def _hold_writes(journal: CycleJournal) -> threading.Event:
    """Keep the journal's writing thread busy (as a slow disk would) until the event is set."""
    release = threading.Event()
    journal._syncer.submit(release.wait)
    return release


def _cycle_ids(wh: Warehouse) -> list[str]:
    return wh.query("SELECT cycle_id FROM cycle_runs WHERE status = 'completed' ORDER BY cycle_id")["cycle_id"].to_list()


def test_submitted_cycles_land_whole_and_in_order_and_leave_no_entry(wh):
    journal = CycleJournal(wh)
    for i in range(3):
        at = T0 + timedelta(minutes=i)
        journal.submit(cycle(f"c{i}", at, realtime_risk_metrics=account_metrics(at), position_risk_metrics=position_metrics(at)))
    assert journal.flush(timeout_s=60)
    assert _cycle_ids(wh) == ["c0", "c1", "c2"]
    counts = wh.query("SELECT cycle_id, count(*) AS n FROM position_risk_metrics GROUP BY cycle_id ORDER BY cycle_id")
    assert counts["n"].to_list() == [6, 6, 6]
    assert _entries(journal) == []
    assert wh.verify().ok
    # the cycle's audit entries landed too, in submission order
    subjects = wh.query("SELECT subject FROM audit_log WHERE action = 'cycle.record' ORDER BY seq")["subject"].to_list()
    assert subjects == ["c0", "c1", "c2"]
    journal.close()


def test_a_cycle_that_breaks_the_schema_is_refused_in_the_cycle_and_recorded_failed(wh):
    journal = CycleJournal(wh)
    bad = account_metrics(T0).with_columns(pl.lit("lots").alias("equity_usd"))
    with pytest.raises(WarehouseError, match="equity"):
        journal.submit(cycle("bad", T0, realtime_risk_metrics=bad))
    journal.flush(timeout_s=60)
    runs = wh.query("SELECT status, error FROM cycle_runs WHERE cycle_id = 'bad'")
    assert runs["status"].to_list() == ["failed"] and "equity" in runs["error"][0]
    assert wh.query("SELECT count(*) AS n FROM realtime_risk_metrics")["n"][0] == 0
    assert _entries(journal) == []
    journal.close()


def test_entries_left_by_a_crash_are_landed_once_when_the_journal_opens_again(wh, wh_path):
    folder = wh_path / "journal"
    folder.mkdir(exist_ok=True)
    # c1 was committed before the crash but its entry not yet removed; c2 never landed.
    first = cycle("c1", T0, alerts=alert_rows(T0))
    wh.write_cycle(first)
    write_entry(folder, 1, first)
    write_entry(folder, 2, cycle("c2", T0 + timedelta(minutes=1), alerts=alert_rows(T0, incident_key="A2:var:1")))
    (folder / ".tmp-000000000003-c3.cycle").write_bytes(b"{")  # a write cut short: never renamed, so never a cycle
    # Act: opening the journal lands what it finds before returning
    journal = CycleJournal(wh)
    # Assert
    assert _cycle_ids(wh) == ["c1", "c2"]
    assert wh.query("SELECT count(*) AS n FROM alerts")["n"][0] == 2
    assert _entries(journal) == [] and not (folder / ".tmp-000000000003-c3.cycle").exists()
    journal.close()


def test_an_entry_reads_back_as_the_cycle_that_was_written(tmp_path):
    records = cycle("c9", T0, realtime_risk_metrics=account_metrics(T0))
    records.audit[0]["at"] = T0
    records.audit[0]["detail"] = {"when": T0, "ratio": 0.1, "keys": ["a", "b"]}
    back = read_entry(write_entry(tmp_path, 7, records, fsync=False))
    assert back.cycle_id == "c9" and back.started_at == records.started_at and back.finished_at == records.finished_at
    assert back.tables["realtime_risk_metrics"].equals(records.tables["realtime_risk_metrics"])
    assert back.audit[0]["at"] == T0
    assert back.audit[0]["detail"] == {"when": str(T0), "ratio": 0.1, "keys": ["a", "b"]}  # as the chain hashes it


def test_a_large_table_is_written_compressed_and_reads_back_the_same(tmp_path):
    # Arrange: a book's position rows well past the size from which entries are compressed
    positions = position_metrics(T0, n=20_000)
    small = account_metrics(T0)
    assert positions.estimated_size() > COMPRESS_FROM_BYTES > small.estimated_size()
    records = cycle("c1", T0, position_risk_metrics=positions, realtime_risk_metrics=small)
    # Act
    path = write_entry(tmp_path, 1, records, fsync=False)
    back = read_entry(path)
    # Assert
    assert back.tables["position_risk_metrics"].equals(positions)
    assert back.tables["realtime_risk_metrics"].equals(small)
    assert path.stat().st_size < positions.estimated_size() / 4  # the flush waits on these bytes


def test_an_entry_read_back_from_disk_is_checked_again_before_it_lands(wh, wh_path):
    # Arrange: an entry on disk with a risk score out of range (written by hand: submit would
    # refuse it; the database alone would take it)
    folder = wh_path / "journal"
    folder.mkdir(exist_ok=True)
    bad = account_metrics(T0).with_columns(pl.lit(250.0).alias("risk_score"))
    path = write_entry(folder, 1, cycle("c1", T0, realtime_risk_metrics=bad))
    assert read_entry(path).checked == frozenset()
    # Act: opening the journal tries to land it
    journal = CycleJournal(wh)
    # Assert: refused, kept, and the next cycle is told
    assert wh.query("SELECT count(*) AS n FROM realtime_risk_metrics")["n"][0] == 0
    assert (folder / "failed" / path.name).exists()
    with pytest.raises(WarehouseError, match="risk_score"):
        journal.submit(cycle("c2", T0 + timedelta(minutes=1)))
    journal.close()


def test_a_cycle_that_cannot_be_landed_is_kept_and_the_next_submit_fails(wh_path, clock):
    from risklib.adapters.warehouse import load_config

    cfg = load_config().model_copy(update={"writer_lock_timeout_s": 0.2})
    wh = Warehouse.open(wh_path, config=cfg, clock=clock)
    journal = CycleJournal(wh, retries=2)
    try:
        # Another writer holds the lock for longer than the lander will wait.
        with _connect.writer_lock(wh.layout.lock_file, 5):
            journal.submit(cycle("stuck", T0, alerts=alert_rows(T0)))
            assert journal.flush(timeout_s=60)
        assert (journal.directory / "failed").is_dir()
        kept = [p.name for p in (journal.directory / "failed").iterdir()]
        assert len(kept) == 1 and kept[0].endswith("-stuck.cycle")
        with pytest.raises(WarehouseError, match="could not be landed"):
            journal.submit(cycle("next", T0, alerts=alert_rows(T0)))
        assert "stuck" not in _cycle_ids(wh)
    finally:
        journal.close()
        wh.close()


def test_a_process_that_exits_without_closing_still_lands_what_it_recorded(wh_path):
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "from risklib.warehouse import Warehouse, CycleJournal\n"
        "from warehouse_builders import T0, alert_rows, cycle\n"
        f"j = CycleJournal(Warehouse.open({str(wh_path)!r}, migrate=False))\n"
        "for i in range(3):\n"
        "    j.submit(cycle(f'x{i}', T0, alerts=alert_rows(T0)))\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reader = Warehouse.open(wh_path, read_only=True)
    try:
        assert _cycle_ids(reader) == ["x0", "x1", "x2"]
    finally:
        reader.close()
    assert not list((wh_path / "journal").glob("[0-9]*.cycle"))


def _snapshots(wh: Warehouse) -> int:
    return int(wh.query(f"SELECT count(*) AS n FROM ducklake_snapshots('{_connect.CATALOG}')")["n"][0])


def _three_cycles(start: int = 0) -> list:
    out = []
    for i in range(start, start + 3):
        at = T0 + timedelta(minutes=i)
        out.append(cycle(f"c{i}", at, realtime_risk_metrics=account_metrics(at), position_risk_metrics=position_metrics(at),
                         alerts=alert_rows(at)))
    return out


def test_write_cycles_lands_each_cycle_whole_in_one_transaction(wh):
    # Arrange
    before = _snapshots(wh)
    # Act
    wh.write_cycles(_three_cycles())
    # Assert: one commit; every cycle's rows, run and audit entries, in order
    assert _snapshots(wh) == before + 1
    assert _cycle_ids(wh) == ["c0", "c1", "c2"]
    counts = wh.query("SELECT cycle_id, count(*) AS n FROM position_risk_metrics GROUP BY cycle_id ORDER BY cycle_id")
    assert counts["n"].to_list() == [6, 6, 6]
    subjects = wh.query("SELECT subject FROM audit_log WHERE action = 'cycle.record' ORDER BY seq")["subject"].to_list()
    assert subjects == ["c0", "c1", "c2"]
    assert wh.verify().ok


def _handed_over(records, wh):
    """``records`` as the journal hands them to the lander: checked, risk-state bookkeeping kept as numbers."""
    tables = {t: wh.prepare(t, f, cycle_id=records.cycle_id, defer_state_json=True) for t, f in records.tables.items()}
    return replace(records, tables=tables, checked=frozenset(tables) - {"risk_state"})


def _landed_rows(wh: Warehouse) -> dict[str, list[tuple]]:
    out = {}
    for table in ("realtime_risk_metrics", "position_risk_metrics", "alerts", "risk_state", "cycle_runs"):
        out[table] = sorted(wh.query(f"SELECT * FROM {table}").rows(), key=repr)
    return out


def test_cycles_handed_over_by_the_journal_land_together_exactly_as_each_alone_and_checked_again(
        wh, template_warehouse, tmp_path, clock):
    # Arrange: three cycles as the journal hands them over: checked already, so landing them
    # together only concatenates. Landed one by one they are checked again (as an entry read
    # back from disk is). Their risk states share schemas (the bookkeeping encoded when they
    # land); the middle cycle's alerts come with a narrower level type; the middle run row
    # carries an error text.
    batch = []
    for i, records in enumerate(_three_cycles()):
        tables = records.tables | {"risk_state": risk_state_rows(records.finished_at, lvl_drawdown=i,
                                                                 since_drawdown=float("nan") if i == 1 else 60.0 * i)}
        if i == 1:
            tables["alerts"] = tables["alerts"].with_columns(pl.col("level").cast(pl.Int8))
        batch.append(_handed_over(replace(records, tables=tables, error="late feed" if i == 1 else None), wh))
    shutil.copytree(template_warehouse, tmp_path / "alone")
    alone = Warehouse.open(tmp_path / "alone", clock=clock)
    try:
        # Act
        wh.write_cycles(batch)
        for records in batch:
            alone.write_cycle(replace(records, checked=frozenset()))
        # Assert: the same rows, cycle ids and encoded bookkeeping either way
        assert _landed_rows(wh) == _landed_rows(alone)
        states = wh.query("SELECT cycle_id, state_json FROM risk_state WHERE account_id = 'A1' ORDER BY cycle_id")
        assert [json.loads(s) for s in states["state_json"]] == [
            {"lvl_drawdown": 0, "since_drawdown": 0.0}, {"lvl_drawdown": 1, "since_drawdown": None},
            {"lvl_drawdown": 2, "since_drawdown": 120.0}]
        ids = wh.query("SELECT cycle_id, count(*) AS n FROM position_risk_metrics GROUP BY ALL ORDER BY cycle_id")
        assert ids.rows() == [("c0", 6), ("c1", 6), ("c2", 6)]
        assert wh.query("SELECT error FROM cycle_runs ORDER BY cycle_id")["error"].to_list() == [None, "late feed", None]
    finally:
        alone.close()


def test_a_refused_batch_leaves_nothing_and_records_no_failure(wh):
    # Arrange: the last cycle of the batch breaks the schema
    batch = _three_cycles()
    bad = batch[-1]
    batch[-1] = cycle(bad.cycle_id, bad.finished_at, alerts=alert_rows(bad.finished_at, level=9))
    # Act
    with pytest.raises(WarehouseError, match=r"alerts.level=9"):
        wh.write_cycles(batch)
    # Assert: the caller lands them one by one, which records the refusal
    assert wh.query("SELECT count(*) AS n FROM cycle_runs")["n"][0] == 0
    assert wh.query("SELECT count(*) AS n FROM position_risk_metrics")["n"][0] == 0


def test_a_lander_that_fell_behind_commits_the_waiting_cycles_together(wh):
    # Arrange: the lander cannot take the writer lock while the cycles are submitted
    journal = CycleJournal(wh)
    before = _snapshots(wh)
    with _connect.writer_lock(wh.layout.lock_file, 30):
        for records in _three_cycles():
            journal.submit(records)
    # Act
    assert journal.flush(timeout_s=60)
    # Assert: fewer commits than cycles, every cycle whole and in order, no entry left
    assert _snapshots(wh) < before + 3
    assert _cycle_ids(wh) == ["c0", "c1", "c2"]
    assert journal.landed == 3 and len(journal.lag_ms) == 3
    assert _entries(journal) == []
    assert wh.verify().ok
    journal.close()


def test_when_landing_together_fails_each_cycle_lands_alone(wh, monkeypatch):
    # Arrange: the batched commit fails once (a database error)
    journal = CycleJournal(wh)

    def refuse(batch):
        raise WarehouseError("database is busy")

    monkeypatch.setattr(journal._lander, "write_cycles", refuse)
    with _connect.writer_lock(wh.layout.lock_file, 30):
        for records in _three_cycles():
            journal.submit(records)
    # Act
    assert journal.flush(timeout_s=60)
    # Assert
    assert _cycle_ids(wh) == ["c0", "c1", "c2"]
    assert _entries(journal) == []
    assert wh.verify().ok
    journal.close()


def test_submit_returns_before_the_entry_is_durable_and_its_future_says_when(wh):
    # Arrange: the journal's writing thread is busy (as with a slow disk)
    journal = CycleJournal(wh)
    release = _hold_writes(journal)
    # Act
    durable = journal.submit(cycle("c1", T0, realtime_risk_metrics=account_metrics(T0)))
    # Assert: handed over, not yet on disk nor landed; counted in the backlog
    assert not durable.done() and _entries(journal) == [] and journal.backlog == 1
    release.set()
    durable.result(timeout=60)
    assert journal.flush(timeout_s=60) and _cycle_ids(wh) == ["c1"]
    assert len(journal.lag_ms) == 1 and len(journal.durable_ms) == 1 and journal.backlog == 0
    journal.close()


def test_an_entry_that_cannot_be_written_fails_its_future_and_is_never_landed(wh):
    # Arrange: the journal folder disappears while the entry waits to be written
    journal = CycleJournal(wh)
    release = _hold_writes(journal)
    lost = journal.submit(cycle("c1", T0, realtime_risk_metrics=account_metrics(T0)))
    shutil.rmtree(journal.directory)
    # Act
    release.set()
    # Assert: the future carries the error; nothing is queued, nothing lands
    with pytest.raises(OSError):
        lost.result(timeout=60)
    assert journal.flush(timeout_s=60) and journal.backlog == 0 and _cycle_ids(wh) == []
    # the next cycle is written once the folder is back
    journal.directory.mkdir()
    journal.submit(cycle("c2", T0 + timedelta(minutes=1), realtime_risk_metrics=account_metrics(T0))).result(timeout=60)
    assert journal.flush(timeout_s=60) and _cycle_ids(wh) == ["c2"]
    journal.close()


def _wait_landed(journal: CycleJournal, n: int, timeout_s: float = 30.0) -> bool:
    """Poll (without flushing) until ``n`` entries have landed."""
    deadline = time.monotonic() + timeout_s
    while journal.landed < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return journal.landed >= n


def _routine(cycle_id: str, minute: int):
    at = T0 + timedelta(minutes=minute)
    return cycle(cycle_id, at, realtime_risk_metrics=account_metrics(at), position_risk_metrics=position_metrics(at))


def _acted(cycle_id: str, minute: int):
    """A cycle that ordered an action (a HALT_ALL of account A1)."""
    at = T0 + timedelta(minutes=minute)
    return cycle(cycle_id, at, realtime_risk_metrics=account_metrics(at), emergency_actions=pl.DataFrame(
        {"timestamp": [at], "account_id": ["A1"], "idempotency_key": ["k1"], "incident_key": ["A1:drawdown:1"],
         "action_taken": ["HALT_ALL"], "fraction": [1.0], "manual_override": [False], "reason": ["drawdown"]}))


def test_a_paced_lander_holds_routine_cycles_until_the_interval_and_a_flush_lands_them_together(wh):
    # Arrange: at most one landing per minute; the first cycle lands at once
    journal = CycleJournal(wh, min_interval_s=60)
    journal.submit(_routine("c0", 0)).result(timeout=60)
    assert _wait_landed(journal, 1)
    before = _snapshots(wh)
    # Act: two routine cycles inside the interval
    for i in (1, 2):
        journal.submit(_routine(f"c{i}", i)).result(timeout=60)
    time.sleep(0.5)
    # Assert: they wait (durable on disk) ...
    assert journal.landed == 1 and _cycle_ids(wh) == ["c0"] and len(_entries(journal)) == 2
    # ... and a flush lands them without waiting out the minute, in one commit
    assert journal.flush(timeout_s=20)
    assert _cycle_ids(wh) == ["c0", "c1", "c2"] and _snapshots(wh) == before + 1
    assert _entries(journal) == [] and wh.verify().ok
    journal.close()


def test_a_cycle_that_acted_lands_at_once_inside_the_interval(wh):
    # Arrange
    journal = CycleJournal(wh, min_interval_s=60)
    journal.submit(_routine("c0", 0)).result(timeout=60)
    assert _wait_landed(journal, 1)
    # Act
    journal.submit(_acted("c1", 1))
    # Assert: landed without a flush, well before the interval is over
    assert _wait_landed(journal, 2)
    assert _cycle_ids(wh) == ["c0", "c1"]
    assert wh.query("SELECT action_taken FROM emergency_actions")["action_taken"].to_list() == ["HALT_ALL"]
    journal.close()


def test_a_paced_lander_lands_at_once_when_half_the_backlog_waits(wh):
    # Arrange: a backlog of 4, so two waiting cycles land without waiting out the interval
    journal = CycleJournal(wh, min_interval_s=60, max_backlog=4)
    journal.submit(_routine("c0", 0)).result(timeout=60)
    assert _wait_landed(journal, 1)
    # Act
    journal.submit(_routine("c1", 1)).result(timeout=60)
    journal.submit(_routine("c2", 2))
    # Assert
    assert _wait_landed(journal, 3)
    assert _cycle_ids(wh) == ["c0", "c1", "c2"] and _entries(journal) == []
    journal.close()


def test_an_unexpected_error_while_landing_keeps_the_entry_fails_the_next_cycle_and_the_lander_runs_on(wh, monkeypatch):
    # Arrange: the first landing fails outside the per-entry retries
    journal = CycleJournal(wh)
    real = journal._land_items
    calls: list[int] = []

    def fail_once(items):
        calls.append(len(items))
        if len(calls) == 1:
            raise RuntimeError("disk went away")
        real(items)

    monkeypatch.setattr(journal, "_land_items", fail_once)
    # Act
    journal.submit(_routine("c0", 0)).result(timeout=60)
    first_flush = journal.flush(timeout_s=30)
    with pytest.raises(WarehouseError) as refused:
        journal.submit(_routine("c1", 1))
    journal.submit(_routine("c2", 2)).result(timeout=60)
    # Assert: no flush waits forever; the next cycle is refused, naming the kept entry and the error
    # (so that cycle is recorded as failed and publishes no heartbeat); later cycles land
    assert first_flush and journal.flush(timeout_s=30)
    assert "c0.cycle" in str(refused.value) and "RuntimeError: disk went away" in str(refused.value)
    assert _cycle_ids(wh) == ["c2"]
    assert [name.split("-", 1)[1] for name in _entries(journal)] == ["c0.cycle"]
    journal.close()


def test_a_large_cycle_lands_at_once_inside_the_interval(wh):
    # Arrange: a cycle of 8 rows counts as large here (the shipped bound is 50,000)
    journal = CycleJournal(wh, min_interval_s=60)
    journal.land_rows = 8
    journal.submit(cycle("c0", T0, realtime_risk_metrics=account_metrics(T0))).result(timeout=60)
    assert _wait_landed(journal, 1)
    # Act: 2 account rows + 6 position rows
    journal.submit(_routine("c1", 1))
    # Assert: landed without a flush
    assert _wait_landed(journal, 2) and _cycle_ids(wh) == ["c0", "c1"]
    journal.close()


def test_a_routine_landing_waits_for_the_running_cycle_to_end_and_a_cycle_that_acted_does_not(wh):
    # Arrange: no interval between landings, but a cycle is running and landings may wait a minute for it
    from risklib.cycle_gaps import CycleGaps

    gaps = CycleGaps(max_hold_s=60.0)
    journal = CycleJournal(wh, gaps=gaps)
    with gaps.cycle():
        # Act: a routine cycle is durable, then waits for the gap ...
        journal.submit(_routine("c0", 0)).result(timeout=60)
        time.sleep(0.5)
        held = (journal.landed, _cycle_ids(wh))
        # ... while one that ordered actions lands at once, the routine one ahead of it
        journal.submit(_acted("c1", 1))
        acted_landed = _wait_landed(journal, 2)
        journal.submit(_routine("c2", 2)).result(timeout=60)
        time.sleep(0.5)
        held_again = _cycle_ids(wh)
    # Assert: the routine cycle after it lands as soon as the cycle ends, without a flush
    assert held == (0, [])
    assert acted_landed and held_again == ["c0", "c1"]
    assert _wait_landed(journal, 3) and _cycle_ids(wh) == ["c0", "c1", "c2"]
    journal.close()


def test_a_routine_landing_held_longer_than_the_limit_lands_during_the_cycle(wh):
    # Arrange: cycles back to back leave no gap; landings wait at most 0.2 s for one
    from risklib.cycle_gaps import CycleGaps

    gaps = CycleGaps(max_hold_s=0.2)
    journal = CycleJournal(wh, gaps=gaps)
    with gaps.cycle():
        # Act
        journal.submit(_routine("c0", 0)).result(timeout=60)
        # Assert: landed while the cycle still runs
        assert _wait_landed(journal, 1) and gaps.in_cycle
    journal.close()
