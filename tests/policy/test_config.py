"""Policy config: shipped spec values, refusal of bad configs with the key named."""

from __future__ import annotations

import pytest

from risklib.config import default_policy_dict, load_policy_config
from risklib.core.policy._config import (
    AlertChannels,
    BreakerConfig,
    DataRule,
    GateConfig,
    RiskBudgetConfig,
    RiskLevelsConfig,
    SizingConfig,
    StressDetectionConfig,
    _authority_default,
)
from risklib.errors import ConfigError


def test_shipped_config_has_spec_ladders(cfg):
    # Arrange / Act: the fixture loads the shipped file
    # Assert
    assert cfg.drawdown.thresholds == (0.02, 0.05, 0.08, 0.10, 0.15)
    assert [s.action.value for s in cfg.drawdown.levels] == ["NONE", "REDUCE", "NONE", "REDUCE", "CLOSE"]
    assert [s.fraction for s in cfg.drawdown.levels] == [0.0, 0.2, 0.0, 0.5, 0.5]
    assert cfg.drawdown.levels[0].cadence_s == 30.0
    assert cfg.volatility.thresholds == (1.5, 2.0, 3.0)
    assert [s.sizing_multiplier for s in cfg.volatility.levels] == [0.8, 0.6, 0.3]
    assert [s.signal_filter for s in cfg.volatility.levels] == [0.2, 0.4, 0.7]
    assert [s.risk_budget for s in cfg.volatility.levels] == [0.9, 0.75, 0.5]
    assert [s.cadence_s for s in cfg.volatility.levels] == [60.0, 30.0, 1.0]
    assert cfg.var.thresholds == (0.001, 0.002, 0.004, 0.005)
    assert cfg.daily_loss.thresholds == (0.01, 0.02)
    assert cfg.exposure.thresholds == (0.5,)
    assert cfg.risk_score.thresholds == (80.0, 95.0)
    assert cfg.feed.thresholds[-1] == 120.0 and cfg.feed.levels[-1].action.value == "CLOSE_ALL"
    assert cfg.risk_levels.base_position == {"MINIMAL": 0.02, "LOW": 0.01, "MEDIUM": 0.005, "HIGH": 0.0025,
                                             "CRITICAL": 0.0025}
    assert cfg.risk_levels.max_leverage["MINIMAL"] == 20 and cfg.risk_levels.emergency_leverage == 5
    assert cfg.risk_levels.emergency_max_positions == 3 and cfg.risk_levels.emergency_stop_loss == 0.10
    assert (cfg.risk_budget.conservative, cfg.risk_budget.moderate, cfg.risk_budget.aggressive,
            cfg.risk_budget.reserve, cfg.risk_budget.max_single_position) == (0.40, 0.35, 0.20, 0.05, 0.02)
    assert cfg.normal_cadence_s == 300.0


def test_shipped_file_matches_python_defaults(cfg):
    # Arrange / Act / Assert: the TOML and the models' defaults agree (one policy, two spellings)
    assert cfg.risk_levels == RiskLevelsConfig()
    assert cfg.gate == GateConfig()
    assert cfg.sizing == SizingConfig()
    assert cfg.breaker == BreakerConfig()
    assert cfg.stress_detection == StressDetectionConfig()
    assert cfg.authority == _authority_default()
    assert cfg.channels == AlertChannels()
    assert cfg.risk_budget == RiskBudgetConfig()
    assert cfg.data == DataRule()


def _edited(path: list, value):
    d = default_policy_dict()
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["drawdown", "levels", 2, "threshold"], 15,
         r"^policy\.drawdown\.levels\[2\]\.threshold=15: must be a fraction in \(0, 1\); did you mean 0\.15\?$"),
        (["var", "levels", 1, "threshold"], 0.0005,
         r"^policy\.var\.levels\[1\]\.threshold=0\.0005: ladder out of order, must be > levels\[0\]\.threshold=0\.001$"),
        (["drawdown", "levels", 0, "threshold"], -0.02,
         r"^policy\.drawdown\.levels\[0\]\.threshold=-0\.02: must be a fraction in \(0, 1\)$"),
        (["channels", "level_1"], ["pager"], r"^policy\.channels\.level_1\[0\]='pager': Input should be"),
        (["gate", "price_band"], -1, r"^policy\.gate\.price_band=-1: Input should be greater than 0$"),
        (["volatility", "levels", 0, "threshold"], 0.5,
         r"^policy\.volatility\.levels\[0\]\.threshold=0\.5: must be a multiple of normal >= 1$"),
        (["risk_budget", "reserve"], 0.10, r"^policy\.risk_budget\.conservative\+moderate\+aggressive\+reserve=1\.05"),
        (["drawdown", "levels", 1, "fraction"], 0.0,
         r"^policy\.drawdown\.levels\[1\]\.fraction=0\.0: action REDUCE needs a fraction in \(0, 1\]$"),
        (["risk_levels", "base_position", "LOW"], 1.0,
         r"^policy\.risk_levels\.base_position\.LOW=1: must be a fraction in \(0, 1\); did you mean 0\.01\?$"),
    ],
)
def test_bad_config_is_refused_naming_the_key(path, value, message):
    # Arrange
    data = _edited(path, value)
    # Act / Assert
    with pytest.raises(ConfigError, match=message):
        load_policy_config(data)


def test_unknown_key_is_refused():
    # Arrange
    data = default_policy_dict() | {"drawdwn": {}}
    # Act / Assert
    with pytest.raises(ConfigError, match=r"policy\.drawdwn=\{\}: Extra inputs are not permitted"):
        load_policy_config(data)


def test_group_override_validated_and_applied():
    # Arrange
    ok = default_policy_dict() | {"groups": {"vip": {"drawdown": [0.03, 0.06, 0.09, 0.12, 0.2]}}}
    bad = default_policy_dict() | {"groups": {"vip": {"drawdown": [0.03, 0.06]}}}
    bad_order = default_policy_dict() | {"groups": {"vip": {"var": [0.001, 0.003, 0.002, 0.005]}}}
    # Act
    cfg = load_policy_config(ok)
    # Assert
    assert cfg.thresholds_for("drawdown", "vip") == (0.03, 0.06, 0.09, 0.12, 0.2)
    assert cfg.thresholds_for("drawdown", "retail") == cfg.drawdown.thresholds
    with pytest.raises(ConfigError, match=r"groups\.vip\.drawdown=\[0\.03, 0\.06\]: needs 5 thresholds"):
        load_policy_config(bad)
    with pytest.raises(ConfigError, match=r"groups\.vip\.var\.levels\[2\]\.threshold=0\.002: ladder out of order"):
        load_policy_config(bad_order)


def test_file_errors_name_the_file(tmp_path):
    # Arrange
    missing = tmp_path / "nope.toml"
    no_table = tmp_path / "empty.toml"
    no_table.write_text("[other]\nx = 1\n")
    # Act / Assert
    with pytest.raises(ConfigError, match=r"config='.*nope\.toml': file not found"):
        load_policy_config(missing)
    with pytest.raises(ConfigError, match=r"config='.*empty\.toml': no \[policy\] table"):
        load_policy_config(no_table)


def test_config_is_frozen(cfg):
    # Act / Assert
    with pytest.raises(Exception, match="frozen"):
        cfg.normal_cadence_s = 1.0
