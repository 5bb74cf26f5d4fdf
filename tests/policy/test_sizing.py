"""Position sizing: the spec's formulas against hand-computed cases; vectorized forms; Kelly; budget."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from policy_builders import make_metrics, run

from risklib.core.policy import (
    account_position_size,
    allocate_risk_budget,
    calculate_dynamic_position_size,
    calculate_position_size,
    dynamic_multiplier,
    fractional_kelly,
    size_positions,
)
from risklib.errors import DataError


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # vol 0.5 * dd (1-0.05/0.15) * corr 0.7 * var (1-0.1/0.4) * regime 1.2 = 0.21
        ((1.0, 0.2, 0.05, 0.3, 0.1, "bull_low_vol"), 0.21),
        # everything calm, bull_low_vol 1.2 -> clamped to 1.0
        ((1.0, 0.1, 0.0, 0.0, 0.0, "bull_low_vol"), 1.0),
        # unknown regime 0.7; corr floor 0.5; dd floor 0.1; var floor 0.2: 1*0.1*0.5*0.2*0.7 = 0.007 -> 0.05
        ((1.0, 0.1, 0.5, 0.9, 1.0, "crash"), 0.05),
        # low vol never scales up: min(1, 1/(0.05/0.1)) = 1; sideways 0.9; dd 0.03 -> 0.8 => 0.72
        ((1.0, 0.05, 0.03, 0.0, 0.0, "sideways"), 0.72),
    ],
)
def test_rt_dynamic_position_size_hand_cases(args, expected):
    # Act / Assert
    assert calculate_dynamic_position_size(*args, historical_volatility=0.1) == pytest.approx(expected)


def test_rt_dynamic_position_size_refuses_zero_volatility():
    # Act / Assert
    with pytest.raises(DataError, match=r"^current_volatility=0\.0: must be a positive finite number$"):
        calculate_dynamic_position_size(1.0, 0.0, 0.0, 0.0, 0.0, "sideways", historical_volatility=0.1)


@pytest.mark.parametrize(
    ("balance", "vol", "level", "emergency", "expected"),
    [
        (10_000, 12, "LOW", False, 10_000 * 0.01 * (1 - 12 / 15 * 0.5)),  # 60.0
        (10_000, 20, "MINIMAL", False, 10_000 * 0.02 * 0.3),  # 60.0
        (500, 0, "MINIMAL", False, 500 * 0.02 * 1.0 * 0.5),  # 5.0, balance factor 0.5
        (10_000, 6, "HIGH", False, 10_000 * 0.005 * 0.8),  # code listing: HIGH = 0.5 %
        (10_000, 6, "MINIMAL", True, 10_000 * 0.005 * 0.8),  # emergency 0.5 %
        (50, 0, "LOW", False, 1.0),  # $1 minimum
    ],
)
def test_inst_position_size_exactly_as_written(balance, vol, level, emergency, expected):
    # Act / Assert
    assert calculate_position_size(balance, 1.1, vol, level, emergency) == pytest.approx(expected)


def test_protective_account_sizing(cfg):
    # Arrange
    bal = np.array([10_000.0, 10_000.0, 10_000.0, 50.0, 10_000.0])
    vol = np.array([12.0, 6.0, 6.0, 0.0, float("nan")])
    lvl = np.array(["LOW", "HIGH", "MINIMAL", "LOW", "LOW"], dtype=object)
    em = np.array([False, False, True, False, False])
    # Act
    out = account_position_size(bal, vol, lvl, em, cfg.risk_levels, cfg.sizing)
    # Assert: 60 (code 0.6 < prose 0.75); HIGH uses prose 0.25 %, vol 6 -> min(0.8, 1.0);
    # emergency min(0.5 %, 2 %); $0.5 is below the $1 minimum -> 0 (no trade); NaN -> 0
    assert out == pytest.approx([60.0, 10_000 * 0.0025 * 0.8, 10_000 * 0.005 * 0.8, 0.0, 0.0])


def test_vectorized_dynamic_matches_scalar(cfg):
    # Arrange
    rng = np.random.default_rng(1)
    n = 50
    cur, dd, corr, var = rng.uniform(0.05, 0.4, n), rng.uniform(0, 0.3, n), rng.uniform(0, 1, n), rng.uniform(0, 0.006, n)
    reg = rng.choice(["bull_low_vol", "bear_high_vol", "sideways", "other"], n)
    # Act
    vec = dynamic_multiplier(cur / 0.1, dd, corr, var, reg, cfg.sizing)
    ref = [calculate_dynamic_position_size(1, c, d, k, v * 100, r, historical_volatility=0.1)
           for c, d, k, v, r in zip(cur, dd, corr, var, reg)]
    # Assert
    assert vec == pytest.approx(ref)


def test_fractional_kelly():
    # Act / Assert: f* = 0.6 - 0.4/1.5 = 0.3333; quarter Kelly 0.0833 -> capped at 2 %
    assert fractional_kelly(0.6, 1.5) == pytest.approx(0.02)
    assert fractional_kelly(0.52, 1.0, cap=1.0) == pytest.approx(0.25 * 0.04)
    assert fractional_kelly(0.4, 1.0) == 0.0  # negative edge -> no bet
    assert fractional_kelly(1.2, 1.0) == 0.0  # invalid probability


def test_risk_budget_allocation(cfg):
    # Act
    out = allocate_risk_budget(1_000.0, {"c1": "conservative", "c2": "conservative", "m": "moderate"}, cfg,
                               budget_multiplier=0.9)
    # Assert: 40 % split over two, 35 % to one, aggressive share and 5 % reserve unallocated
    assert dict(zip(out["strategy"], out["budget_usd"])) == pytest.approx({"c1": 180.0, "c2": 180.0, "m": 315.0})
    with pytest.raises(DataError, match=r"risk class must be one of"):
        allocate_risk_budget(1.0, {"x": "yolo"}, cfg)


def _position_metrics(rows):
    base = dict(account_id="A1", strategy="swing", instrument="EUR/USD", quantity=1000.0, price=1.1,
                notional_usd=1100.0, unrealized_pnl_usd=0.0, position_var_95=1e-4, volatility_score=1.0,
                correlation_risk=0.2, risk_contribution=1e-4)
    return pl.DataFrame([base | r for r in rows])


def test_size_positions_cuts_correlated_and_blocks_halted(cfg):
    # Arrange
    m = make_metrics({"account_id": "A1"}, {"account_id": "H", "drawdown": 0.11})
    ev = run(m, cfg)[0]
    pm = _position_metrics([{}, {"instrument": "GBP/USD", "correlation_risk": 0.85}, {"account_id": "H"}])
    # Act
    out = size_positions(ev.state, m, pm, cfg)
    # Assert
    a, b, h = out.rows(named=True)
    assert a["target_cut_fraction"] == 0.0 and b["target_cut_fraction"] == cfg.sizing.correlated_cut
    assert b["sizing_multiplier"] < a["sizing_multiplier"]
    assert a["max_position_usd"] == pytest.approx(100_000 * 0.02 * a["sizing_multiplier"])
    assert h["sizing_multiplier"] == 0.0 and h["max_position_usd"] == 0.0
    assert "not ACTIVE" in h["reason"]
