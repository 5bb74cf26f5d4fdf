"""Circuit breaker: every legal transition, every illegal one refused, recovery needs evidence."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from policy_builders import T0, make_metrics, run

from risklib.core import frames
from risklib.core.policy import BreakerState, step_breakers, transition_breaker
from risklib.core.policy._config import BreakerConfig
from risklib.errors import AuthorityError, IllegalTransitionError

C, O, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.mark.parametrize(("cur", "tgt"), [(C, O), (O, H), (H, C), (H, O), (C, C), (O, O), (H, H)])
def test_legal_transitions(cur, tgt):
    # Act / Assert
    assert transition_breaker(cur, tgt) is tgt


def test_closed_to_half_open_is_illegal():
    # Act / Assert
    with pytest.raises(IllegalTransitionError, match=r"^breaker CLOSED -> HALF_OPEN: illegal transition$"):
        transition_breaker("CLOSED", "HALF_OPEN")


def test_manual_reset_needs_authority():
    # Act / Assert
    with pytest.raises(AuthorityError, match=r"^authority=2: breaker reset OPEN -> CLOSED needs authority >= 3$"):
        transition_breaker(O, C, authority=2)
    assert transition_breaker(O, C, authority=3) is C


def _step(prev, trip, valid=True, opened=np.nan, clear=np.nan, half=np.nan, reset=False, now=1000.0, cfg=None):
    a = lambda x, t=float: np.array([x], dtype=t)  # noqa: E731
    new, o, c, h = step_breakers(now, a(prev, np.int64), a(trip, bool), a(valid, bool), a(opened), a(clear), a(half),
                                 a(reset, bool), cfg or BreakerConfig(cooldown_s=100, recovery_dwell_s=50, probe_s=60))
    return int(new[0]), float(o[0]), float(c[0]), float(h[0])


def test_step_breakers_full_cycle():
    # Arrange / Act / Assert: CLOSED -trip-> OPEN
    assert _step(0, True, now=0.0)[:2] == (1, 0.0)
    # OPEN, trip gone but cooldown not over: stays OPEN and starts the clear clock
    s, o, c, _ = _step(1, False, opened=0.0, now=40.0)
    assert (s, c) == (1, 40.0)
    # cooldown over but clear dwell (50 s) not: OPEN
    assert _step(1, False, opened=0.0, clear=60.0, now=100.0)[0] == 1
    # both over: HALF_OPEN
    s, _, _, h = _step(1, False, opened=0.0, clear=40.0, now=100.0)
    assert (s, h) == (2, 100.0)
    # HALF_OPEN and trip again: OPEN
    assert _step(2, True, half=100.0, now=120.0)[:2] == (1, 120.0)
    # HALF_OPEN, probe period over: CLOSED
    assert _step(2, False, half=100.0, now=160.0)[0] == 0


def test_recovery_needs_valid_data():
    # Arrange / Act: OPEN, trip absent, timers long over, but metrics invalid
    s, _, c, _ = _step(1, False, valid=False, opened=0.0, clear=0.0, now=1000.0)
    # Assert: no progress without evidence
    assert s == 1 and np.isnan(c)
    # HALF_OPEN with invalid data does not close (probe restarts)
    s, _, _, h = _step(2, False, valid=False, half=0.0, now=1000.0)
    assert (s, h) == (2, 1000.0)


def test_manual_reset_closes_only_without_trip():
    # Act / Assert
    assert _step(1, False, opened=990.0, reset=True)[0] == 0
    assert _step(1, True, opened=990.0, reset=True)[0] == 1


def test_evaluation_trips_then_recovers_through_half_open(cfg):
    # Arrange: 2.5 % daily loss trips; then it goes away
    bad = make_metrics({"daily_loss": 0.025})
    good = make_metrics({})
    # Act
    ev = run(bad, cfg)[0]
    t = T0
    states = [ev.state["breaker_state"].item()]
    prev = ev.state
    for dt in (60, 400, 700, 1000, 1300, 1600, 1900, 2200, 2500):  # seconds after the trip
        ev = run(good, cfg, start=t + timedelta(seconds=dt), previous=prev)[0]
        prev = ev.state
        states.append(ev.state["breaker_state"].item())
    # Assert: the trip condition clears at 400 s (hysteresis dwell 300 s from 60 s); HALF_OPEN once the
    # 900 s cooldown and the 300 s recovery dwell have passed (1000 s); CLOSED after 900 s of probing (1900 s)
    assert states == ["OPEN", "OPEN", "OPEN", "OPEN", "HALF_OPEN", "HALF_OPEN", "HALF_OPEN", "CLOSED", "CLOSED",
                      "CLOSED"]


def test_half_open_probes_at_reduced_size(cfg):
    # Arrange: a state restored in HALF_OPEN
    ev = run(make_metrics({}), cfg)[0]
    restored = ev.state.with_columns(breaker_state=__import__("polars").lit("HALF_OPEN"),
                                     brk_half_s=__import__("polars").lit(T0.timestamp()))
    # Act
    ev2 = run(make_metrics({}), cfg, start=T0 + timedelta(seconds=10), previous=restored)[0]
    s = ev2.state.row(0, named=True)
    # Assert
    assert s["breaker_state"] == "HALF_OPEN"
    assert s["trading_mode"] == "ACTIVE"
    assert s["sizing_multiplier"] == cfg.breaker.half_open_sizing
    assert s["max_positions"] == cfg.breaker.half_open_max_positions


def test_restart_with_core_columns_only_keeps_halt(cfg):
    # Arrange: the warehouse restored only the core columns of an OPEN, HALTED account
    ev = run(make_metrics({"exposure_pct": 0.7}), cfg)[0]
    core = ev.state.select(list(frames.RISK_STATE_CORE))
    assert core["breaker_state"].item() == "OPEN"
    # Act: restart with calm metrics
    ev2 = run(make_metrics({}), cfg, start=T0 + timedelta(seconds=30), previous=core)[0]
    # Assert: a restart never clears a halt
    s = ev2.state.row(0, named=True)
    assert (s["breaker_state"], s["trading_mode"]) == ("OPEN", "HALTED")
    assert s["episode_id"] == ev.state["episode_id"].item()
