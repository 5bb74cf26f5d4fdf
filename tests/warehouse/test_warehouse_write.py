"""Cycle writes land together or not at all; bad input is refused naming table, column and value."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from risklib.adapters.warehouse import _warehouse
from risklib.errors import WarehouseError
from risklib.warehouse import CycleRecords

from warehouse_builders import T0, account_metrics, alert_rows, cycle, position_metrics, risk_state_rows

CYCLE_TABLES_WRITTEN = ("realtime_risk_metrics", "position_risk_metrics", "alerts", "risk_state")


def _full_cycle(cycle_id: str, now=T0) -> CycleRecords:
    return cycle(
        cycle_id,
        now,
        realtime_risk_metrics=account_metrics(now),
        position_risk_metrics=position_metrics(now),
        alerts=alert_rows(now),
        risk_state=risk_state_rows(now),
    )


def _rows_of(wh, cycle_id: str) -> dict[str, int]:
    return {
        t: wh.query(f"SELECT count(*) AS n FROM {t} WHERE cycle_id = ?", [cycle_id])["n"][0]
        for t in CYCLE_TABLES_WRITTEN
    }


def test_write_cycle_lands_every_table_with_cycle_id(wh):
    # Act
    wh.write_cycle(_full_cycle("c1"))
    # Assert
    assert _rows_of(wh, "c1") == {"realtime_risk_metrics": 2, "position_risk_metrics": 6, "alerts": 1, "risk_state": 2}
    run = wh.query("SELECT * FROM cycle_runs")
    assert run.select("cycle_id", "flow_run_id", "status", "n_accounts").row(0) == ("c1", "fr-1", "completed", 2)
    assert json.loads(run["stage_ms"][0]) == {"ingest": 1.5, "record": 3.0}


def test_producer_names_are_mapped_to_spec_columns(wh):
    # Act
    wh.write_cycle(_full_cycle("c1"))
    # Assert
    row = wh.query(
        "SELECT portfolio_drawdown, portfolio_var_99, volatility_regime, risk_score, \"timestamp\" "
        "FROM realtime_risk_metrics WHERE account_id = 'A1'"
    ).row(0)
    assert row == (0.01, 0.03, "NORMAL", 12, T0)
    pos = wh.query("SELECT currency_pair, strategy_name, position_size, unrealized_pnl FROM position_risk_metrics LIMIT 1")
    assert pos.row(0) == ("EUR/USD", "trend", 100_000.0, -12.5)


def test_money_keeps_exact_decimals(wh):
    # Arrange
    metrics = account_metrics(T0).with_columns(equity_usd=pl.lit(1_234_567.8912))
    # Act
    wh.write_cycle(cycle("c1", T0, realtime_risk_metrics=metrics))
    # Assert
    exact = wh.query("SELECT equity_usd FROM realtime_risk_metrics LIMIT 1", exact_decimals=True)
    assert str(exact["equity_usd"][0]) == "1234567.8912"


def test_cycle_audit_entries_are_chained(wh):
    # Act
    wh.write_cycle(_full_cycle("c1"))
    # Assert
    audit = wh.query("SELECT actor, action, subject, detail FROM audit_log WHERE subject IN ('book', 'c1') ORDER BY seq")
    assert audit.select("actor", "action", "subject").rows() == [("policy", "evaluate", "book"), ("pipeline", "cycle.record", "c1")]
    assert json.loads(audit["detail"][1])["rows"]["position_risk_metrics"] == 6
    assert wh.verify().ok


def test_risk_state_bookkeeping_columns_go_to_state_json(wh):
    # Arrange
    state = risk_state_rows(T0, hysteresis_count=3, last_breach="var")
    # Act
    wh.write_cycle(cycle("c1", T0, risk_state=state))
    # Assert
    latest = wh.latest_risk_state()
    assert json.loads(latest["state_json"][0]) == {"hysteresis_count": 3, "last_breach": "var"}


def test_latest_risk_state_is_newest_row_per_account(wh):
    # Arrange
    later = T0 + timedelta(minutes=5)
    wh.write_cycle(cycle("c1", T0, risk_state=risk_state_rows(T0)))
    wh.write_cycle(cycle("c2", later, risk_state=risk_state_rows(later, accounts=("A1",)).with_columns(trading_mode=pl.lit("HALTED"))))
    # Act
    latest = wh.latest_risk_state()
    # Assert
    assert latest.select("account_id", "trading_mode", "cycle_id").rows() == [("A1", "HALTED", "c2"), ("A2", "ACTIVE", "c1")]
    assert latest.schema["ts"] == pl.Datetime("us", "UTC")
    assert latest.schema["peak_equity_usd"] == pl.Float64


def test_last_heartbeat_ignores_failed_cycles(wh):
    # Arrange
    wh.write_cycle(cycle("c1", T0))
    failed = cycle("c2", T0 + timedelta(minutes=5))
    failed.status = "failed"
    wh.write_cycle(failed)
    # Act / Assert
    assert wh.last_heartbeat() == T0


def test_last_heartbeat_is_none_before_any_cycle(wh):
    assert wh.last_heartbeat() is None


@pytest.mark.parametrize(
    ("table", "frame", "message"),
    [
        ("alerts", alert_rows(T0, level=9), r"alerts.level=9 \(row 0\): must be in \[1, 5\]"),
        (
            "realtime_risk_metrics",
            account_metrics(T0).with_columns(drawdown=pl.lit("high")),
            r"realtime_risk_metrics.portfolio_drawdown='high' \(row 0\): expected|cannot be stored as DOUBLE",
        ),
        (
            "realtime_risk_metrics",
            account_metrics(T0).with_columns(equity_usd=pl.Series([1e6, float("inf")])),
            r"realtime_risk_metrics.equity_usd=inf \(row 1\): not a finite number within DECIMAL\(18,4\)",
        ),
        (
            "position_risk_metrics",
            position_metrics(T0).with_columns(instrument=pl.Series([None, "EUR/USD", None, None, None, None], dtype=pl.String)),
            r"position_risk_metrics.currency_pair=None \(row 0\): must not be null",
        ),
        (
            "alerts",
            alert_rows(T0).with_columns(colour=pl.lit("red")),
            r"alerts.colour: no such column in table alerts",
        ),
        (
            "alerts",
            alert_rows(T0).with_columns(pl.col("ts").dt.replace_time_zone(None)),
            r"alerts.ts=.* \(row 0\): timestamp must be timezone-aware \(UTC\)",
        ),
        (
            "risk_state",
            risk_state_rows(T0).with_columns(trading_mode=pl.lit("YOLO")),
            r"risk_state.trading_mode='YOLO' \(row 0\): must be one of \['ACTIVE', 'REDUCE_ONLY', 'HALTED', 'FLATTEN'\]",
        ),
        ("alerts", alert_rows(T0).drop("rule"), r"alerts.rule: missing column \(NOT NULL\)"),
    ],
)
def test_schema_violation_is_refused_and_cycle_recorded_failed(wh, table, frame, message):
    # Arrange: a good table alongside the bad one, to prove nothing half-written remains
    good = "risk_state" if table != "risk_state" else "position_risk_metrics"
    good_frame = risk_state_rows(T0) if good == "risk_state" else position_metrics(T0)
    records = cycle("bad", T0, **{good: good_frame, table: frame})
    # Act
    with pytest.raises(WarehouseError, match=message):
        wh.write_cycle(records)
    # Assert
    assert all(n == 0 for n in _rows_of(wh, "bad").values())
    run = wh.query("SELECT status, error FROM cycle_runs WHERE cycle_id = 'bad'")
    assert run["status"].to_list() == ["failed"]
    assert table in run["error"][0]
    refused = wh.query("SELECT detail FROM audit_log WHERE action = 'cycle.refused' AND subject = 'bad'")
    assert refused.height == 1
    assert wh.verify().ok


def test_database_error_mid_write_rolls_back_everything(wh, monkeypatch):
    # Arrange: the second insert of the cycle fails inside the transaction
    real_insert = _warehouse.Warehouse._insert
    calls = []

    def failing_insert(self, table, frame):
        calls.append(table)
        if len(calls) == 2:
            raise _warehouse.duckdb.IOException("disk full (injected)")
        return real_insert(self, table, frame)

    monkeypatch.setattr(_warehouse.Warehouse, "_insert", failing_insert)
    # Act
    with pytest.raises(WarehouseError, match=r"cycle_id='c1': disk full \(injected\)"):
        wh.write_cycle(_full_cycle("c1"))
    monkeypatch.setattr(_warehouse.Warehouse, "_insert", real_insert)
    # Assert
    assert all(n == 0 for n in _rows_of(wh, "c1").values())
    assert wh.query("SELECT status FROM cycle_runs WHERE cycle_id = 'c1'")["status"].to_list() == ["failed"]
    assert wh.verify().ok


def test_unknown_cycle_table_is_refused(wh):
    with pytest.raises(WarehouseError, match=r"table='audit_log': not a cycle table"):
        wh.write_cycle(cycle("c1", T0, audit_log=pl.DataFrame({"seq": [1]})))


def test_nan_metric_in_integer_column_is_stored_as_null(wh):
    # Arrange: an invalid account whose score could not be computed
    metrics = account_metrics(T0).with_columns(risk_score=pl.Series([float("nan"), 40.0]), valid=pl.Series([False, True]))
    # Act
    wh.write_cycle(cycle("c1", T0, realtime_risk_metrics=metrics))
    # Assert
    got = wh.query("SELECT account_id, risk_score, valid FROM realtime_risk_metrics ORDER BY account_id").rows()
    assert got == [("A1", None, False), ("A2", 40, True)]


def test_append_writes_rows_and_an_audit_entry_with_the_record(wh):
    # Arrange
    ack = pl.DataFrame(
        {"incident_key": ["A1:drawdown:1"], "reply_code": ["K7"], "channel": ["sms"], "recipient": ["+15550001"],
         "operator": ["alice"], "at": [T0], "source_ip": ["10.0.0.1"]}
    )
    # Act
    wh.append("acknowledgements", ack, actor="alice", action="ack", subject="A1:drawdown:1")
    # Assert
    assert wh.query("SELECT operator FROM acknowledgements")["operator"].to_list() == ["alice"]
    entry = wh.query("SELECT actor, action, subject, detail FROM audit_log WHERE action = 'ack'")
    assert entry.select("actor", "subject").row(0) == ("alice", "A1:drawdown:1")
    assert json.loads(entry["detail"][0])["records"][0]["reply_code"] == "K7"


def test_append_outside_allowlist_is_refused(wh):
    with pytest.raises(WarehouseError, match=r"table='audit_log': not appendable"):
        wh.append("audit_log", pl.DataFrame({"seq": [1]}), actor="mallory", action="rewrite")


def test_append_bad_override_names_column_and_value(wh):
    # Arrange
    override = pl.DataFrame(
        {"override_id": ["o1"], "account_id": ["A1"], "rule": ["drawdown"], "action": ["RESUME"], "new_value": [None],
         "justification": ["hedge in place"], "risk_assessment": ["low"], "duration_s": [1800.0],
         "recovery_plan": ["re-arm at expiry"], "operator": ["cro"], "authority_level": [7],
         "created_at": [T0], "expires_at": [T0 + timedelta(minutes=30)]},
        schema_overrides={"new_value": pl.String},
    )
    # Act / Assert
    with pytest.raises(WarehouseError, match=r"overrides.authority_level=7 \(row 0\): must be in \[1, 5\]"):
        wh.append("overrides", override, actor="cro", action="override.create")
    assert wh.query("SELECT count(*) AS n FROM overrides")["n"][0] == 0


def test_query_with_parameters_returns_utc_polars(wh):
    # Arrange
    wh.write_cycle(_full_cycle("c1"))
    # Act
    out = wh.query("SELECT account_id, ts FROM alerts WHERE level >= ?", [2])
    # Assert
    assert out.rows() == [("A1", T0)]
    assert out.schema["ts"] == pl.Datetime("us", "UTC")


def test_query_error_is_a_warehouse_error(wh):
    with pytest.raises(WarehouseError, match=r"query failed: .*no_such_table"):
        wh.query("SELECT * FROM no_such_table")


def test_latest_risk_state_since_leaves_out_older_accounts(wh):
    # Arrange
    later = T0 + timedelta(minutes=5)
    wh.write_cycle(cycle("c1", T0, risk_state=risk_state_rows(T0)))
    wh.write_cycle(cycle("c2", later, risk_state=risk_state_rows(later, accounts=("A1",))))
    # Act
    recent = wh.latest_risk_state(since=later)
    # Assert
    assert recent.select("account_id", "cycle_id").rows() == [("A1", "c2")]


def test_large_frame_is_written_whole(wh):
    # Arrange: big enough to be split into several Arrow batches
    frame = pl.concat([position_metrics(T0, n=6)] * 20_000)
    # Act
    wh.write_cycle(cycle("big", T0, position_risk_metrics=frame))
    # Assert
    assert wh.query("SELECT count(*) AS n FROM position_risk_metrics WHERE cycle_id = 'big'")["n"][0] == 120_000


def _data_files(wh, table: str) -> list[tuple[str, bool]]:
    return wh.con.execute(
        "SELECT f.path, f.path_is_relative FROM __ducklake_metadata_wh.ducklake_data_file f "
        "JOIN __ducklake_metadata_wh.ducklake_table t USING (table_id) "
        "WHERE t.table_name = ? AND f.end_snapshot IS NULL AND t.end_snapshot IS NULL",
        [table],
    ).fetchall()


def test_large_frame_becomes_one_relative_parquet_file_in_the_table_folder(wh, wh_path):
    # Arrange
    frame = pl.concat([position_metrics(T0, n=6)] * (_warehouse._FILE_ROWS // 6 + 1))
    # Act
    wh.write_cycle(cycle("big", T0, position_risk_metrics=frame))
    # Assert: registered relative to the table's folder (the warehouse folder stays movable)
    files = _data_files(wh, "position_risk_metrics")
    assert len(files) == 1 and bool(files[0][1])
    assert (wh_path / "files" / "main" / "position_risk_metrics" / files[0][0]).exists()
    assert wh.query("SELECT count(*) AS n FROM position_risk_metrics")["n"][0] == frame.height


def test_large_frame_stores_the_same_values_as_a_small_one(wh):
    # Arrange: values whose DOUBLE -> DECIMAL rounding differs between half-even and half-away
    awkward = [1.23465, -0.00005, 123456.78905, 2.675, 0.30000000000000004, -1.23455]
    small = position_metrics(T0, n=len(awkward)).with_columns(
        pl.Series("unrealized_pnl_usd", awkward), pl.Series("quantity", [v / 1000 for v in awkward])
    )
    big = pl.concat([small] * (_warehouse._FILE_ROWS // len(awkward) + 1))
    # Act
    wh.write_cycle(cycle("small", T0, position_risk_metrics=small))
    wh.write_cycle(cycle("big", T0, position_risk_metrics=big))
    # Assert
    sql = ("SELECT DISTINCT position_size, unrealized_pnl, price, notional_usd, \"timestamp\" "
           "FROM position_risk_metrics WHERE cycle_id = ? ORDER BY ALL")
    via_insert = wh.query(sql, ["small"], exact_decimals=True)
    via_file = wh.query(sql, ["big"], exact_decimals=True)
    assert via_file.equals(via_insert)
    assert via_file.height == len(awkward)


def test_rolled_back_large_frame_leaves_no_file(wh, wh_path, monkeypatch):
    # Arrange: the cycle fails after its position file was written and added
    real_insert = _warehouse.Warehouse._insert

    def failing_insert(self, table, frame):
        if table == "risk_state":
            raise _warehouse.duckdb.IOException("disk full (injected)")
        return real_insert(self, table, frame)

    monkeypatch.setattr(_warehouse.Warehouse, "_insert", failing_insert)
    frame = pl.concat([position_metrics(T0, n=6)] * (_warehouse._FILE_ROWS // 6 + 1))
    records = cycle("c1", T0, position_risk_metrics=frame, risk_state=risk_state_rows(T0))
    # Act
    with pytest.raises(WarehouseError, match="disk full"):
        wh.write_cycle(records)
    # Assert
    folder = wh_path / "files" / "main" / "position_risk_metrics"
    assert not list(folder.glob("*.parquet"))
    assert wh.query("SELECT count(*) AS n FROM position_risk_metrics")["n"][0] == 0


def test_caller_audit_entries_are_not_mutated(wh):
    # Arrange
    records = cycle("c1", T0)
    before = [dict(e) for e in records.audit]
    # Act
    wh.write_cycle(records)
    # Assert
    assert records.audit == before


def _big_positions(**columns) -> pl.DataFrame:
    frame = pl.concat([position_metrics(T0, n=6)] * (_warehouse._FILE_ROWS // 6 + 1))
    return frame.with_columns(**columns) if columns else frame


def test_large_frame_violation_is_refused_with_its_row_and_leaves_no_file(wh, wh_path):
    # Arrange: the large frame is checked on the encode thread; its last row is bad
    frame = _big_positions()
    bad_row = frame.height - 1
    frame = frame.with_columns(
        instrument=pl.when(pl.int_range(pl.len()) == bad_row).then(None).otherwise(pl.col("instrument"))
    )
    records = cycle("bad", T0, position_risk_metrics=frame, risk_state=risk_state_rows(T0))
    # Act
    with pytest.raises(WarehouseError, match=rf"position_risk_metrics.currency_pair=None \(row {bad_row}\): must not be null"):
        wh.write_cycle(records)
    # Assert
    assert not list((wh_path / "files" / "main" / "position_risk_metrics").glob("*.parquet"))
    assert wh.query("SELECT count(*) AS n FROM risk_state")["n"][0] == 0
    assert wh.query("SELECT status FROM cycle_runs WHERE cycle_id = 'bad'")["status"].to_list() == ["failed"]
    assert wh.verify().ok


@pytest.mark.parametrize("large_first", [True, False])
def test_refusal_names_the_first_bad_table_in_the_cycle(wh, large_first):
    # Arrange: a bad large frame (checked on the encode thread) and a bad small one
    big = _big_positions(quantity=pl.lit(float("inf")))
    alerts = alert_rows(T0, level=9)
    tables = {"position_risk_metrics": big, "alerts": alerts}
    if not large_first:
        tables = {"alerts": alerts, "position_risk_metrics": big}
    # Act
    with pytest.raises(WarehouseError) as refused:
        wh.write_cycle(cycle("bad", T0, **tables))
    # Assert
    first = next(iter(tables))
    assert str(refused.value).startswith(f"{first}.")


def test_large_frame_added_then_rolled_back_leaves_no_file(wh, wh_path, monkeypatch):
    # Arrange: the file was written and added to the transaction, then COMMIT is never reached
    def failing_commit(self):
        raise _warehouse.duckdb.IOException("catalog gone (injected)")

    monkeypatch.setattr(_warehouse.Warehouse, "_commit", failing_commit)
    # Act
    with pytest.raises(WarehouseError, match="catalog gone"):
        wh.write_cycle(cycle("c1", T0, position_risk_metrics=_big_positions()))
    monkeypatch.undo()
    # Assert
    assert not list((wh_path / "files" / "main" / "position_risk_metrics").glob("*.parquet"))
    assert wh.query("SELECT count(*) AS n FROM position_risk_metrics")["n"][0] == 0


def test_large_frame_keeps_its_own_cycle_ids(wh):
    # Arrange: a producer frame that carries cycle ids of its own (some missing)
    frame = _big_positions()
    ids = pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.format("own-{}", pl.int_range(pl.len()) % 2))
    frame = frame.with_columns(cycle_id=ids)
    # Act
    wh.write_cycle(cycle("c1", T0, position_risk_metrics=frame))
    # Assert: missing ids are this cycle's, the others as given
    got = wh.query("SELECT cycle_id, count(*) AS n FROM position_risk_metrics GROUP BY ALL ORDER BY ALL")
    expect = frame.select(pl.col("cycle_id").fill_null("c1")).group_by("cycle_id").len("n").sort("cycle_id")
    assert got.rows() == expect.cast({"n": pl.Int64}).rows()


def test_large_frame_cycle_id_is_stored_and_pruned_on(wh):
    # Arrange
    wh.write_cycle(cycle("c1", T0, position_risk_metrics=_big_positions()))
    wh.write_cycle(cycle("c2", T0, position_risk_metrics=_big_positions()))
    # Act
    counts = wh.query("SELECT cycle_id, count(*) AS n FROM position_risk_metrics WHERE cycle_id = 'c2' GROUP BY ALL")
    stats = wh.con.execute(
        "SELECT DISTINCT s.min_value, s.max_value FROM __ducklake_metadata_wh.ducklake_file_column_stats s "
        "JOIN __ducklake_metadata_wh.ducklake_column c ON c.column_id = s.column_id AND c.table_id = s.table_id "
        "JOIN __ducklake_metadata_wh.ducklake_table t ON t.table_id = s.table_id "
        "WHERE t.table_name = 'position_risk_metrics' AND c.column_name = 'cycle_id' ORDER BY ALL"
    ).fetchall()
    # Assert
    assert counts.rows() == [("c2", _big_positions().height)]
    assert stats == [("c1", "c1"), ("c2", "c2")]


def test_encode_started_before_a_failing_one_leaves_no_file(wh, wh_path, monkeypatch):
    # Arrange: two large frames; the second cannot start (its folder lookup fails)
    real_dir = _warehouse.Warehouse._table_dir

    def failing_dir(self, table):
        if table == "realtime_risk_metrics":
            raise WarehouseError("table='realtime_risk_metrics': not in the DuckLake catalog (injected)")
        return real_dir(self, table)

    monkeypatch.setattr(_warehouse.Warehouse, "_table_dir", failing_dir)
    accounts = pl.concat([account_metrics(T0)] * (_warehouse._FILE_ROWS // 2 + 1))
    records = cycle("c1", T0, position_risk_metrics=_big_positions(), realtime_risk_metrics=accounts)
    # Act
    with pytest.raises(WarehouseError, match="injected"):
        wh.write_cycle(records)
    for worker in threading.enumerate():  # a leaked encode would still be writing its file
        if worker.name.startswith("warehouse-encode-"):
            worker.join()
    # Assert
    assert not list((wh_path / "files" / "main" / "position_risk_metrics").glob("*.parquet"))
    assert wh.query("SELECT status FROM cycle_runs WHERE cycle_id = 'c1'")["status"].to_list() == ["failed"]


def test_risk_state_bookkeeping_can_be_kept_for_later_and_is_then_encoded(wh):
    # Arrange: a risk-state row with two bookkeeping columns the table does not have
    row = pl.DataFrame({
        "account_id": ["A1"], "ts": [datetime(2026, 1, 5, 12, tzinfo=timezone.utc)], "episode_id": [None],
        "alert_level": [1], "breaker_state": ["CLOSED"], "trading_mode": ["ACTIVE"], "risk_level": ["LOW"],
        "sizing_multiplier": [1.0], "max_leverage": [15.0], "next_cadence_s": [30.0], "peak_equity_usd": [1e6],
        "lvl_drawdown": [1], "since_drawdown": [float("nan")],
    }, schema_overrides={"episode_id": pl.String})
    # Act
    kept = wh.prepare("risk_state", row, cycle_id="c1", defer_state_json=True)
    landed = wh.prepare("risk_state", kept, cycle_id="c1")
    # Assert: kept as numbers after the table's columns, then encoded (NaN "not set" written as null)
    assert kept.columns[-2:] == ["lvl_drawdown", "since_drawdown"]
    assert "lvl_drawdown" not in landed.columns
    assert json.loads(landed["state_json"].item()) == {"lvl_drawdown": 1, "since_drawdown": None}


def test_risk_state_bookkeeping_that_is_not_a_scalar_is_refused_by_name(wh):
    row = pl.DataFrame({"account_id": ["A1"], "lvl_drawdown": [[1, 2]]})
    with pytest.raises(WarehouseError, match=r"risk_state\.lvl_drawdown"):
        wh.prepare("risk_state", row, cycle_id="c1", defer_state_json=True)


@pytest.mark.parametrize(
    ("table", "frame"),
    [
        ("realtime_risk_metrics", account_metrics(T0).with_columns(alert_level=pl.Series([0.0, float("nan")]))),
        ("position_risk_metrics", position_metrics(T0)),
        ("alerts", alert_rows(T0)),
        ("risk_state", risk_state_rows(T0)),
        ("alerts", alert_rows(T0).with_columns(pl.col("ts").dt.convert_time_zone("Europe/Zurich"))),
    ],
)
def test_prepare_at_once_gives_what_the_column_by_column_checks_give(wh, table, frame):
    # Arrange: the frame as prepare sees it after renames and the cycle id
    from risklib.adapters.warehouse import _validate

    columns = wh.columns(table)
    checks = _validate.CHECKS.get(table, {})
    staged = frame.rename({k: v for k, v in _validate.ALIASES.get(table, {}).items() if k in frame.columns})
    staged = staged.drop([c for c in staged.columns if c not in {col.name for col in columns}])
    if "cycle_id" in {col.name for col in columns}:
        staged = staged.with_columns(cycle_id=pl.lit("c1"))
    # Act
    fast = _validate._prepare_at_once([(table, staged.lazy(), columns, checks)])
    slow = _validate._prepare_by_column(table, staged, columns, checks)
    # Assert
    assert fast is not None
    assert fast[0].schema == slow.schema
    assert fast[0].equals(slow, null_equal=True)


def test_a_cycle_s_tables_prepared_together_are_what_each_prepared_alone_is(wh):
    # Arrange: four cycle tables, the risk state with bookkeeping kept for later
    tables = {
        "realtime_risk_metrics": account_metrics(T0),
        "position_risk_metrics": position_metrics(T0),
        "alerts": alert_rows(T0),
        "risk_state": risk_state_rows(T0, lvl_drawdown=2),
    }
    # Act
    together = wh.prepare_all(tables, cycle_id="c1", defer_state_json=True)
    # Assert
    assert list(together) == list(tables)
    for table, frame in tables.items():
        alone = wh.prepare(table, frame, cycle_id="c1", defer_state_json=True)
        assert together[table].schema == alone.schema, table
        assert together[table].equals(alone, null_equal=True), table
    assert together["alerts"]["cycle_id"].to_list() == ["c1"]


def test_tables_prepared_together_are_refused_by_their_first_bad_table(wh):
    # Arrange: a bad value in the first table, an unknown column in the second
    tables = {
        "alerts": alert_rows(T0, level=9),
        "position_risk_metrics": position_metrics(T0).with_columns(bogus=pl.lit(1)),
    }
    # Act / Assert: named as table-by-table preparing names it
    with pytest.raises(WarehouseError, match=r"alerts.level=9 \(row 0\)"):
        wh.prepare_all(tables, cycle_id="c1")
    with pytest.raises(WarehouseError, match=r"position_risk_metrics\.bogus: no such column"):
        wh.prepare_all({"alerts": alert_rows(T0), **{k: v for k, v in tables.items() if k != "alerts"}}, cycle_id="c1")


def test_prepare_at_once_declines_a_bad_value_so_the_checks_can_name_it(wh):
    # Arrange
    from risklib.adapters.warehouse import _validate

    frame = alert_rows(T0, level=9).rename(_validate.ALIASES.get("alerts", {}))
    # Act
    fast = _validate._prepare_at_once([("alerts", frame.lazy(), wh.columns("alerts"), _validate.CHECKS["alerts"])])
    # Assert
    assert fast is None
    with pytest.raises(WarehouseError, match=r"alerts.level=9 \(row 0\)"):
        wh.prepare("alerts", alert_rows(T0, level=9))
