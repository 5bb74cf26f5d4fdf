"""Migrations: versioned, idempotent, checksummed; the spec's tables and the product's."""

from __future__ import annotations

import shutil

import pytest

from risklib.adapters.warehouse import _warehouse
from risklib.adapters.warehouse._config import MIGRATIONS_DIR
from risklib.errors import WarehouseError
from risklib.warehouse import Warehouse

SPEC_COLUMNS = {
    "realtime_risk_metrics": {
        "timestamp", "portfolio_drawdown", "portfolio_var_95", "portfolio_var_99", "volatility_regime",
        "correlation_index", "risk_score", "alert_level", "actions_taken", "account_id", "cycle_id",
    },
    "position_risk_metrics": {
        "timestamp", "currency_pair", "strategy_name", "position_size", "unrealized_pnl", "position_var_95",
        "volatility_score", "correlation_risk", "risk_contribution", "account_id", "cycle_id",
    },
    "emergency_actions": {
        "timestamp", "trigger_type", "trigger_value", "action_taken", "positions_affected", "manual_override",
        "operator_id", "account_id", "idempotency_key", "incident_key", "cycle_id", "fraction", "status",
    },
}
PRODUCT_TABLES = {
    "risk_state", "alerts", "incidents", "notifications", "notification_events", "acknowledgements",
    "webhook_rejections", "overrides", "threshold_changes", "quarantine", "broker_orders", "broker_fills",
    "cycle_runs", "audit_log", "realtime_risk_metrics_1m", "position_risk_metrics_1h",
}


def test_migrate_creates_spec_tables_with_spec_columns(wh):
    # Arrange / Act: the fixture migrated
    # Assert
    for table, expected in SPEC_COLUMNS.items():
        assert expected <= {c.name for c in wh.columns(table)}, table


def test_migrate_creates_product_tables(wh):
    assert PRODUCT_TABLES <= set(wh.tables())


def test_money_is_decimal_and_risk_fractions_are_double(wh):
    # Arrange
    types = {c.name: c.sql_type for c in wh.columns("position_risk_metrics")}
    # Assert
    assert types["position_size"] == "DECIMAL(18,8)"
    assert types["unrealized_pnl"] == "DECIMAL(18,4)"
    assert types["position_var_95"] == "DOUBLE"


def test_second_migrate_applies_nothing(wh):
    # Act
    applied = wh.migrate()
    # Assert
    assert applied == []


def test_first_migrate_reports_every_migration_and_view(tmp_path):
    # Act
    wh = Warehouse.open(tmp_path / "fresh", migrate=False)
    applied = wh.migrate()
    wh.close()
    # Assert
    names = [p.name for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]
    assert [a for a in applied if a.startswith("migrations/")] == [f"migrations/{n}" for n in names]
    assert any(a.startswith("views/") for a in applied)


def test_migration_sql_can_be_reapplied(wh):
    # Arrange: idempotency of the files themselves (IF NOT EXISTS / OR REPLACE)
    files = sorted(MIGRATIONS_DIR.glob("*.sql"))
    # Act
    for f in files:
        wh.con.execute(f.read_text())
    # Assert
    assert wh.migrate() == []


def test_edited_applied_migration_is_refused(wh, tmp_path, monkeypatch):
    # Arrange: a copy of the migrations where 0001 was edited after being applied
    edited = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, edited)
    first = sorted(edited.glob("0001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    monkeypatch.setattr(_warehouse, "MIGRATIONS_DIR", edited)
    # Act / Assert
    with pytest.raises(WarehouseError, match=r"migration='0001_core_tables.sql': changed after it was applied"):
        wh.migrate()


def test_new_migration_is_applied_once_and_audited(wh, tmp_path, monkeypatch):
    # Arrange
    extra = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, extra)
    (extra / "9999_test_extra.sql").write_text("CREATE TABLE IF NOT EXISTS test_extra (x INTEGER);\n")
    monkeypatch.setattr(_warehouse, "MIGRATIONS_DIR", extra)
    # Act
    first = wh.migrate()
    second = wh.migrate()
    # Assert
    assert first == ["migrations/9999_test_extra.sql"]
    assert second == []
    audit = wh.query("SELECT subject FROM audit_log WHERE action = 'schema.migration'")
    assert "migrations/9999_test_extra.sql" in audit["subject"].to_list()


def test_read_only_warehouse_refuses_writes(wh_path):
    # Arrange
    ro = Warehouse.open(wh_path, read_only=True)
    # Act / Assert
    with pytest.raises(WarehouseError, match=r"opened read-only; writes are refused"):
        ro.migrate()
    ro.close()


def test_read_only_open_of_missing_warehouse_names_location(tmp_path):
    with pytest.raises(WarehouseError, match=r"no warehouse there \(catalog.sqlite missing\)"):
        Warehouse.open(tmp_path / "nowhere", read_only=True)
