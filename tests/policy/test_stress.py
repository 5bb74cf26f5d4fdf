"""Stress event detectors: each fires on a crafted path and stays silent on a calm one."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from policy_builders import T0, make_metrics

from risklib.core.policy import (
    MarketInputs,
    detect_correlation_breakdown,
    detect_economic_shock,
    detect_flash_crash,
    detect_liquidity_crisis,
    detect_market_stress,
    detect_regime_shift,
    detect_volatility_spike,
    evaluate,
)

INST = ("EUR/USD", "GBP/USD", "USD/JPY", "AUD/USD")


@pytest.fixture
def sc(cfg):
    return cfg.stress_detection


@pytest.mark.parametrize(("vmax", "level"), [(1.2, 0), (1.49, 0), (1.5, 1), (1.99, 1), (2.0, 2), (3.0, 3),
                                             (4.99, 3), (5.0, 4), (9.0, 4)])
def test_volatility_spike_classification(vmax, level, sc):
    # Arrange
    m = MarketInputs(instruments=INST, vol_ratio=np.array([1.0, vmax, 0.9, 1.1]))
    # Act
    r = detect_volatility_spike(m, sc)
    # Assert: RT classification 1.5-2x / 2-3x / 3-5x / >5x
    assert r.level == level


def test_liquidity_crisis_fires_on_wide_spreads_and_missing_quotes(sc):
    # Arrange
    calm = MarketInputs(instruments=INST, spread_ratio=np.array([1.0, 1.2, 1.1, 2.9]), quote_missing=np.zeros(4, bool))
    wide = MarketInputs(instruments=INST, spread_ratio=np.array([1.0, 4.0, 1.1, 1.0]), quote_missing=np.zeros(4, bool))
    missing = MarketInputs(instruments=INST, spread_ratio=np.ones(4), quote_missing=np.array([True, False, False, False]))
    # Act / Assert
    assert detect_liquidity_crisis(calm, sc).level == 0
    assert detect_liquidity_crisis(wide, sc).level == sc.liquidity_level
    assert detect_liquidity_crisis(missing, sc).level == sc.liquidity_missing_level


def test_correlation_breakdown(sc):
    # Arrange
    base = np.array([[1, 0.2, -0.3], [0.2, 1, 0.1], [-0.3, 0.1, 1.0]])
    flipped = base.copy()
    flipped[0, 2] = flipped[2, 0] = 0.5  # jump of 0.8
    herd = np.full((3, 3), 0.9)
    np.fill_diagonal(herd, 1.0)
    # Act / Assert
    assert detect_correlation_breakdown(MarketInputs(correlation=base, normal_correlation=base), sc).level == 0
    assert detect_correlation_breakdown(MarketInputs(correlation=flipped, normal_correlation=base), sc).level > 0
    assert detect_correlation_breakdown(MarketInputs(correlation=herd), sc).level > 0


def _path(crash: float, rebound: float, bars: int = 60) -> np.ndarray:
    r = np.zeros((bars, 2))
    r[::2, :] = 1e-4
    r[1::2, :] = -1e-4  # calm noise, sigma 1e-4
    r[40:45, 0] = crash / 5  # 5-bar crash on the first instrument
    r[46:51, 0] = rebound / 5
    return r


def test_flash_crash_and_rebound(sc):
    # Arrange
    sigma = np.full(2, 1e-4)
    calm = MarketInputs(returns=_path(0.0, 0.0), return_sigma=sigma)
    crash = MarketInputs(instruments=("EUR/USD", "GBP/USD"), returns=_path(-0.005, 0.0), return_sigma=sigma)
    rebound = MarketInputs(returns=_path(-0.005, 0.004), return_sigma=sigma)
    # Act
    r_calm, r_crash, r_reb = (detect_flash_crash(m, sc) for m in (calm, crash, rebound))
    # Assert: 0.5 % in 5 bars is ~22 sigma
    assert r_calm.level == 0
    assert r_crash.level == sc.flash_crash_level and "EUR/USD" in r_crash.detail
    assert r_reb.level == sc.flash_rebound_level and "rebound" in r_reb.detail


def test_regime_shift(sc):
    # Act / Assert
    same = MarketInputs(regime=("a", "b", "c", "d"), previous_regime=("a", "b", "c", "d"))
    moved = MarketInputs(regime=("x", "y", "c", "d"), previous_regime=("a", "b", "c", "d"))
    assert detect_regime_shift(same, sc).level == 0
    assert detect_regime_shift(moved, sc).level == sc.regime_shift_level


def test_economic_shock_uses_the_event_window(sc):
    # Arrange
    events = pl.DataFrame({"ts": [T0 + timedelta(minutes=10), T0 - timedelta(hours=3)], "impact": ["High", "high"],
                           "name": ["NFP", "old"]}).with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
    low = events.with_columns(pl.lit("low").alias("impact"))
    # Act / Assert: 10 min before a high-impact event is inside the 15 min pre-window
    assert detect_economic_shock(T0, MarketInputs(events=events), sc).level == sc.economic_shock_level
    assert detect_economic_shock(T0 - timedelta(hours=1), MarketInputs(events=events), sc).level == 0
    assert detect_economic_shock(T0, MarketInputs(events=low), sc).level == 0


def test_combined_assessment(sc):
    # Arrange
    m = MarketInputs(instruments=INST, vol_ratio=np.array([1.0, 2.2, 1.0, 1.0]), spread_ratio=np.array([1, 5, 5, 1.0]),
                     quote_missing=np.zeros(4, bool))
    # Act
    a = detect_market_stress(T0, m, sc)
    none = detect_market_stress(T0, None, sc)
    # Assert: liquidity (2) ties volatility (2); liquidity ranks first among ties
    assert (a.stress_level, a.primary_stress) == (2, "liquidity_crisis")
    assert a.recommended_action == sc.actions[2]
    assert 0.0 < a.confidence <= 1.0
    assert (none.stress_level, none.primary_stress, none.confidence) == (0, "none", 0.0)
    assert set(a.to_frame()["detector"]) == {"flash_crash", "liquidity_crisis", "volatility_spike",
                                              "correlation_breakdown", "economic_shock", "regime_shift"}


def test_market_stress_applies_to_every_account(cfg):
    # Arrange: market level 4 (a flash crash without rebound)
    m = MarketInputs(returns=_path(-0.005, 0.0), return_sigma=np.full(2, 1e-4), feed_silent_s=1.0)
    # Act
    ev = evaluate(T0, make_metrics({"account_id": "a"}, {"account_id": "b"}), None, cfg, market=m)
    # Assert
    assert ev.stress.stress_level == 4
    assert ev.state["trading_mode"].to_list() == ["HALTED", "HALTED"]  # FLATTEN once the close is confirmed
    assert ev.next_interval_s <= cfg.confirm_recheck_s


def test_parse_events_validates_the_users_file():
    # Arrange
    from risklib.core.policy import parse_events
    from risklib.errors import DataError

    good = pl.DataFrame({"ts": ["2026-01-05T12:10:00+01:00"], "impact": ["HIGH"], "name": ["ECB"], "extra": [1]})
    bad = pl.DataFrame({"ts": ["2026-01-05T12:10:00+00:00", "soon"], "impact": ["high", "low"], "name": ["a", "b"]})
    # Act
    out = parse_events(good)
    # Assert
    assert out.columns == ["ts", "impact", "name"]
    assert out["ts"].dt.hour().item() == 11 and out["impact"].item() == "high"
    with pytest.raises(DataError, match=r"^events row 1: ts='soon': not an ISO-8601 time with offset$"):
        parse_events(bad)
    with pytest.raises(DataError, match=r"^events: missing column\(s\) \['impact'\]"):
        parse_events(good.drop("impact"))
