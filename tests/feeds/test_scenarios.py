"""Scenario steps fold into one market state (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from risklib.core.scenarios import SCENARIOS, ScenarioStep, crash_path, market_state_at, scenario
from risklib.errors import ConfigError


def test_no_step_is_a_calm_market():
    # Arrange / Act
    state = market_state_at((), 100.0)
    # Assert
    assert state.vol_multiplier == 1.0
    assert state.labels == ()
    assert not state.disconnected


def test_vol_spike_is_x3_then_x5_then_calm():
    # Arrange
    steps = SCENARIOS["vol-spike"]
    # Act
    before, first, second, after = (market_state_at(steps, t).vol_multiplier for t in (0, 700, 1300, 1900))
    # Assert
    assert (before, first, second, after) == (1.0, 3.0, 5.0, 1.0)


def test_overlapping_vol_effects_multiply():
    # Arrange
    steps = (ScenarioStep(0, 100, "vol", {"multiplier": 2.0}), ScenarioStep(50, 100, "vol", {"multiplier": 3.0}))
    # Act
    state = market_state_at(steps, 60)
    # Assert
    assert state.vol_multiplier == 6.0
    assert state.labels == ("vol", "vol")


def test_flash_crash_falls_then_rebounds_and_leaves_a_residual():
    # Arrange
    step = ScenarioStep(100, 300, "crash", {"depth": 0.03, "fall_share": 0.3, "rebound": 0.7})
    # Act
    bottom = market_state_at((step,), 100 + 90).dollar_shift
    end = market_state_at((step,), 100 + 299.999).dollar_shift
    after = market_state_at((step,), 1000).dollar_shift
    # Assert
    assert bottom == pytest.approx(0.03)
    assert end == pytest.approx(0.03 * 0.3, rel=1e-3)
    assert after == pytest.approx(0.009)


def test_disconnect_and_liquidity_states():
    # Arrange
    steps = SCENARIOS["feed-disconnect"] + SCENARIOS["liquidity-gap"]
    # Act
    state = market_state_at(steps, 650)
    # Assert
    assert state.disconnected
    assert state.spread_multiplier == 15.0
    assert state.missing_p == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_s": 0, "duration_s": 10, "effect": "meteor"}, r"effect='meteor': must be one of"),
        ({"start_s": -1, "duration_s": 10, "effect": "vol"}, r"start_s=-1: must be >= 0"),
        ({"start_s": 0, "duration_s": 0, "effect": "vol"}, r"duration_s=0: must be > 0"),
        (
            {"start_s": 0, "duration_s": 1, "effect": "bad_rows", "params": {"kinds": ["typo"]}},
            r"bad_rows kinds=\['typo'\]: must be among",
        ),
    ],
)
def test_bad_steps_are_refused_naming_the_field(kwargs, message):
    # Arrange / Act / Assert
    with pytest.raises(ConfigError, match=message):
        ScenarioStep(**kwargs)


def test_unknown_scenario_name_is_refused():
    # Arrange / Act / Assert
    with pytest.raises(ConfigError, match=r"scenario='panic': must be one of \["):
        scenario("panic")


def test_every_named_scenario_starts_calm_for_ten_bars():
    # Arrange / Act / Assert
    for name, steps in SCENARIOS.items():
        if name == "bad-data":
            continue
        assert market_state_at(steps, 599).labels == (), name


@given(
    depth=st.floats(0.001, 0.2),
    fall=st.floats(0.05, 0.95),
    rebound=st.floats(0.0, 1.0),
    p=st.floats(0.0, 1.0),
)
def test_crash_path_stays_between_zero_and_depth(depth, fall, rebound, p):
    # Arrange / Act
    move = crash_path(p, depth, fall, rebound)
    # Assert
    assert -1e-12 <= move <= depth + 1e-12
