"""The risk policy engine: config, ladders, breaker, stress detection, trigger evaluation, sizing.

Pure: ``now``, metrics and previous state in; new state, alerts, actions and the
next cycle interval out. No I/O, no clock.
"""

from risklib.core.policy._breaker import step_breakers, transition_breaker
from risklib.core.policy._config import (
    RULES,
    AuthorityLevel,
    BreakerConfig,
    GateConfig,
    Ladder,
    PolicyConfig,
    RiskBudgetConfig,
    RiskLevelsConfig,
    SizingConfig,
    Step,
    StrategyConfig,
    StressDetectionConfig,
    policy_from_dict,
)
from risklib.core.policy._enums import ActionKind, BreakerEffect, BreakerState, Channel, RiskLevel, TradingMode
from risklib.core.policy._evaluate import Evaluation, evaluate
from risklib.core.policy._overrides import check_override
from risklib.core.policy._sizing import (
    SIZING,
    account_position_size,
    allocate_risk_budget,
    calculate_dynamic_position_size,
    calculate_position_size,
    dynamic_multiplier,
    fractional_kelly,
    size_positions,
)
from risklib.core.policy._stress import (
    DETECTORS,
    EVENTS,
    DetectorResult,
    MarketInputs,
    StressAssessment,
    classify_vol_ratio,
    detect_correlation_breakdown,
    detect_economic_shock,
    detect_flash_crash,
    detect_liquidity_crisis,
    detect_market_stress,
    detect_regime_shift,
    detect_volatility_spike,
    parse_events,
)

__all__ = [
    "RULES", "AuthorityLevel", "BreakerConfig", "GateConfig", "Ladder", "PolicyConfig", "RiskBudgetConfig",
    "RiskLevelsConfig", "SizingConfig", "Step", "StrategyConfig", "StressDetectionConfig", "policy_from_dict",
    "ActionKind", "BreakerEffect", "BreakerState", "Channel", "RiskLevel", "TradingMode",
    "Evaluation", "check_override", "evaluate", "step_breakers", "transition_breaker", "DETECTORS", "EVENTS", "parse_events",
    "DetectorResult", "MarketInputs", "StressAssessment", "classify_vol_ratio", "detect_correlation_breakdown",
    "detect_economic_shock", "detect_flash_crash", "detect_liquidity_crisis", "detect_market_stress",
    "detect_regime_shift", "detect_volatility_spike", "SIZING", "account_position_size", "allocate_risk_budget",
    "calculate_dynamic_position_size", "calculate_position_size", "dynamic_multiplier", "fractional_kelly",
    "size_positions",
]
