"""Properties: worse metrics never give a larger size or a lower alert level; evaluation is deterministic."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_builders import FEED_OK, T0, make_metrics

from risklib.config import load_policy_config
from risklib.core.policy import account_position_size, dynamic_multiplier, evaluate

CFG = load_policy_config(None)
MODE_RANK = {"ACTIVE": 0, "REDUCE_ONLY": 1, "HALTED": 2, "FLATTEN": 3}

metric = st.fixed_dictionaries({
    "drawdown": st.floats(0, 0.3), "vol_ratio": st.floats(0.2, 8), "var_99": st.floats(0, 0.008),
    "daily_loss": st.floats(0, 0.04), "exposure_pct": st.floats(0, 1.0), "risk_score": st.floats(0, 100),
    "correlation_index": st.floats(0, 1),
})
worsening = st.fixed_dictionaries({k: st.floats(0, 1) for k in
                                   ("drawdown", "vol_ratio", "var_99", "daily_loss", "exposure_pct", "risk_score",
                                    "correlation_index")})
CAP = {"drawdown": 0.99, "var_99": 0.5, "daily_loss": 0.99, "exposure_pct": 50.0, "risk_score": 100.0,
       "correlation_index": 1.0, "vol_ratio": 100.0}


@settings(max_examples=60, deadline=None)
@given(base=metric, bump=worsening)
def test_worse_metrics_never_loosen(base, bump):
    # Arrange: b is a worse copy of a in every metric
    worse = {k: min(CAP[k], v + bump[k] * (0.2 if k != "risk_score" else 30) * (10 if k == "vol_ratio" else 1))
             for k, v in base.items()}
    a = base | {"account_id": "a", "var_99_parametric": base["var_99"]}
    b = worse | {"account_id": "b", "var_99_parametric": worse["var_99"]}
    # Act
    s = evaluate(T0, make_metrics(a, b), None, CFG, market=FEED_OK).state.rows_by_key("account_id", named=True)
    sa, sb = s["a"][0], s["b"][0]
    # Assert
    assert sb["alert_level"] >= sa["alert_level"]
    assert sb["sizing_multiplier"] <= sa["sizing_multiplier"]
    assert MODE_RANK[sb["trading_mode"]] >= MODE_RANK[sa["trading_mode"]]
    assert sb["max_leverage"] <= sa["max_leverage"]
    assert sb["next_cadence_s"] <= sa["next_cadence_s"]


@settings(max_examples=100, deadline=None)
@given(st.floats(0.1, 10), st.floats(0, 0.5), st.floats(0, 1), st.floats(0, 0.01), st.floats(0, 5),
       st.floats(0, 0.5), st.floats(0, 1), st.floats(0, 0.01))
def test_dynamic_multiplier_is_monotone(v, d, c, var, dv, dd, dc, dvar):
    # Act
    lo = dynamic_multiplier(np.array([v]), np.array([d]), np.array([c]), np.array([var]), np.array(["sideways"]),
                            CFG.sizing)
    hi = dynamic_multiplier(np.array([v + dv]), np.array([d + dd]), np.array([min(1, c + dc)]), np.array([var + dvar]),
                            np.array(["sideways"]), CFG.sizing)
    # Assert
    assert hi[0] <= lo[0] + 1e-12
    assert CFG.sizing.min_multiplier <= hi[0] <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.floats(1, 1e7), st.floats(0, 40), st.floats(0, 40), st.sampled_from(["MINIMAL", "LOW", "MEDIUM", "HIGH"]))
def test_account_sizing_never_grows_with_volatility(balance, vol, dvol, level):
    # Act
    args = (np.array([balance, balance]), np.array([vol, vol + dvol]), np.array([level, level], dtype=object),
            np.array([False, False]), CFG.risk_levels, CFG.sizing)
    lo, hi = account_position_size(*args)
    # Assert
    assert hi <= lo + 1e-9
    assert lo <= balance * CFG.risk_levels.base_position[level] + 1e-9


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(metric, min_size=1, max_size=4))
def test_evaluation_is_deterministic(rows):
    # Arrange
    m = make_metrics(*[r | {"account_id": f"A{i}"} for i, r in enumerate(rows)])
    # Act
    first = evaluate(T0, m, None, CFG, market=FEED_OK)
    second = evaluate(T0, m, None, CFG, market=FEED_OK)
    again = evaluate(T0, m, first.state, CFG, market=FEED_OK)
    again2 = evaluate(T0, m, first.state, CFG, market=FEED_OK)
    # Assert
    assert first.state.equals(second.state)
    assert first.alerts.equals(second.alerts) and first.actions.equals(second.actions)
    assert again.actions.equals(again2.actions) and again.rules_fired.equals(again2.rules_fired)
