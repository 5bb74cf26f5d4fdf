"""`riskctl warehouse ...` end to end against real warehouse folders."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

from risklib.cli import app
from risklib.warehouse import Warehouse

from warehouse_builders import T0, alert_rows, cycle

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["warehouse", *args])


def test_migrate_creates_then_reports_up_to_date(tmp_path):
    # Act
    first = _run("migrate", "--location", str(tmp_path / "wh"))
    second = _run("migrate", "--location", str(tmp_path / "wh"))
    # Assert
    assert first.exit_code == 0, first.output
    assert "applied migrations/0001_core_tables.sql" in first.output
    assert second.output.strip() == "schema up to date"


def test_verify_ok_then_broken_naming_the_entry(wh, wh_path):
    # Arrange
    wh.write_cycle(cycle("c1", T0))
    seq = wh.query("SELECT max(seq) AS s FROM audit_log")["s"][0]
    # Act
    ok = _run("verify", "-l", str(wh_path))
    wh.con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", [seq])
    broken = _run("verify", "-l", str(wh_path))
    # Assert
    assert ok.exit_code == 0 and ok.output.startswith("audit chain OK:")
    assert broken.exit_code == 1
    assert f"audit chain BROKEN at seq {seq}: stored hash does not match" in broken.output


def test_stats_shows_rows_bytes_and_tiers(wh, wh_path):
    # Arrange
    wh.write_cycle(cycle("c1", T0, alerts=alert_rows(T0)))
    # Act
    out = _run("stats", "-l", str(wh_path))
    # Assert
    assert out.exit_code == 0, out.output
    alerts_line = next(line for line in out.output.splitlines() if line.startswith("alerts "))
    assert alerts_line.split()[:3] == ["alerts", "alerts", "1"]
    assert "tier" in out.output and "emergency_actions" in out.output
    assert f"last completed cycle: {T0.isoformat()}" in out.output


def test_retention_dry_run_lists_and_keeps(wh, wh_path):
    # Arrange
    old = T0 - timedelta(days=800)
    wh.write_cycle(cycle("old", old, alerts=alert_rows(old)))
    # Act
    out = _run("retention", "--dry-run", "--now", T0.isoformat(), "-l", str(wh_path))
    # Assert
    assert out.exit_code == 0, out.output
    assert "(dry run)" in out.output
    assert any(line.split()[:2] == ["delete", "alerts"] for line in out.output.splitlines())
    assert wh.query("SELECT count(*) AS n FROM alerts")["n"][0] == 1


def test_retention_applies(wh, wh_path):
    # Arrange
    old = T0 - timedelta(days=800)
    wh.write_cycle(cycle("old", old, alerts=alert_rows(old)))
    wh.close()
    # Act
    out = _run("retention", "--no-compact", "--now", T0.isoformat(), "-l", str(wh_path))
    # Assert
    assert out.exit_code == 0, out.output
    with Warehouse.open(wh_path, read_only=True) as ro:
        assert ro.query("SELECT count(*) AS n FROM alerts")["n"][0] == 0


@pytest.mark.parametrize(
    ("now", "message"),
    [("yesterday", "--now='yesterday': not an ISO-8601 time"), ("2026-03-01T00:00:00", "must include a UTC offset")],
)
def test_retention_bad_now_exits_2(wh_path, now, message):
    out = _run("retention", "--dry-run", "--now", now, "-l", str(wh_path))
    assert out.exit_code == 2
    assert message in out.output


def test_missing_warehouse_exits_2_naming_location(tmp_path):
    out = _run("verify", "-l", str(tmp_path / "nowhere"))
    assert out.exit_code == 2
    assert "no warehouse there" in out.output


def test_bad_config_exits_2_naming_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[warehouse.retention]\nalerts_days = 0\n")
    out = _run("stats", "-c", str(cfg), "-l", str(tmp_path))
    assert out.exit_code == 2
    assert "warehouse.retention.alerts_days=0" in out.output


def test_cli_init_prints_a_read_only_attach(wh_path):
    out = _run("cli-init", "-l", str(wh_path))
    assert out.exit_code == 0
    assert f"ATTACH 'ducklake:sqlite:{wh_path}/catalog.sqlite' AS wh (DATA_PATH '{wh_path}/files/', OVERRIDE_DATA_PATH TRUE, READ_ONLY);" in out.output or "READ_ONLY);" in out.output
    assert out.output.count("LOAD '") == 2
