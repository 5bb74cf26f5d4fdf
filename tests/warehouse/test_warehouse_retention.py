"""Retention tiers, rollups (accounts per minute, positions per hour) and audit checkpoints (``now`` passed in)."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
import pytest

from risklib.errors import WarehouseError
from risklib.warehouse import Warehouse, cutoffs, load_config, run_retention

from warehouse_builders import T0, account_metrics, alert_rows, cycle, position_metrics

NOW = T0 + timedelta(days=2000)


def _action(now, key: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"idempotency_key": [key], "incident_key": ["A1:drawdown:1"], "account_id": ["A1"], "action": ["REDUCE"],
         "fraction": [0.25], "reason": ["drawdown"], "ts": [now]}
    )


def _count(wh, table: str) -> int:
    return wh.query(f"SELECT count(*) AS n FROM {table}")["n"][0]


def test_cutoffs_follow_the_spec_tiers():
    # Act
    cuts = cutoffs(load_config().retention, NOW)
    # Assert
    assert NOW - cuts["risk_metrics"] == timedelta(days=365)
    assert NOW - cuts["alerts"] == timedelta(days=730)
    assert NOW - cuts["emergency_actions"] == timedelta(days=1825)
    assert "audit" not in cuts  # audit trail kept complete by default


def test_naive_now_is_refused():
    with pytest.raises(WarehouseError, match=r"now=.*: must be timezone-aware"):
        cutoffs(load_config().retention, NOW.replace(tzinfo=None))


def test_each_table_keeps_its_tier(wh):
    # Arrange: the same kinds of rows at ages straddling each tier
    for age_days in (100, 400, 800, 1900):
        at = NOW - timedelta(days=age_days)
        wh.write_cycle(cycle(f"c{age_days}", at, alerts=alert_rows(at, incident_key=f"A1:drawdown:{age_days}"),
                             emergency_actions=_action(at, f"k{age_days}")))
    # Act
    report = run_retention(wh, NOW, compact=False)
    # Assert
    assert _count(wh, "cycle_runs") == 1  # 365-day tier: only the 100-day-old cycle stays
    assert sorted(wh.query("SELECT incident_key FROM alerts")["incident_key"].to_list()) == ["A1:drawdown:100", "A1:drawdown:400"]
    assert sorted(wh.query("SELECT idempotency_key FROM emergency_actions")["idempotency_key"].to_list()) == ["k100", "k400", "k800"]
    deleted = {s.table: s.rows for s in report.steps if s.kind == "delete"}
    assert deleted == {"cycle_runs": 3, "alerts": 2, "emergency_actions": 1}


def test_every_delete_is_an_audit_entry_and_the_chain_holds(wh):
    # Arrange
    old = NOW - timedelta(days=800)
    wh.write_cycle(cycle("old", old, alerts=alert_rows(old)))
    # Act
    run_retention(wh, NOW, compact=False)
    # Assert
    entries = wh.query("SELECT subject, detail FROM audit_log WHERE action = 'retention.delete' ORDER BY seq")
    details = {s: json.loads(d) for s, d in entries.rows()}
    assert details["alerts"] == {"tier": "alerts", "days": 730, "cutoff": (NOW - timedelta(days=730)).isoformat(), "rows": 1}
    assert wh.verify().ok


def test_dry_run_changes_nothing(wh):
    # Arrange
    old = NOW - timedelta(days=800)
    wh.write_cycle(cycle("old", old, alerts=alert_rows(old)))
    before = _count(wh, "audit_log")
    # Act
    report = run_retention(wh, NOW, dry_run=True)
    # Assert
    assert {s.table for s in report.steps} == {"alerts", "cycle_runs"}
    assert _count(wh, "alerts") == 1
    assert _count(wh, "audit_log") == before
    assert "would affect 1 rows" in report.summary()


def test_rollup_keeps_min_max_last_per_minute(wh):
    # Arrange: three cycles inside one minute and one in the next, all older than 30 days
    base = NOW - timedelta(days=40)
    drawdowns = [(0, 0.02), (20, 0.05), (40, 0.03), (70, 0.01)]
    for sec, dd in drawdowns:
        at = base + timedelta(seconds=sec)
        wh.write_cycle(cycle(f"c{sec}", at, realtime_risk_metrics=account_metrics(at, accounts=("A1",), drawdown=dd, daily_loss=0.025)))
    recent = NOW - timedelta(days=1)
    wh.write_cycle(cycle("recent", recent, realtime_risk_metrics=account_metrics(recent, accounts=("A1",))))
    # Act
    run_retention(wh, NOW, compact=False)
    # Assert
    rolled = wh.query(
        "SELECT minute, n_cycles, drawdown_min, drawdown_max, drawdown_last, var_95_breaches, \"day\" "
        "FROM realtime_risk_metrics_1m ORDER BY minute"
    )
    assert rolled.rows() == [
        (base, 3, 0.02, 0.05, 0.03, 3, base.date()),  # daily_loss 0.025 > var_95 0.02 in each cycle
        (base + timedelta(minutes=1), 1, 0.01, 0.01, 0.01, 1, base.date()),
    ]
    assert wh.query("SELECT cycle_id FROM realtime_risk_metrics")["cycle_id"].to_list() == ["recent"]


def test_rollup_matches_a_slow_reference(wh):
    # Arrange: a few accounts over a few minutes with varying drawdowns
    base = NOW - timedelta(days=45)
    rows = []
    for k in range(12):
        at = base + timedelta(seconds=17 * k)
        frame = account_metrics(at, accounts=("A1", "A2"), drawdown=0.001 * ((k * 7) % 11))
        rows.append(frame)
        wh.write_cycle(cycle(f"c{k}", at, realtime_risk_metrics=frame))
    fine = pl.concat(rows).with_columns(minute=pl.col("ts").dt.truncate("1m"))
    expected = {}
    for r in fine.sort("ts").iter_rows(named=True):  # the obvious loop
        e = expected.setdefault((r["minute"], r["account_id"]), {"min": r["drawdown"], "max": r["drawdown"], "n": 0})
        e["min"], e["max"], e["last"], e["n"] = min(e["min"], r["drawdown"]), max(e["max"], r["drawdown"]), r["drawdown"], e["n"] + 1
    # Act
    run_retention(wh, NOW, compact=False)
    # Assert
    got = {
        (m, a): {"min": lo, "max": hi, "last": last, "n": n}
        for m, a, lo, hi, last, n in wh.query(
            "SELECT minute, account_id, drawdown_min, drawdown_max, drawdown_last, n_cycles FROM realtime_risk_metrics_1m"
        ).rows()
    }
    assert got == expected


def _positions(at, notional: float, pnl: float) -> pl.DataFrame:
    return position_metrics(at, n=2).with_columns(
        pl.lit(notional).alias("notional_usd"), pl.lit(pnl).alias("unrealized_pnl_usd")
    )


def test_position_rollup_is_hourly_with_min_max_last(wh):
    # Arrange: a cycle every 5 minutes for 70 minutes, starting on the hour, 40 days ago
    base = (NOW - timedelta(days=40)).replace(minute=0, second=0, microsecond=0)
    for k in range(15):
        at = base + timedelta(minutes=5 * k)
        wh.write_cycle(cycle(f"c{k}", at, position_risk_metrics=_positions(at, 1000.0 + k, -float(k))))
    # Act
    run_retention(wh, NOW, compact=False)
    # Assert: one row per position per hour (12 cycles, then 3), not one per cycle-minute
    rolled = wh.query(
        'SELECT "hour", "day", account_id, n_cycles, notional_usd_min, notional_usd_max, notional_usd_last, '
        "unrealized_pnl_min, unrealized_pnl_last FROM position_risk_metrics_1h ORDER BY ALL"
    )
    first = (base, base.date())
    second = (base + timedelta(hours=1), base.date())
    assert rolled.rows() == [
        (*first, "A1", 12, 1000.0, 1011.0, 1011.0, -11.0, -11.0),
        (*first, "A2", 12, 1000.0, 1011.0, 1011.0, -11.0, -11.0),
        (*second, "A1", 3, 1012.0, 1014.0, 1014.0, -14.0, -14.0),
        (*second, "A2", 3, 1012.0, 1014.0, 1014.0, -14.0, -14.0),
    ]
    assert _count(wh, "position_risk_metrics") == 0
    assert "position_risk_metrics_1m" not in wh.tables()


def test_position_rollup_never_splits_an_hour(wh):
    # Arrange: the rollup cutoff falls at 10:30 (30 days before NOW); cycles at 10:05 and 10:40
    now = NOW.replace(hour=10, minute=30, second=0, microsecond=0) + timedelta(days=30)
    hour = NOW.replace(hour=10, minute=0, second=0, microsecond=0)
    for minute in (5, 40):
        at = hour + timedelta(minutes=minute)
        wh.write_cycle(cycle(f"c{minute}", at, position_risk_metrics=_positions(at, 1.0, 0.0)))
    # Act
    run_retention(wh, now, compact=False)
    # Assert: the 10:00 hour is still whole in the fine table (it rolls up next run)
    assert cutoffs(wh.config.retention, now)["rollup_hour"] == hour
    assert _count(wh, "position_risk_metrics_1h") == 0
    assert _count(wh, "position_risk_metrics") == 4


def test_migration_folds_existing_per_minute_position_rollups_into_hours(tmp_path, monkeypatch, clock):
    # Arrange: a warehouse migrated before 0005, holding per-minute position rollups
    import shutil

    from risklib.adapters.warehouse import _warehouse
    from risklib.adapters.warehouse._config import MIGRATIONS_DIR

    older = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, older)
    (older / "0005_position_rollup_hourly.sql").unlink()
    monkeypatch.setattr(_warehouse, "MIGRATIONS_DIR", older)
    wh = Warehouse.open(tmp_path / "wh", clock=clock)
    hour = (NOW - timedelta(days=100)).replace(minute=0, second=0, microsecond=0)
    wh.con.execute(
        'INSERT INTO position_risk_metrics_1m (minute, "day", account_id, currency_pair, strategy_name, n_cycles, '
        "notional_usd_min, notional_usd_max, notional_usd_last) VALUES "
        "(?, NULL, 'A1', 'EUR/USD', 's', 1, 5, 7, 6), (?, NULL, 'A1', 'EUR/USD', 's', 2, 4, 9, 8), "
        "(?, NULL, 'A1', 'EUR/USD', 's', 1, 1, 1, 1)",
        [hour + timedelta(minutes=5), hour + timedelta(minutes=50), hour + timedelta(hours=1)],
    )
    monkeypatch.setattr(_warehouse, "MIGRATIONS_DIR", MIGRATIONS_DIR)
    # Act
    applied = wh.migrate()
    # Assert
    assert "migrations/0005_position_rollup_hourly.sql" in applied
    rows = wh.query(
        'SELECT "hour", "day", n_cycles, notional_usd_min, notional_usd_max, notional_usd_last '
        "FROM position_risk_metrics_1h ORDER BY ALL"
    ).rows()
    assert rows == [
        (hour, hour.date(), 3, 4.0, 9.0, 8.0),
        (hour + timedelta(hours=1), (hour + timedelta(hours=1)).date(), 1, 1.0, 1.0, 1.0),
    ]
    assert "position_risk_metrics_1m" not in wh.tables()
    wh.close()


def test_daily_risk_view_spans_fine_rows_and_rollups(wh):
    # Arrange: same day, one cycle rolled up (old) - the view must still see it
    old = NOW - timedelta(days=40)
    wh.write_cycle(cycle("old", old, realtime_risk_metrics=account_metrics(old, accounts=("A1",), drawdown=0.07)))
    run_retention(wh, NOW, compact=False)
    recent = NOW - timedelta(days=1)
    wh.write_cycle(cycle("new", recent, realtime_risk_metrics=account_metrics(recent, accounts=("A1",), drawdown=0.02),
                         alerts=alert_rows(recent, level=3)))
    # Act
    daily = wh.query("SELECT day, max_drawdown, worst_alert_level FROM daily_risk_by_account ORDER BY day")
    # Assert
    assert daily.rows() == [(old.date(), 0.07, 0), (recent.date(), 0.02, 3)]


@pytest.fixture
def short_tiers(wh_path, clock):
    cfg = load_config()
    retention = cfg.retention.model_copy(
        update={"risk_metrics_days": 3, "alerts_days": 3, "emergency_actions_days": 3, "quarantine_days": 3,
                "rollup_after_days": 1, "audit_days": 5}
    )
    w = Warehouse.open(wh_path, config=cfg.model_copy(update={"retention": retention}), clock=clock)
    yield w
    w.close()


def test_old_audit_entries_go_behind_a_checkpoint_and_the_chain_still_verifies(short_tiers):
    # Arrange: audit entries 10 days old and 1 day old
    wh = short_tiers
    for days in (10, 10, 1):
        wh.audit("op", "note", "x", {"days": days}, at=NOW - timedelta(days=days))
    before_first = wh.query("SELECT min(seq) AS s FROM audit_log")["s"][0]
    # Act
    report = run_retention(wh, NOW, compact=False)
    result = wh.verify()
    # Assert
    assert [s.kind for s in report.steps if s.table == "audit_log"] == ["audit_checkpoint"]
    assert result.ok, result.summary()
    assert result.anchored_at is not None
    assert wh.query("SELECT min(seq) AS s FROM audit_log")["s"][0] > before_first
    remaining_notes = wh.query("SELECT detail FROM audit_log WHERE action = 'note'")["detail"].to_list()
    assert remaining_notes == ['{"days":1}']


def test_compaction_keeps_every_row(wh):
    # Arrange
    for k in range(5):
        at = NOW - timedelta(minutes=k)
        wh.write_cycle(cycle(f"c{k}", at, realtime_risk_metrics=account_metrics(at)))
    before = _count(wh, "realtime_risk_metrics")
    # Act
    report = run_retention(wh, NOW)
    # Assert
    assert _count(wh, "realtime_risk_metrics") == before == 10
    assert set(report.compaction) == {"flush_inlined_data", "merge_adjacent_files", "rewrite_data_files",
                                      "expire_snapshots", "cleanup_old_files"}
    assert all(v >= 0 for v in report.compaction.values()), getattr(wh, "compaction_errors", None)
    assert wh.verify().ok


def test_every_table_has_a_retention_tier(wh):
    # Arrange
    from risklib.warehouse import TIERS

    # Act
    untiered = set(wh.tables()) - set(TIERS) - {"schema_migrations"}
    # Assert
    assert untiered == set()
