"""GET endpoints against a real DuckLake warehouse: numbers equal what the newest cycle recorded."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from api_builders import T0, record_cycle

from risklib.core.metrics import correlation_rows

pytestmark = pytest.mark.integration


def test_status_serves_the_newest_cycle_per_account(wh, client):
    # Act
    body = client.get("/api/risk/status").json()
    # Assert: c2's numbers, not the older c1's
    stored = wh.query("SELECT account_id, equity_usd, portfolio_var_99, portfolio_drawdown, risk_score "
                      "FROM realtime_risk_metrics WHERE cycle_id = 'c2' ORDER BY account_id").rows()
    served = [(m["account_id"], m["equity_usd"], m["var_99"], m["drawdown"], m["risk_score"]) for m in body["metrics"]]
    assert served == stored
    assert body["cycle_id"] == "c2" and body["stale"] is False and body["heartbeat_age_s"] == 10.0
    assert body["status"] == "YELLOW"  # portfolio VaR99 0.107 % is in the spec's yellow zone
    assert [m["trading_mode"] for m in body["metrics"]] == ["ACTIVE", "ACTIVE"]


def test_status_filters_one_account_and_404s_an_unknown_one(client):
    assert [m["account_id"] for m in client.get("/api/risk/status", params={"account_id": "A2"}).json()["metrics"]] == ["A2"]
    r = client.get("/api/risk/status", params={"account_id": "ZZ"})
    assert r.status_code == 404 and r.json()["detail"] == "account_id='ZZ': not in cycle c2"


def test_stale_heartbeat_is_reported_loudly(client, clock):
    # Arrange: 11 minutes without a cycle (limit: 600 s, the monitor's heartbeat age)
    clock.advance(660)
    # Act
    status = client.get("/api/risk/status").json()
    health = client.get("/api/risk/portfolio-health").json()
    api_health = client.get("/api/health").json()
    # Assert
    assert status["status"] == "STALE" and status["stale"] is True and status["heartbeat_age_s"] == 670.0
    assert health["status"] == "STALE" and health["zone"] == "YELLOW"
    assert api_health["status"] == "stale"


def test_no_cycle_yet_is_503_not_green(tmp_path, clock):
    from api_builders import make_client

    from risklib.warehouse import Warehouse

    with Warehouse.open(tmp_path / "empty") as w:
        c = make_client(w, clock)
        r = c.get("/api/risk/status")
        assert r.status_code == 503 and r.json()["detail"].startswith("status=NO_DATA: no completed cycle")
        assert c.get("/api/health").json()["status"] == "stale"


def test_portfolio_health_aggregates_like_the_dashboard(wh, client):
    # Act
    h = client.get("/api/risk/portfolio-health").json()
    # Assert: recomputed by hand from the stored rows
    m = wh.query("SELECT equity_usd, peak_equity_usd, portfolio_var_99, daily_pnl_usd FROM realtime_risk_metrics "
                 "WHERE cycle_id = 'c2'")
    equity = m["equity_usd"].sum()
    assert h["equity_usd"] == equity == 3_000_000.0
    assert h["var_99"] == pytest.approx((m["portfolio_var_99"] * m["equity_usd"]).sum() / equity)
    assert h["drawdown"] == pytest.approx(1 - equity / m["peak_equity_usd"].sum())
    assert h["daily_pnl_usd"] == -10_000.0 and h["positions"] == 2 and h["accounts"] == 2
    assert h["risk_utilisation"] == pytest.approx(h["var_99"] / 0.005)
    assert h["trading_modes"] == {"ACTIVE": 2} and h["worst_alert_level"] == 1


def test_position_risks_largest_contribution_first_and_filters(wh, client):
    # Act
    body = client.get("/api/risk/position-risks").json()
    one = client.get("/api/risk/position-risks", params={"instrument": "EUR/USD"}).json()
    # Assert
    assert [(r["account_id"], r["currency_pair"], r["position_size"], r["risk_contribution"]) for r in body["rows"]] == [
        ("A2", "GBP/USD", -10_000.0, 0.0011), ("A1", "EUR/USD", 10_000.0, 0.0007)]
    assert body["positions"] == 2 and body["cycle_id"] == "c2"
    assert [r["account_id"] for r in one["rows"]] == ["A1"]


def test_correlation_matrix_is_503_until_recorded_then_the_newest_matrix(wh, client):
    # Arrange
    before = client.get("/api/risk/correlation-matrix")
    names = ["GBP/USD", "EUR/USD", "USD/JPY"]
    old = np.array([[1, 0.1, 0.1], [0.1, 1, 0.1], [0.1, 0.1, 1.0]])
    new = np.array([[1, 0.7, np.nan], [0.7, 1, -0.2], [np.nan, -0.2, 1.0]])
    record_cycle(wh, "c3", T0 + timedelta(seconds=5), extra={"correlation_snapshots": correlation_rows(names, old, T0 + timedelta(seconds=5))})
    record_cycle(wh, "c4", T0 + timedelta(seconds=8), extra={"correlation_snapshots": correlation_rows(names, new, T0 + timedelta(seconds=8))})
    # Act
    after = client.get("/api/risk/correlation-matrix").json()
    # Assert
    assert before.status_code == 503 and "correlation_snapshots: empty" in before.json()["detail"]
    assert after["snapshot_cycle_id"] == "c4" and after["instruments"] == ["EUR/USD", "GBP/USD", "USD/JPY"]
    assert after["matrix"] == [[1.0, 0.7, -0.2], [0.7, 1.0, None], [-0.2, None, 1.0]]
    assert after["snapshot_age_s"] == 2.0


def test_thresholds_and_config_show_the_defaults_in_force(client):
    t = client.get("/api/risk/thresholds").json()
    c = client.get("/api/risk/config").json()
    assert [lv["threshold"] for lv in t["ladders"]["drawdown"]["levels"]] == [0.02, 0.05, 0.08, 0.10, 0.15]
    assert t["ladders"]["var"]["levels"][-1]["threshold"] == 0.005 and t["changes_applied"] == 0
    assert c["fingerprint"] == c["base_fingerprint"] and c["changes"] == []
    assert c["config"]["policy"]["gate"]["max_state_age_s"] == 660.0


def test_emergency_status_normal_then_lists_modes_not_active(wh, client):
    # Arrange
    normal = client.get("/api/emergency/status").json()
    record_cycle(wh, "c5", T0 + timedelta(seconds=9), state={"modes": ("HALTED", "ACTIVE"), "alert_levels": (4, 0)})
    # Act
    halted = client.get("/api/emergency/status").json()
    # Assert
    assert normal["system"] == "NORMAL" and normal["accounts_not_active"] == []
    assert halted["system"] == "EMERGENCY" and halted["cycle_id"] == "c5"
    assert [(a["account_id"], a["trading_mode"]) for a in halted["accounts_not_active"]] == [("A1", "HALTED")]
