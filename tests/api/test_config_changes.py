"""Run-time config changes: key parsing, whole-config re-validation, recorded changes, authority (pure)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risklib.config import load_config
from risklib.config_changes import (
    apply_changes,
    apply_threshold_changes,
    check_change_authority,
    format_key,
    get_value,
    parse_key,
)
from risklib.errors import AuthorityError, ConfigError

CFG = load_config()
T = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_parse_key_accepts_brackets_and_dots():
    assert parse_key("policy.drawdown.levels[1].threshold") == ("policy", "drawdown", "levels", 1, "threshold")
    assert format_key(parse_key("policy.drawdown.levels.1.threshold")) == "policy.drawdown.levels[1].threshold"
    assert get_value(CFG.model_dump(mode="json"), "policy.drawdown.levels.1.threshold") == \
        get_value(CFG.model_dump(mode="json"), "policy.drawdown.levels[1].threshold") == 0.05


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("", r"key='': must be a dotted path"),
        ("risk.var", r"key='risk.var': unknown section 'risk'"),
        ("policy.var..levels", r"key='policy.var..levels': malformed near '..'"),
        ("policy.nope", r"key='policy.nope': unknown setting 'nope'"),
        ("policy.var.levels[7].threshold", r"key='policy.var.levels\[7\].threshold': index 7 out of range \(list of 4\)"),
    ],
)
def test_bad_keys_are_named(key, text):
    with pytest.raises(ConfigError, match=text):
        apply_changes(CFG, [(key, 0.1)])


def test_percent_for_fraction_is_refused_with_the_loaders_hint():
    with pytest.raises(ConfigError, match=r"^policy\.var\.levels\[0\]\.threshold=15: must be a fraction in \(0, 1\); "
                                          r"did you mean 0\.15\?$"):
        apply_changes(CFG, [("policy.var.levels[0].threshold", 15)])


def test_type_and_range_errors_name_key_and_value():
    with pytest.raises(ConfigError, match=r"^policy\.gate\.max_notional_usd=-5: Input should be greater than 0$"):
        apply_changes(CFG, [("policy.gate.max_notional_usd", -5)])
    with pytest.raises(ConfigError, match=r"policy\.drawdown\.levels\[0\]\.alert_level=\"x\": Input should be a valid integer"):
        apply_changes(CFG, [("policy.drawdown.levels[0].alert_level", "x")])


def test_ladder_order_is_rechecked_across_the_whole_config():
    # moving level 0 above level 1 breaks the ladder's increasing order
    with pytest.raises(ConfigError, match=r"^policy\.drawdown\."):
        apply_changes(CFG, [("policy.drawdown.levels[0].threshold", 0.09)])


def test_apply_threshold_changes_applies_in_time_order_later_wins():
    # Arrange: recorded out of order; the later (0.0012) must win
    changes = pl.DataFrame({
        "key": ["policy.var.levels[0].threshold", "policy.var.levels[0].threshold", "policy.gate.max_notional_usd"],
        "new_value": [json.dumps(0.0012), json.dumps(0.0011), json.dumps(4_000_000.0)],
        "at": [T + timedelta(seconds=5), T, T],
    })
    # Act
    out = apply_threshold_changes(CFG, changes)
    # Assert
    assert out.policy.var.levels[0].threshold == 0.0012
    assert out.policy.gate.max_notional_usd == 4_000_000.0
    assert CFG.policy.var.levels[0].threshold == 0.001  # the input config is untouched (frozen)


def test_no_changes_returns_the_same_config():
    empty = pl.DataFrame(schema={"key": pl.String, "new_value": pl.String, "at": pl.Datetime("us", "UTC")})
    assert apply_threshold_changes(CFG, empty) is CFG


def test_recorded_value_that_is_not_json_is_named():
    bad = pl.DataFrame({"key": ["policy.gate.max_notional_usd"], "new_value": ["five"], "at": [T]})
    with pytest.raises(ConfigError, match=r"policy.gate.max_notional_usd='five': recorded new_value is not JSON"):
        apply_threshold_changes(CFG, bad)


def test_authority_bounds_relative_change_by_level():
    pol = CFG.policy
    check_change_authority("policy.var.levels[0].threshold", 0.001, 0.0012, 1, pol)  # 20 %: Risk Manager may
    with pytest.raises(AuthorityError, match=r"change of 50% from 0.001 exceeds 20% for authority_level=1 \(Risk Manager\)"):
        check_change_authority("policy.var.levels[0].threshold", 0.001, 0.0015, 1, pol)
    check_change_authority("policy.var.levels[0].threshold", 0.001, 0.0015, 3, pol)  # CRO: up to 100 %


def test_non_numeric_and_authority_changes_need_high_levels():
    pol = CFG.policy
    with pytest.raises(AuthorityError, match=r"not measurable as a percentage .* needs authority_level>=4"):
        check_change_authority("policy.var.levels[3].trading_mode", "REDUCE_ONLY", "ACTIVE", 3, pol)
    check_change_authority("policy.var.levels[3].trading_mode", "REDUCE_ONLY", "ACTIVE", 4, pol)
    with pytest.raises(AuthorityError, match=r"^policy\.authority\[1\]\.max_threshold_change: changing authority settings needs authority_level=5, got 4 \(CEO/CTO\)$"):
        check_change_authority("policy.authority.1.max_threshold_change", 0.2, 0.21, 4, pol)


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=1e-4, max_value=0.0019, allow_nan=False))
def test_property_valid_first_var_threshold_round_trips(x):
    # any value below the next step keeps the ladder valid and is read back exactly
    out = apply_changes(CFG, [("policy.var.levels[0].threshold", x)])
    assert out.policy.var.levels[0].threshold == x
    assert apply_threshold_changes(CFG, pl.DataFrame({"key": ["policy.var.levels[0].threshold"],
                                                      "new_value": [json.dumps(x)], "at": [T]})) == out
