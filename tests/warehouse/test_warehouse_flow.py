"""The scheduled retention flow, on a real Prefect API and a real warehouse."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flows.retention import apply_retention, retention_flow, verify_audit
from risklib.warehouse import Warehouse

from warehouse_builders import T0, alert_rows, cycle


def _fill(wh_path):
    with Warehouse.open(wh_path) as wh:
        old = T0 - timedelta(days=800)
        wh.write_cycle(cycle("old", old, alerts=alert_rows(old)))
        wh.write_cycle(cycle("new", T0, alerts=alert_rows(T0, incident_key="A1:var:1")))


def test_apply_retention_task_deletes_past_tier(wh_path):
    # Arrange
    _fill(wh_path)
    # Act
    report = apply_retention.fn(str(wh_path), T0, False, False)
    # Assert
    assert {(s["kind"], s["table"]) for s in report["steps"]} == {("delete", "alerts"), ("delete", "cycle_runs")}
    assert verify_audit.fn(str(wh_path)).startswith("audit chain OK")


@pytest.mark.integration
def test_retention_flow_runs_on_prefect(prefect_api, wh_path):
    # Arrange
    _fill(wh_path)
    # Act
    result = retention_flow(location=str(wh_path), now=T0, dry_run=False, compact=True)
    # Assert
    assert result["rows_affected"] == 2
    assert result["audit"].startswith("audit chain OK")
    with Warehouse.open(wh_path, read_only=True) as ro:
        assert ro.query("SELECT incident_key FROM alerts")["incident_key"].to_list() == ["A1:var:1"]
