"""A writer process and reader processes at once: both make progress, readers never see half a cycle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from risklib.warehouse import Warehouse, connect

WORKER = Path(__file__).with_name("warehouse_worker.py")
N_CYCLES = 12


@pytest.mark.integration
def test_writer_and_readers_progress_together_without_torn_reads(wh_path, tmp_path):
    # Arrange
    done = tmp_path / "writer.done"
    readers = [
        subprocess.Popen([sys.executable, str(WORKER), "reader", str(wh_path), str(done), "120"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    # Act
    writer = subprocess.run(
        [sys.executable, str(WORKER), "writer", str(wh_path), str(N_CYCLES), str(done)],
        capture_output=True, text=True, timeout=300,
    )
    outs = [json.loads(r.communicate(timeout=300)[0].strip().splitlines()[-1]) for r in readers]
    # Assert
    assert writer.returncode == 0, writer.stderr
    w = json.loads(writer.stdout.strip().splitlines()[-1])
    assert w["cycles"] == N_CYCLES
    for r in outs:
        assert r["torn"] == 0, r
        assert r["queries"] >= 3, r  # the reader kept reading while the writer wrote
        assert r["distinct_cycle_counts"] >= 2, r  # and saw the writer's progress, cycle by cycle
    with Warehouse.open(wh_path, read_only=True) as ro:
        assert ro.query("SELECT count(*) AS n FROM cycle_runs")["n"][0] == N_CYCLES
        assert ro.verify().ok


def test_connect_gives_a_read_only_analyst_connection(wh_path):
    # Arrange
    con = connect(wh_path)
    # Act
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'wh'").fetchall()}
    # Assert
    assert "audit_log" in tables
    with pytest.raises(Exception, match=r"read-only"):
        con.execute("DELETE FROM audit_log")
    con.close()


def test_reader_sees_a_new_cycle_without_reopening(wh, wh_path):
    # Arrange
    from warehouse_builders import T0, cycle

    reader = Warehouse.open(wh_path, read_only=True)
    before = reader.last_heartbeat()
    # Act
    wh.write_cycle(cycle("c1", T0))
    # Assert
    assert (before, reader.last_heartbeat()) == (None, T0)
    reader.close()


def _journal_mode(catalog: Path) -> str:
    import sqlite3

    probe = sqlite3.connect(catalog)
    try:
        return probe.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        probe.close()


def test_new_catalog_is_in_wal_mode(tmp_path):
    # Arrange: a rollback-journal catalog would make the writer's COMMIT wait for readers
    Warehouse.open(tmp_path / "fresh").close()
    # Act
    mode = _journal_mode(tmp_path / "fresh" / "catalog.sqlite")
    # Assert
    assert mode == "wal"


def test_writer_keeps_the_catalog_wal_between_commits(wh, wh_path):
    # Arrange
    from warehouse_builders import T0, cycle

    wal = wh_path / "catalog.sqlite-wal"
    # Act: each transaction's own SQLite connection closes at COMMIT
    wh.write_cycle(cycle("c1", T0))
    wh.write_cycle(cycle("c2", T0))
    # Assert: not checkpointed and deleted after every commit
    assert wal.exists()
    assert wh.query("SELECT count(*) AS n FROM cycle_runs")["n"][0] == 2


def test_closing_the_writer_releases_the_catalog(wh_path):
    # Arrange
    writer = Warehouse.open(wh_path)
    pin = writer._pin
    assert pin is not None and pin.active
    # Act
    writer.close()
    # Assert
    assert not pin.active


def test_reader_does_not_pin_the_catalog(wh_path):
    reader = Warehouse.open(wh_path, read_only=True)
    assert reader._pin is None
    reader.close()


TABLES_SQL = "SELECT table_name FROM {catalog}.ducklake_table WHERE end_snapshot IS NULL ORDER BY table_name"


def test_a_writers_catalog_reads_go_through_its_pin_and_match_the_connections(wh):
    # Arrange
    pin = wh._pin
    assert pin is not None and pin.active
    via_connection = wh.con.execute(TABLES_SQL.format(catalog="__ducklake_metadata_wh")).fetchall()
    # Act
    via_pin = pin.query(TABLES_SQL.format(catalog="main"))
    via_warehouse = wh.read_catalog(TABLES_SQL)
    # Assert
    assert ("cycle_runs",) in via_connection
    assert via_pin == via_connection
    assert via_warehouse == via_connection


def test_a_readers_catalog_reads_use_its_connection(wh, wh_path):
    reader = Warehouse.open(wh_path, read_only=True)
    try:
        assert reader.read_catalog(TABLES_SQL) == wh.read_catalog(TABLES_SQL)
    finally:
        reader.close()


def test_the_pin_reports_a_failed_read_and_refuses_writes_then_goes_on(wh):
    from risklib.errors import WarehouseError

    pin = wh._pin
    with pytest.raises(WarehouseError, match="no such table: not_a_table"):
        pin.query("SELECT * FROM not_a_table")
    with pytest.raises(WarehouseError, match="readonly"):
        pin.query("DELETE FROM ducklake_snapshot")
    with pytest.raises(WarehouseError, match="not JSON serializable"):
        pin.query("SELECT x'00'")
    assert pin.query("SELECT count(*) FROM ducklake_snapshot WHERE snapshot_id >= ?", [0])[0][0] > 0


def test_an_answer_that_came_too_late_is_not_taken_for_the_next_one(wh, monkeypatch):
    from risklib.errors import WarehouseError

    # Arrange: the first query gives up at once; its answer arrives afterwards
    pin = wh._pin
    monkeypatch.setattr(pin, "answer_timeout_s", 0.0)
    with pytest.raises(WarehouseError, match="no answer within"):
        pin.query("SELECT 'late'")
    monkeypatch.setattr(pin, "answer_timeout_s", 5.0)
    # Act
    rows = pin.query("SELECT 'on time', ?", [7])
    # Assert
    assert rows == [("on time", 7)]
    assert pin.active
