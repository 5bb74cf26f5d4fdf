"""The optimized evaluation and sizing give exactly the frames of the reference implementation.

Random accounts (values straddling every ladder, missing and invalid data, groups), random
sequences of cycles (sticky or jumping metrics, accounts vanishing, short and long gaps),
market inputs, overrides and positions; every output frame must be identical, cycle after cycle.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import reference_policy as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from policy_builders import CALM, FEED_OK, T0, make_metrics

from risklib.core import frames
from risklib.config import default_policy_dict, load_policy_config
from risklib.core.policy import MarketInputs, evaluate, size_positions

CFG = load_policy_config(None)
CFG_GROUPS = load_policy_config(default_policy_dict() | {
    "groups": {"pro": {"drawdown": [0.04, 0.06, 0.09, 0.12, 0.2]}},
    "strategies": {"swing_ma": {"sizing_multiplier": 0.5, "max_position_usd": 20_000.0}},
})

#: Metric ranges straddling each ladder's thresholds.
RANGES = {
    "drawdown": (0.0, 0.25), "vol_ratio": (0.2, 7.0), "var_99": (0.0, 0.008), "var_99_parametric": (0.0, 0.008),
    "daily_loss": (0.0, 0.06), "exposure_pct": (0.0, 1.2), "risk_score": (0.0, 100.0),
    "correlation_index": (0.0, 1.0),
}
MARKETS = [
    None,
    FEED_OK,
    MarketInputs(feed_silent_s=150.0),
    MarketInputs(instruments=("EUR/USD", "GBP/USD"), vol_ratio=np.array([2.2, 1.1]), feed_silent_s=2.0),
]
DT = [1.0, 5.0, 30.0, 301.0, 1000.0]


def _override(**kw) -> dict:
    return dict(override_id="o1", account_id="A0", rule="volatility", action="suspend", threshold_scale=None,
                authority_level=2, operator_id="op", created_at=T0, expires_at=T0 + timedelta(seconds=250)) | kw


OVERRIDES = [
    None,
    [_override()],
    [_override(account_id="*", rule="drawdown", action="adjust", threshold_scale=1.2, authority_level=4,
               expires_at=T0 + timedelta(hours=2))],
    [_override(rule="breaker", action="reset", authority_level=3, expires_at=T0 + timedelta(hours=2))],
    [_override(rule="var", authority_level=1), _override(override_id="o2", account_id="A1", expires_at=None)],
]


@st.composite
def account_row(draw, i: int, prev: dict | None) -> dict:
    if prev is not None and draw(st.booleans()):
        return prev  # same metrics again: confirmations and dwell progress
    row = {"account_id": f"A{i}", "account_group": draw(st.sampled_from(["retail", "pro", None])),
           "regime": draw(st.sampled_from(["sideways", "bear_high_vol", "unheard_of", None]))}
    if draw(st.integers(0, 2)) == 0:
        return row  # calm: breakers recover, modes resume
    for col, (lo, hi) in RANGES.items():
        row[col] = draw(st.one_of(st.floats(lo, hi), st.sampled_from([lo, hi, None, float("nan")])))
    if draw(st.integers(0, 9)) == 0:
        row |= {"valid": False, "invalid_reason": draw(st.sampled_from(["stale feed", None]))}
    if draw(st.integers(0, 19)) == 0:
        row["equity_usd"] = 0.0
    return row


def assert_same(new, old) -> None:
    for name in ("state", "alerts", "actions", "rules_fired"):
        assert getattr(new, name).columns == getattr(old, name).columns, name
        assert_frame_equal(getattr(new, name), getattr(old, name), check_exact=True)
    assert new.next_interval_s == old.next_interval_s
    assert_frame_equal(new.stress.to_frame(), old.stress.to_frame(), check_exact=True)
    assert (new.stress.stress_level, new.stress.confidence) == (old.stress.stress_level, old.stress.confidence)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_evaluate_matches_reference_over_cycles(data):
    # Arrange
    cfg = data.draw(st.sampled_from([CFG, CFG_GROUPS]))
    n = data.draw(st.integers(1, 6))
    rows: list[dict | None] = [None] * n
    prev_new = prev_old = None
    now = T0
    for _ in range(data.draw(st.integers(1, 8))):
        rows = [data.draw(account_row(i, r)) for i, r in enumerate(rows)]
        present = [r for r in rows if data.draw(st.integers(0, 7)) > 0] or rows[:1]
        m = make_metrics(*present)
        market = data.draw(st.sampled_from(MARKETS))
        ov = data.draw(st.sampled_from(OVERRIDES))
        overrides = pl.DataFrame(ov, schema=frames.OVERRIDES) if ov else None
        # Act
        new = evaluate(now, m, prev_new, cfg, market=market, overrides=overrides)
        old = ref.evaluate(now, m, prev_old, cfg, market=market, overrides=overrides)
        # Assert
        assert_same(new, old)
        pm = _positions(data, new.state["account_id"].to_list() + ["ghost"])
        for state in (new.state, new.state.reverse()):  # rows as evaluate orders them, and any other order
            assert_frame_equal(size_positions(state, m, pm, cfg), ref.size_positions(state, m, pm, cfg),
                               check_exact=True)
        prev_new, prev_old = new.state, old.state
        now += timedelta(seconds=data.draw(st.sampled_from(DT)))


def _positions(data, accounts: list[str]) -> pl.DataFrame:
    held = data.draw(st.lists(st.sampled_from(accounts), max_size=8))
    k = len(held)
    return pl.DataFrame({
        "account_id": held,
        "instrument": data.draw(st.lists(st.sampled_from(["EUR/USD", "USD/JPY"]), min_size=k, max_size=k)),
        "strategy": data.draw(st.lists(st.sampled_from(["swing_ma", "breakout", None]), min_size=k, max_size=k)),
        "volatility_score": data.draw(st.lists(st.one_of(st.floats(0.1, 5), st.none()), min_size=k, max_size=k)),
        "correlation_risk": data.draw(st.lists(st.one_of(st.floats(0, 1), st.none()), min_size=k, max_size=k)),
    }, schema={"account_id": pl.String, "instrument": pl.String, "strategy": pl.String,
               "volatility_score": pl.Float64, "correlation_risk": pl.Float64})


def test_evaluate_matches_reference_at_scale():
    # Arrange: a few thousand accounts over a dozen cycles; each cycle an account keeps its metrics,
    # calms down or jumps to random values, and some vanish for a cycle, under a stressed market
    rng = np.random.default_rng(11)
    n = 3000
    calm = make_metrics(CALM)
    m = pl.DataFrame({
        **{c: np.repeat(calm[c].to_numpy(), n) for c in calm.columns},
        "account_id": [f"ACC{i:05d}" for i in range(n)],
        "account_group": rng.choice(["retail", "pro"], n),
    }).cast(frames.ACCOUNT_METRICS)
    prev_new = prev_old = None
    now = T0
    for cycle, dt in enumerate([5, 5, 30, 1000, 301, 301, 5, 1000, 301, 1000, 5, 301]):
        fate = rng.choice(3, n, p=[0.5, 0.25, 0.25])  # 0 keep, 1 calm, 2 jump
        m = m.with_columns(
            **{c: pl.when(pl.Series(fate == 1)).then(calm[c].item())
               .when(pl.Series(fate == 2)).then(pl.Series(rng.uniform(lo, hi, n))).otherwise(pl.col(c))
               for c, (lo, hi) in RANGES.items()},
            valid=pl.Series(rng.random(n) > 0.01),
        )
        cur = m.filter(pl.Series(rng.random(n) > 0.02)) if cycle % 3 == 1 else m
        market = MARKETS[3] if cycle < 4 else FEED_OK
        # Act
        new = evaluate(now, cur, prev_new, CFG_GROUPS, market=market)
        old = ref.evaluate(now, cur, prev_old, CFG_GROUPS, market=market)
        # Assert
        assert_same(new, old)
        prev_new, prev_old = new.state, old.state
        now += timedelta(seconds=dt)
