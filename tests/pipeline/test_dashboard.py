"""The dashboard's markdown and its position table (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl

from risklib.cycle.dashboard import SIZING_COLUMNS, with_sizing

POSITIONS = pl.DataFrame({
    "account_id": ["A1", "A1", "A2"],
    "instrument": ["EUR/USD", "GBP/USD", "EUR/USD"],
    "strategy": ["trend", "trend", "carry"],
    "risk_contribution": [0.3, 0.2, 0.1],
})
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_each_position_gets_its_own_sizing_and_unsized_ones_get_null():
    # Arrange: A2's position was not sized (e.g. its account failed validation)
    sizing = pl.DataFrame({
        "account_id": ["A1", "A1"], "instrument": ["GBP/USD", "EUR/USD"], "strategy": ["trend", "trend"],
        "sizing_multiplier": [0.5, 0.8], "max_position_usd": [5_000.0, 8_000.0], "target_cut_fraction": [0.3, 0.0],
    })
    # Act
    out = with_sizing(POSITIONS, sizing)
    # Assert
    assert out["account_id"].to_list() == ["A1", "A1", "A2"]  # the positions' order is kept
    assert out["sizing_multiplier"].to_list() == [0.8, 0.5, None]
    assert out["max_position_usd"].to_list() == [8_000.0, 5_000.0, None]
    assert out["target_cut_fraction"].to_list() == [0.0, 0.3, None]


def test_without_sizing_the_columns_are_there_and_empty():
    # Act
    out = with_sizing(POSITIONS, None)
    # Assert
    assert set(SIZING_COLUMNS) <= set(out.columns)
    assert all(out[c].null_count() == out.height for c in SIZING_COLUMNS)


def test_top_risks_are_the_largest_first_and_unknown_ones_last():
    from risklib.cycle.dashboard import top_risks

    positions = pl.DataFrame({"account_id": list("abcdef"), "risk_contribution": [0.2, None, 0.5, 0.1, None, 0.3]})
    assert top_risks(positions, 3)["account_id"].to_list() == ["c", "f", "a"]
    assert top_risks(positions, 5)["account_id"].to_list()[:4] == ["c", "f", "a", "d"]
    assert top_risks(positions, 5)["risk_contribution"].to_list()[4] is None
    assert top_risks(positions, 10).height == 6


def test_drawdowns_read_as_losses_in_the_status_line_and_the_account_table():
    from risklib.cycle.dashboard import render_dashboard

    # Arrange: one account 2.5 % below its peak, one at its peak
    metrics = pl.DataFrame({
        "account_id": ["A1", "A2"], "valid": [True, True], "equity_usd": [97_500.0, 100_000.0],
        "peak_equity_usd": [100_000.0, 100_000.0], "drawdown": [0.025, 0.0], "var_99": [0.001, 0.001],
        "regime": ["CALM", "CALM"], "daily_pnl_usd": [-2_500.0, 0.0], "daily_pnl_pct": [-0.025, 0.0],
        "n_positions": [1, 1], "risk_score": [40.0, 10.0],
    })
    state = pl.DataFrame({"account_id": ["A1", "A2"], "alert_level": [2, 0], "trading_mode": ["ACTIVE", "ACTIVE"],
                          "breaker_state": ["CLOSED", "CLOSED"], "sizing_multiplier": [0.5, 1.0]})
    alerts = pl.DataFrame(schema={"rule": pl.String, "level": pl.Int64, "metric_value": pl.Float64,
                                  "message": pl.String, "trading_mode": pl.String})
    # Act
    md = render_dashboard(now=NOW, cycle_id="c-1", metrics=metrics, state=state, alerts=alerts,
                          positions=pl.DataFrame(), stress="calm", next_interval_s=300)
    # Assert: firm-wide 1.25 % below the peak, A1 2.5 %, both with a minus sign
    assert "Drawdown: **-1.25%**" in md
    (a1,) = [line for line in md.splitlines() if line.startswith("| A1 |")]
    assert "| -2.50% |" in a1
