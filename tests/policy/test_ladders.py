"""Every ladder step at, just below and just above its threshold (shipped policy)."""

from __future__ import annotations

import pytest

from risklib.config import load_policy_config
from risklib.core.policy import RULES, MarketInputs, evaluate

from policy_builders import T0, make_metrics

CFG = load_policy_config(None)
COLUMN = {
    "drawdown": "drawdown", "volatility": "vol_ratio", "var": "var_99", "daily_loss": "daily_loss",
    "exposure": "exposure_pct", "risk_score": "risk_score", "correlation": "correlation_index",
}


def _cases():
    for rule in RULES:
        ladder = CFG.ladder(rule)
        for k, step in enumerate(ladder.levels, start=1):
            t = step.threshold
            if rule == "stress":  # integer levels, driven through the account's vol-ratio bands
                t = CFG.stress_detection.vol_levels[k - 1]
                inclusive = True
            else:
                inclusive = ladder.inclusive
            eps = t * 1e-6
            yield pytest.param(rule, k, t - eps, k - 1, id=f"{rule}-L{k}-below")
            yield pytest.param(rule, k, t, k if inclusive else k - 1, id=f"{rule}-L{k}-at")
            yield pytest.param(rule, k, t + eps, k, id=f"{rule}-L{k}-above")


def _evaluate(rule: str, value: float):
    market = MarketInputs(feed_silent_s=1.0)
    row = {}
    if rule == "feed":
        market = MarketInputs(feed_silent_s=value)
    elif rule == "stress":
        row["vol_ratio"] = value
    else:
        row[COLUMN[rule]] = value
        if rule == "var":
            row["var_99_parametric"] = 0.0
    return evaluate(T0, make_metrics(row), None, CFG, market=market)


@pytest.mark.parametrize(("rule", "k", "value", "expected"), list(_cases()))
def test_ladder_step_boundaries(rule, k, value, expected):
    # Arrange / Act
    ev = _evaluate(rule, value)
    fired = ev.rules_fired.filter(rule=rule)
    # Assert
    level = fired["level"].item() if fired.height else 0
    assert level == expected
    if expected:
        step = CFG.ladder(rule).levels[expected - 1]
        assert fired["step"].item() == step.name
        assert fired["alert_level"].item() == step.alert_level
        assert ev.state["alert_level"].item() >= step.alert_level
        assert ev.state["sizing_multiplier"].item() <= step.sizing_multiplier
        assert fired["basis"].item() == CFG.ladder(rule).basis


@pytest.mark.parametrize(
    ("column", "value", "mode", "sizing", "cadence", "alert"),
    [
        ("drawdown", 0.021, "ACTIVE", 1.0, 30.0, 1),  # RT level 1: 30-second monitoring, no restriction
        ("drawdown", 0.051, "ACTIVE", 0.8, 5.0, 2),  # RT level 2: -20 %; cut pending -> 5 s recheck
        ("drawdown", 0.101, "REDUCE_ONLY", 0.0, 5.0, 3),  # RT level 3: halt new entries
        ("drawdown", 0.151, "HALTED", 0.0, 5.0, 5),  # RT level 4 + breaker trip: complete halt
        ("vol_ratio", 1.5, "ACTIVE", 0.8, 60.0, 1),  # elevated: 80 %, 1 min
        ("vol_ratio", 2.0, "ACTIVE", 0.6, 5.0, 2),  # high: 60 %, 30 s (stress L2 cut pending -> 5 s)
        ("vol_ratio", 3.0, "REDUCE_ONLY", 0.0, 1.0, 4),  # extreme: 30 %, continuous; stress L3 halts entries
        ("var_99", 0.0015, "ACTIVE", 0.9, 60.0, 1),  # yellow
        ("var_99", 0.003, "ACTIVE", 0.6, 1.0, 2),  # orange: continuous
        ("var_99", 0.0045, "ACTIVE", 0.3, 1.0, 4),  # red
        ("var_99", 0.0051, "REDUCE_ONLY", 0.0, 1.0, 4),  # > 0.5 %: halt new trading
        ("daily_loss", 0.021, "HALTED", 0.0, 300.0, 4),  # INST emergency daily loss: breaker trip
        ("exposure_pct", 0.51, "HALTED", 0.0, 300.0, 4),  # INST total exposure > 50 %
        ("risk_score", 96.0, "HALTED", 0.0, 300.0, 4),  # INST risk score critical (breaker OPEN -> 4)
    ],
)
def test_combined_decision_per_spec_step(column, value, mode, sizing, cadence, alert, cfg):
    # Arrange
    row = {column: value}
    if column == "var_99":
        row["var_99_parametric"] = 0.0
    # Act
    ev = evaluate(T0, make_metrics(row), None, cfg, market=MarketInputs(feed_silent_s=1.0))
    s = ev.state.row(0, named=True)
    # Assert
    assert (s["trading_mode"], s["sizing_multiplier"], s["next_cadence_s"], s["alert_level"]) == (
        mode, pytest.approx(sizing), cadence, alert)


def test_breaker_conditions_open_the_breaker(cfg):
    # Arrange: each INST trip condition on its own
    rows = [{"account_id": "dd", "drawdown": 0.16}, {"account_id": "dl", "daily_loss": 0.025},
            {"account_id": "ex", "exposure_pct": 0.6}, {"account_id": "rs", "risk_score": 99.0},
            {"account_id": "ok", "drawdown": 0.11, "daily_loss": 0.015, "risk_score": 85.0}]
    # Act
    ev = evaluate(T0, make_metrics(*rows), None, cfg, market=MarketInputs(feed_silent_s=1.0))
    state = dict(zip(ev.state["account_id"], ev.state["breaker_state"]))
    # Assert: warnings (10 % drawdown, 1 % daily loss, risk score 80) alert but do not trip
    assert state == {"dd": "OPEN", "dl": "OPEN", "ex": "OPEN", "rs": "OPEN", "ok": "CLOSED"}
    assert set(ev.alerts.filter(rule="breaker")["account_id"]) == {"dd", "dl", "ex", "rs"}
