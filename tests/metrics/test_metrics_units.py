"""Curves, drawdown durations, correlation flags, regimes and risk-score mappings on hand-built data."""

from __future__ import annotations

import numpy as np
import pytest

from risklib.core.instruments import pnl_usd
from risklib.metrics import (
    MetricsConfig,
    classify_regime,
    correlated_pairs,
    correlation_index,
    drawdown_stats,
    equity_curve,
    ewma_correlation,
    pnl_curve,
    risk_score,
    risk_subscores,
)


def test_pnl_curve_equals_pnl_usd_bar_by_bar():
    # Arrange: two accounts, EUR/USD (USD quote) and USD/JPY (USD base)
    q = np.array([[100_000.0, -50_000.0], [0.0, 20_000.0]])
    e = np.array([[1.07, 151.0], [1.0, 149.0]])
    prices = np.array([[1.08, 150.0], [1.10, 148.0], [1.05, 152.0]])
    uq = np.array([True, False])
    # Act
    got = pnl_curve(q, e, prices, uq)
    # Assert
    want = np.array([[pnl_usd(q[a], e[a], prices[t], uq).sum() for t in range(3)] for a in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(equity_curve(np.array([1e5, 2e4]), got), want + np.array([[1e5], [2e4]]))


def test_drawdown_durations_count_bars_below_the_peak():
    equity = np.array([[100, 110, 99, 105, 111, 100, 100.0]])
    got = drawdown_stats(equity)
    assert got["max_drawdown"][0] == pytest.approx(0.1)
    assert got["current_drawdown"][0] == pytest.approx(1 - 100 / 111)
    assert got["max_duration_bars"][0] == 2
    assert got["current_duration_bars"][0] == 2


def test_correlated_pairs_flag_both_signs_above_threshold():
    rng = np.random.default_rng(1)
    base = rng.normal(size=500)
    r = np.column_stack([base, base + 0.1 * rng.normal(size=500), -base + 0.1 * rng.normal(size=500), rng.normal(size=500)])
    corr = ewma_correlation(r * 0.01)
    pairs = correlated_pairs(corr, ["A", "B", "C", "D"], 0.8)
    assert {(a, b) for a, b in zip(pairs["instrument_a"], pairs["instrument_b"], strict=True)} == {("A", "B"), ("A", "C"), ("B", "C")}
    assert (pairs["correlation"].abs() > 0.8).all()
    assert correlation_index(np.eye(3)) == 0.0
    assert correlation_index(np.ones((3, 3))) == 1.0


@pytest.mark.parametrize(
    ("drift", "vol_ratio", "want"),
    [(0.002, 1.0, "bull_low_vol"), (0.002, 2.0, "bull_high_vol"), (-0.002, 1.0, "bear_low_vol"), (-0.002, 1.6, "bear_high_vol"), (0.0, 3.0, "sideways")],
)
def test_regime_rules(drift, vol_ratio, want):
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.005, size=60)
    r = drift + noise - noise.mean()  # exact drift, annualised Sharpe = drift / std * sqrt(252)
    assert classify_regime(r, np.array([vol_ratio]))[0] == want


def test_risk_score_sub_scores_follow_their_documented_ramps():
    cfg = MetricsConfig()
    kw = dict(exposure_pct=np.array([0.25, 1.0]), leverage=np.array([2.5, 10.0]), daily_loss=np.array([0.01, 0.0]),
              unrealized_loss=np.array([0.0, 0.05]), concentration=np.array([0.6, 1.0]), n_positions=np.array([5, 40]))
    sub = risk_subscores(config=cfg, **kw)
    np.testing.assert_allclose(sub["exposure"], [50.0, 100.0])
    np.testing.assert_allclose(sub["leverage"], [50.0, 100.0])
    np.testing.assert_allclose(sub["pnl"], [50.0, 100.0])
    np.testing.assert_allclose(sub["position"], [50.0, 100.0])
    np.testing.assert_allclose(risk_score(config=cfg, **kw), [50.0, 100.0])
    nan = risk_score(config=cfg, **{**kw, "daily_loss": np.array([np.nan, 0.0])})
    assert np.isnan(nan[0]) and nan[1] == 100.0
