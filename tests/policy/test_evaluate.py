"""Trigger evaluation: fail closed, hysteresis, confirmation, idempotency, overrides."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from policy_builders import FEED_OK, T0, make_metrics, run

from risklib.core import frames
from risklib.config import default_policy_dict, load_policy_config
from risklib.core.policy import MarketInputs, check_override, evaluate
from risklib.errors import AuthorityError, DataError


def _state(ev, account="A1"):
    return ev.state.filter(account_id=account).row(0, named=True)


# --- fail closed -----------------------------------------------------------------------------------

@pytest.mark.parametrize("row", [{"valid": False, "invalid_reason": "stale prices"}, {"var_99": None},
                                 {"drawdown": float("nan")}, {"equity_usd": 0.0}, {"vol_ratio": None}])
def test_invalid_or_missing_metrics_fail_closed(row, cfg):
    # Act
    ev = run(make_metrics(row), cfg)[0]
    s = _state(ev)
    # Assert: no new entries, an alert on rule "data"
    assert s["trading_mode"] == "REDUCE_ONLY"
    assert s["sizing_multiplier"] == 0.0
    data = ev.alerts.filter(rule="data")
    assert data.height == 1 and data["level"].item() == cfg.data.alert_level
    assert "REDUCE_ONLY in force" in data["message"].item()


def test_invalid_reason_is_reported(cfg):
    # Act
    ev = run(make_metrics({"valid": False, "invalid_reason": "stale prices"}), cfg)[0]
    # Assert
    assert ev.rules_fired.filter(rule="data")["step"].item() == "stale prices"


def test_account_missing_from_metrics_is_kept_and_fails_closed(cfg):
    # Arrange
    first = run(make_metrics({"account_id": "A1"}, {"account_id": "A2"}), cfg)[0]
    # Act: A2 vanished from this cycle's metrics
    ev = run(make_metrics({"account_id": "A1"}), cfg, start=T0 + timedelta(seconds=60), previous=first.state)[0]
    # Assert
    assert sorted(ev.state["account_id"]) == ["A1", "A2"]
    assert _state(ev, "A2")["trading_mode"] == "REDUCE_ONLY"
    assert ev.rules_fired.filter(rule="data", account_id="A2")["step"].item() == "account missing from metrics"


def test_unknown_feed_fails_closed_without_cutting(cfg):
    # Act
    ev = evaluate(T0, make_metrics({}), None, cfg, market=None)
    # Assert
    assert _state(ev)["trading_mode"] == "REDUCE_ONLY"
    assert ev.alerts.filter(rule="feed")["level"].item() == cfg.feed_unknown.alert_level
    assert ev.actions.filter(pl.col("action").is_in(["REDUCE", "CLOSE", "CLOSE_ALL"])).height == 0


def test_feed_silent_over_two_minutes_closes_all(cfg):
    # Act
    ev = evaluate(T0, make_metrics({}), None, cfg, market=MarketInputs(feed_silent_s=121.0))
    s = _state(ev)
    # Assert: RT trigger 4, immediately (the silence is the confirmation)
    assert (s["trading_mode"], s["breaker_state"], s["alert_level"]) == ("FLATTEN", "OPEN", 5)
    assert ev.actions.filter(action="CLOSE_ALL")["fraction"].item() == 1.0


def test_invalid_data_never_de_escalates(cfg):
    # Arrange: drawdown level 3 held
    first = run(make_metrics({"drawdown": 0.11}), cfg)[0]
    # Act: an hour later metrics are invalid (drawdown unknown)
    ev = run(make_metrics({"drawdown": None, "valid": False}), cfg, start=T0 + timedelta(hours=1),
             previous=first.state)[0]
    # Assert
    assert ev.rules_fired.filter(rule="drawdown")["level"].item() == 4


# --- hysteresis ------------------------------------------------------------------------------------

def test_hysteresis_needs_margin_and_dwell(cfg):
    # Arrange: drawdown 5.5 % (level 2, threshold 5 %, margin 10 % -> clears below 4.5 %, dwell 300 s)
    path = [(0, 0.055), (30, 0.049), (60, 0.052), (90, 0.044), (200, 0.044), (389, 0.044), (390, 0.044),
            (420, 0.021)]
    prev, levels = None, []
    # Act
    for t, dd in path:
        ev = evaluate(T0 + timedelta(seconds=t), make_metrics({"drawdown": dd}), prev, cfg, market=FEED_OK)
        prev = ev.state
        levels.append(int(ev.state["lvl_drawdown"].item()))
    # Assert: 4.9 % and 5.2 % are inside the margin -> held; 4.4 % for 300 s clears at 390 s to level 1
    assert levels == [2, 2, 2, 2, 2, 2, 1, 1]


def test_escalation_is_immediate(cfg):
    # Arrange
    first = run(make_metrics({"drawdown": 0.021}), cfg)[0]
    # Act
    ev = run(make_metrics({"drawdown": 0.16}), cfg, start=T0 + timedelta(seconds=1), previous=first.state)[0]
    # Assert
    assert ev.rules_fired.filter(rule="drawdown")["level"].item() == 5
    assert _state(ev)["trading_mode"] == "HALTED"


# --- confirmation and idempotency ------------------------------------------------------------------

def test_one_bad_tick_does_not_cut(cfg):
    # Arrange: one evaluation at 16 % drawdown then back to calm
    evs = run(make_metrics({"drawdown": 0.16}), cfg)
    ev2 = run(make_metrics({"drawdown": 0.0}), cfg, start=T0 + timedelta(seconds=5), previous=evs[0].state)[0]
    # Assert: warnings and the halt were immediate; no cut was ordered
    assert _state(evs[0])["alert_level"] == 5
    assert evs[0].actions.filter(pl.col("action").is_in(["REDUCE", "CLOSE", "CLOSE_ALL"])).height == 0
    assert ev2.actions.filter(pl.col("action").is_in(["REDUCE", "CLOSE", "CLOSE_ALL"])).height == 0
    assert _state(evs[0])["next_cadence_s"] == cfg.confirm_recheck_s


def test_confirmed_cuts_compound_along_the_ladder_once(cfg):
    # Arrange: drawdown jumps to 16 % and stays
    evs = run(make_metrics({"drawdown": 0.16}), cfg, steps=5)
    cuts = [ev.actions.filter(pl.col("action").is_in(["REDUCE", "CLOSE", "CLOSE_ALL"])) for ev in evs]
    # Assert: evaluation 2 confirms L2 (20 %) and L4 (50 %, 50 %) need 2 and 3 -> evaluation 2 orders
    # the confirmed part of the ladder, evaluation 3 the rest; nothing is ordered twice
    assert [c.height for c in cuts] == [0, 1, 1, 0, 0]
    assert cuts[1]["fraction"].item() == pytest.approx(1 - 0.8 * 0.5)  # L2 then L4(=L3 REDUCE 0.5) confirmed
    total_left = (1 - cuts[1]["fraction"].item()) * (1 - cuts[2]["fraction"].item())
    assert total_left == pytest.approx(0.8 * 0.5 * 0.5)  # 20 %, 50 %, then close 50 %
    assert _state(evs[-1])["cut_total"] == pytest.approx(0.8)


def test_reevaluating_the_same_cycle_gives_the_same_keys(cfg):
    # Arrange
    first = run(make_metrics({"drawdown": 0.06}), cfg)[0]
    m = make_metrics({"drawdown": 0.06})
    # Act: the same cycle evaluated twice from the same previous state (a retried cycle)
    a = evaluate(T0 + timedelta(seconds=5), m, first.state, cfg, market=FEED_OK)
    b = evaluate(T0 + timedelta(seconds=5), m, first.state, cfg, market=FEED_OK)
    # Assert
    assert a.actions.height == 1
    assert a.actions["idempotency_key"].to_list() == b.actions["idempotency_key"].to_list()
    assert a.state.equals(b.state) and a.alerts.equals(b.alerts)


def test_incident_key_is_stable_across_cycles(cfg):
    # Act
    evs = run(make_metrics({"drawdown": 0.06}), cfg, steps=4)
    keys = {ev.alerts.filter(rule="drawdown")["incident_key"].item() for ev in evs}
    # Assert: one incident, not a page per cycle
    assert len(keys) == 1
    assert keys.pop().startswith("A1:drawdown:20260105T120000")


def test_mode_transition_actions_once(cfg):
    # Act
    evs = run(make_metrics({"drawdown": 0.101}), cfg, steps=3)
    halts = [ev.actions.filter(action="HALT_ENTRIES").height for ev in evs]
    # Assert
    assert halts == [1, 0, 0]


def test_outputs_conform_to_frames(cfg):
    # Act
    ev = run(make_metrics({"drawdown": 0.16}, {"account_id": "B", "valid": False}), cfg, steps=2)[-1]
    # Assert
    assert ev.state.select(list(frames.RISK_STATE_CORE)).schema == pl.Schema(frames.RISK_STATE_CORE)
    assert list(ev.state.columns[: len(frames.RISK_STATE_CORE)]) == list(frames.RISK_STATE_CORE)
    assert ev.alerts.schema == pl.Schema(frames.ALERTS)
    assert ev.actions.schema == pl.Schema(frames.ACTIONS)
    assert ev.rules_fired.schema == pl.Schema(frames.RULES_FIRED)
    assert ev.state["peak_equity_usd"].to_list() == [100_000.0, 100_000.0]


def test_next_interval_is_the_shortest_cadence(cfg):
    # Act
    ev = run(make_metrics({"account_id": "calm"}, {"account_id": "dd", "drawdown": 0.021}), cfg)[0]
    calm = run(make_metrics({}), cfg)[0]
    # Assert
    assert ev.next_interval_s == 30.0
    assert calm.next_interval_s == cfg.normal_cadence_s


def test_group_thresholds_apply_per_group():
    # Arrange
    cfg = load_policy_config(default_policy_dict() | {"groups": {"pro": {"drawdown": [0.04, 0.06, 0.09, 0.12, 0.2]}}})
    m = make_metrics({"account_id": "r", "account_group": "retail", "drawdown": 0.03},
                     {"account_id": "p", "account_group": "pro", "drawdown": 0.03})
    # Act
    ev = run(m, cfg)[0]
    # Assert
    assert ev.rules_fired.filter(rule="drawdown")["account_id"].to_list() == ["r"]


# --- overrides -------------------------------------------------------------------------------------

def _override(**kw) -> pl.DataFrame:
    row = dict(override_id="o1", account_id="A1", rule="volatility", action="suspend", threshold_scale=None,
               authority_level=2, operator_id="op", created_at=T0 - timedelta(seconds=10),
               expires_at=T0 + timedelta(seconds=200)) | kw
    return pl.DataFrame([row], schema=frames.OVERRIDES)


def test_suspend_within_authority_lifts_effects_but_keeps_the_alert(cfg):
    # Arrange
    m = make_metrics({"vol_ratio": 2.1})
    # Act
    ev = run(m, cfg, overrides=_override(rule="volatility"))[0]
    # Assert: head of trading may delay the volatility rule up to 5 minutes
    fired = ev.rules_fired.filter(rule="volatility")
    assert fired["suspended"].item() is True
    assert "SUSPENDED" in ev.alerts.filter(rule="volatility")["message"].item()
    assert _state(ev)["sizing_multiplier"] == pytest.approx(0.8)  # stress L2 still applies, volatility's 0.6 not


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        (dict(authority_level=1), "needs >= 2"),
        (dict(rule="var", authority_level=1), "may not suspend"),
        (dict(expires_at=T0 + timedelta(minutes=30)), "exceeds 300s"),
        (dict(rule="drawdown", authority_level=3), "needs >= 4"),
        (dict(action="adjust", threshold_scale=1.5, authority_level=2), "exceeds 20%"),
        (dict(expires_at=None), "must expire"),
    ],
)
def test_override_beyond_authority_is_rejected_and_audited(kw, why, cfg):
    # Arrange
    m = make_metrics({"vol_ratio": 2.1, "drawdown": 0.06, "var_99": 0.0015})
    # Act
    ev = run(m, cfg, overrides=_override(**kw))[0]
    # Assert
    rejected = ev.rules_fired.filter(rule="override")
    assert rejected.height == 1 and why in rejected["effect"].item()
    assert not ev.rules_fired.filter(rule=kw.get("rule", "volatility"))["suspended"].item()


def test_expired_override_has_no_effect(cfg):
    # Act
    ev = run(make_metrics({"vol_ratio": 2.1}), cfg, overrides=_override(expires_at=T0 - timedelta(seconds=1)))[0]
    # Assert
    assert not ev.rules_fired.filter(rule="volatility")["suspended"].item()


def test_adjust_scales_thresholds_within_authority(cfg):
    # Arrange: drawdown 5.5 % is level 2; thresholds x1.2 (risk manager may adjust up to 20 %) -> 6 % needed
    ov = _override(rule="drawdown", action="adjust", threshold_scale=1.2, authority_level=4)
    # Act
    ev = run(make_metrics({"drawdown": 0.055}), cfg, overrides=ov)[0]
    # Assert
    assert ev.rules_fired.filter(rule="drawdown")["level"].item() == 1


@pytest.mark.parametrize("accounts", [1, 3])
def test_adjusted_threshold_is_the_one_the_audit_and_message_state(accounts, cfg):
    # Arrange: drawdown 7 % with thresholds x1.2: level 2 held against 6 %, not the ladder's 5 %
    ov = _override(account_id="*", rule="drawdown", action="adjust", threshold_scale=1.2, authority_level=4)
    m = make_metrics(*({"account_id": f"A{i}", "drawdown": 0.07} for i in range(accounts)))
    # Act
    ev = run(m, cfg, overrides=ov)[0]
    # Assert
    fired = ev.rules_fired.filter(rule="drawdown")
    assert fired["level"].to_list() == [2] * accounts
    assert fired["threshold"].to_list() == [pytest.approx(0.06)] * accounts
    assert all("> 0.06 (basis" in msg for msg in ev.alerts.filter(rule="drawdown")["message"].to_list())


def test_check_override_messages(cfg):
    # Act / Assert
    with pytest.raises(AuthorityError, match=r"^authority_level=1 \(Risk Manager\): may not suspend a rule$"):
        check_override(_override(rule="var", authority_level=1).row(0, named=True), cfg)
    with pytest.raises(DataError, match=r"^rule='nope': unknown"):
        check_override(_override(rule="nope").row(0, named=True), cfg)
    with pytest.raises(AuthorityError, match=r"^authority_level=2: breaker reset needs >= 3$"):
        check_override(_override(rule="breaker", action="reset").row(0, named=True), cfg)


def test_breaker_reset_override(cfg):
    # Arrange: breaker opened by exposure; exposure fine since 60 s (trip cleared by hysteresis at 360 s);
    # the 900 s cooldown is far away
    first = run(make_metrics({"exposure_pct": 0.7}), cfg)[0]
    calm = run(make_metrics({}), cfg, start=T0 + timedelta(seconds=60), previous=first.state)[0]
    later = T0 + timedelta(seconds=400)
    held = evaluate(later, make_metrics({}), calm.state, cfg, market=FEED_OK)
    assert _state(held)["breaker_state"] == "OPEN"
    ov = _override(rule="breaker", action="reset", authority_level=3, created_at=later, expires_at=later + timedelta(seconds=60))
    # Act
    ev = evaluate(later, make_metrics({}), calm.state, cfg, market=FEED_OK, overrides=ov)
    # Assert
    assert _state(ev)["breaker_state"] == "CLOSED"
