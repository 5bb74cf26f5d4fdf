"""The policy as data: validated, frozen configuration with the spec's values as defaults.

Every value cites its source: "RT" is the real-time risk design document,
"INST" the institutional risk architecture document; "chosen" marks values the
spec does not give (documented beside them). Where the two documents disagree
the more protective value is the default and the comment says so.

Units: fractions are fractions (0.15 is fifteen percent), never percent;
ratios are multiples of normal (1.5 = 1.5x); seconds are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from risklib.core.policy._enums import ActionKind, BreakerEffect, Channel, TradingMode
from risklib.errors import ConfigError

_FROZEN = ConfigDict(frozen=True, extra="forbid")

Unit = Literal["fraction", "ratio", "score", "seconds", "level"]
#: Actions that change positions; they wait for the breach to be confirmed.
CUT_ACTIONS = frozenset({ActionKind.REDUCE, ActionKind.CLOSE, ActionKind.CLOSE_ALL})


class Step(BaseModel):
    """One step of a ladder: fires when the rule's metric passes ``threshold``.

    Effects are applied while the step is held (escalation immediate,
    de-escalation after the ladder's margin and dwell). ``action`` with
    ``fraction`` cuts positions only once the breach is confirmed:
    ``confirm_evaluations`` consecutive evaluations at or above this step
    spanning at least ``confirm_duration_s``.
    """

    model_config = _FROZEN
    name: str
    threshold: float
    alert_level: int = Field(ge=0, le=5)
    sizing_multiplier: float = Field(1.0, ge=0.0, le=1.0)
    trading_mode: TradingMode = TradingMode.ACTIVE
    cadence_s: float | None = Field(None, gt=0.0)
    action: ActionKind = ActionKind.NONE
    fraction: float = Field(0.0, ge=0.0, le=1.0)  # share of each position the action cuts
    breaker: BreakerEffect = BreakerEffect.NONE
    confirm_evaluations: int = Field(1, ge=1, le=100)
    confirm_duration_s: float = Field(0.0, ge=0.0)
    signal_filter: float = Field(0.0, ge=0.0, le=10.0)  # extra strictness of signal thresholds (+0.2 = 20% stricter)
    risk_budget: float = Field(1.0, ge=0.0, le=1.0)  # share of the risk budget allocated
    source: str = ""

    @model_validator(mode="after")
    def _action_fraction(self) -> Step:
        if self.action in CUT_ACTIONS and self.fraction <= 0.0:
            raise ValueError(f"fraction={self.fraction}: action {self.action.value} needs a fraction in (0, 1]")
        if self.action is ActionKind.CLOSE_ALL and self.fraction != 1.0:
            raise ValueError(f"fraction={self.fraction}: CLOSE_ALL closes everything, fraction must be 1.0")
        return self


class Ladder(BaseModel):
    """A ladder of steps over one metric, in increasing threshold order.

    ``inclusive`` decides whether a metric equal to a threshold fires it
    (``>=``) or not (``>``). A held step clears when the metric is below
    ``threshold * (1 - clear_margin)`` continuously for ``dwell_s``.
    """

    model_config = _FROZEN
    metric: str
    unit: Unit
    basis: str
    inclusive: bool = False
    clear_margin: float = Field(0.1, ge=0.0, lt=1.0)
    dwell_s: float = Field(300.0, ge=0.0)
    override_authority: int = Field(1, ge=1, le=5)  # lowest authority level that may override this rule
    levels: tuple[Step, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Ladder:
        prev = None
        for i, step in enumerate(self.levels):
            t = step.threshold
            key = f"levels[{i}].threshold={t:g}"
            if t != t:
                raise ValueError(f"{key}: must be a number")
            if self.unit == "fraction" and not 0.0 < t < 1.0:
                hint = f"; did you mean {t / 100:g}?" if 1.0 <= t < 100.0 else ""
                raise ValueError(f"{key}: must be a fraction in (0, 1){hint}")
            if self.unit == "ratio" and t < 1.0:
                raise ValueError(f"{key}: must be a multiple of normal >= 1")
            if self.unit == "score" and not 0.0 < t <= 100.0:
                raise ValueError(f"{key}: must be a score in (0, 100]")
            if self.unit in ("seconds", "level") and t <= 0.0:
                raise ValueError(f"{key}: must be > 0")
            if prev is not None and t <= prev:
                raise ValueError(f"{key}: ladder out of order, must be > levels[{i - 1}].threshold={prev:g}")
            prev = t
        return self

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(s.threshold for s in self.levels)


class DataRule(BaseModel):
    """Fail closed on missing, stale or invalid metrics (rule ``data``)."""

    model_config = _FROZEN
    alert_level: int = Field(2, ge=1, le=5)
    trading_mode: TradingMode = TradingMode.REDUCE_ONLY
    required_metrics: tuple[str, ...] = (
        "equity_usd", "peak_equity_usd", "drawdown", "daily_loss", "exposure_pct",
        "var_99", "vol_ratio", "risk_score",
    )


class FeedUnknown(BaseModel):
    """What to do when the feed's silence is unknown (no market inputs): fail closed."""

    model_config = _FROZEN
    alert_level: int = Field(2, ge=1, le=5)
    trading_mode: TradingMode = TradingMode.REDUCE_ONLY


class BreakerConfig(BaseModel):
    """Circuit breaker timing (INST "Circuit Breaker System"; timings chosen, the spec gives none)."""

    model_config = _FROZEN
    cooldown_s: float = Field(900.0, ge=0.0)  # minimum time OPEN before probing
    recovery_dwell_s: float = Field(300.0, ge=0.0)  # trip conditions absent and data valid this long before HALF_OPEN
    probe_s: float = Field(900.0, ge=0.0)  # HALF_OPEN this long without a trip before CLOSED
    half_open_sizing: float = Field(0.25, ge=0.0, le=1.0)  # probe trading at reduced size
    half_open_max_positions: int = Field(3, ge=0)
    alert_level_open: int = Field(4, ge=1, le=5)  # RT level 4: emergency + automated action (halt)
    alert_level_half_open: int = Field(2, ge=1, le=5)
    reset_authority: int = Field(3, ge=1, le=5)  # manual OPEN -> CLOSED: RT level 3 "system override"


class RiskLevelsConfig(BaseModel):
    """Risk levels, base position and leverage caps (INST "Risk Level Adjustments", "Emergency Mode Constraints")."""

    model_config = _FROZEN
    # risk_score boundaries MINIMAL|LOW|MEDIUM|HIGH|CRITICAL. 80 and 95 are INST's warning/critical
    # risk-score levels; 25 and 50 are chosen.
    score_thresholds: tuple[float, float, float, float] = (25.0, 50.0, 80.0, 95.0)
    # alert level -> minimum risk level rank (0 MINIMAL .. 4 CRITICAL); chosen so that a fired ladder tightens caps.
    alert_floor: tuple[int, int, int, int, int, int] = (0, 1, 2, 3, 4, 4)
    # Base position as a fraction of equity. INST prose: HIGH/CRITICAL 0.25%; INST code listing gives 0.5%
    # for everything below LOW; the prose (smaller) wins.
    base_position: dict[str, float] = {"MINIMAL": 0.02, "LOW": 0.01, "MEDIUM": 0.005, "HIGH": 0.0025, "CRITICAL": 0.0025}
    max_leverage: dict[str, float] = {"MINIMAL": 20.0, "LOW": 15.0, "MEDIUM": 10.0, "HIGH": 5.0, "CRITICAL": 5.0}
    emergency_leverage: float = Field(5.0, gt=0.0)
    # INST code uses 0.5% in emergency mode; HIGH/CRITICAL prose 0.25% is smaller: emergency uses the min of both.
    emergency_position: float = Field(0.005, gt=0.0, lt=1.0)
    emergency_stop_loss: float = Field(0.10, gt=0.0, lt=1.0)
    emergency_max_positions: int = Field(3, ge=0)
    normal_stop_loss: float = Field(0.05, gt=0.0, lt=1.0)
    normal_max_positions: int = Field(20, ge=0)  # chosen; the spec gives no normal cap

    @field_validator("base_position")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not 0.0 < x < 1.0:
                hint = f"; did you mean {x / 100:g}?" if 1.0 <= x < 100.0 else ""
                raise ValueError(f"{k}={x:g}: must be a fraction in (0, 1){hint}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> RiskLevelsConfig:
        need = {"MINIMAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"}
        for name in ("base_position", "max_leverage"):
            have = set(getattr(self, name))
            if have != need:
                raise ValueError(f"{name}: keys must be exactly {sorted(need)}, got {sorted(have)}")
        if list(self.score_thresholds) != sorted(self.score_thresholds):
            raise ValueError(f"score_thresholds={list(self.score_thresholds)}: out of order")
        return self


class RiskBudgetConfig(BaseModel):
    """Risk budget allocation (RT "Position Sizing Framework")."""

    model_config = _FROZEN
    conservative: float = Field(0.40, ge=0.0, le=1.0)
    moderate: float = Field(0.35, ge=0.0, le=1.0)
    aggressive: float = Field(0.20, ge=0.0, le=1.0)
    reserve: float = Field(0.05, ge=0.0, le=1.0)
    max_single_position: float = Field(0.02, gt=0.0, lt=1.0)  # of total capital

    @model_validator(mode="after")
    def _sums(self) -> RiskBudgetConfig:
        total = self.conservative + self.moderate + self.aggressive + self.reserve
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"conservative+moderate+aggressive+reserve={total:g}: must sum to 1")
        return self


class SizingConfig(BaseModel):
    """Position sizing parameters (RT "Dynamic Position Sizing Algorithm", INST "Position Sizing Algorithm")."""

    model_config = _FROZEN
    regime_multipliers: dict[str, float] = {
        "bull_low_vol": 1.2, "bull_high_vol": 0.8, "bear_low_vol": 0.6, "bear_high_vol": 0.3, "sideways": 0.9,
    }
    unknown_regime_multiplier: float = Field(0.7, gt=0.0)
    min_multiplier: float = Field(0.05, ge=0.0, le=1.0)
    max_multiplier: float = Field(1.0, ge=0.0, le=1.0)
    drawdown_scale: float = Field(0.15, gt=0.0)
    var_scale: float = Field(0.004, gt=0.0)  # RT uses var_utilization / 0.4; utilisation is VaR / the 0.4% red-zone limit
    kelly_fraction: float = Field(0.25, gt=0.0, le=1.0)  # chosen: quarter Kelly
    correlation_threshold: float = Field(0.8, gt=0.0, lt=1.0)  # RT emergency trigger "Correlation Breakdown >0.8"
    correlated_cut: float = Field(0.30, ge=0.0, le=1.0)  # RT "Reduce correlated positions by 30%"
    # INST volatility in percent (annualised). Prose: >15 cut 70%, 10-15 cut 25%, <10 full; the code
    # listing gives 1 - vol/15*0.5. The protective variant takes the smaller factor of the two.
    high_vol_pct: float = Field(15.0, gt=0.0)
    medium_vol_pct: float = Field(10.0, gt=0.0)
    balance_scale_usd: float = Field(1000.0, gt=0.0)
    min_position_usd: float = Field(1.0, ge=0.0)


class StressDetectionConfig(BaseModel):
    """Stress event detector rules (RT "Stress Event Detection System"); thresholds chosen unless cited."""

    model_config = _FROZEN
    vol_levels: tuple[float, float, float, float] = (1.5, 2.0, 3.0, 5.0)  # RT "Stress Event Classifications"
    spread_widening: float = Field(3.0, gt=1.0)  # spread / normal spread that flags an instrument
    liquidity_share: float = Field(0.25, gt=0.0, le=1.0)  # share of instruments stressed for a crisis
    correlation_jump: float = Field(0.5, gt=0.0, le=2.0)  # max |corr - normal corr|
    correlation_level: float = Field(0.8, gt=0.0, lt=1.0)  # RT "Correlation Breakdown >0.8" (mean |corr|)
    flash_sigmas: float = Field(5.0, gt=0.0)  # move within the window, in per-bar sigmas * sqrt(bars)
    flash_window_bars: int = Field(5, ge=1)
    rebound_share: float = Field(0.5, gt=0.0, le=1.0)  # retrace share that counts as a rebound
    regime_share: float = Field(0.5, gt=0.0, le=1.0)  # share of instruments changing regime
    event_before_s: float = Field(900.0, ge=0.0)
    event_after_s: float = Field(1800.0, ge=0.0)
    event_impacts: tuple[str, ...] = ("high",)
    # stress level each detector signals when it fires
    liquidity_level: int = Field(2, ge=1, le=4)
    liquidity_missing_level: int = Field(3, ge=1, le=4)
    correlation_breakdown_level: int = Field(2, ge=1, le=4)
    flash_crash_level: int = Field(4, ge=1, le=4)
    flash_rebound_level: int = Field(3, ge=1, le=4)
    regime_shift_level: int = Field(1, ge=1, le=4)
    economic_shock_level: int = Field(2, ge=1, le=4)
    actions: tuple[str, str, str, str, str] = (
        "Normal operations",
        "Enhanced monitoring",
        "Position size reduction (20%); conservative signal filtering",
        "Position size reduction (50%); halt new entries",
        "Emergency position closure; complete trading halt",
    )


class AuthorityLevel(BaseModel):
    """What an override of one authority level may do (RT "Override Authority Levels")."""

    model_config = _FROZEN
    role: str
    max_threshold_change: float = Field(ge=0.0)  # |scale - 1| allowed for "adjust"
    adjust_max_s: float = Field(gt=0.0)  # longest adjust; overrides always expire
    suspend_max_s: float = Field(ge=0.0)  # 0: may not suspend a rule


def _authority_default() -> dict[int, AuthorityLevel]:
    return {
        1: AuthorityLevel(role="Risk Manager", max_threshold_change=0.20, adjust_max_s=86400.0, suspend_max_s=0.0),
        2: AuthorityLevel(role="Head of Trading", max_threshold_change=0.20, adjust_max_s=86400.0, suspend_max_s=300.0),
        3: AuthorityLevel(role="Chief Risk Officer", max_threshold_change=1.0, adjust_max_s=86400.0, suspend_max_s=1800.0),
        4: AuthorityLevel(role="CEO/CTO", max_threshold_change=10.0, adjust_max_s=86400.0, suspend_max_s=86400.0),
        5: AuthorityLevel(role="Board", max_threshold_change=10.0, adjust_max_s=30 * 86400.0, suspend_max_s=30 * 86400.0),
    }


class GateConfig(BaseModel):
    """Pre-trade gate limits. Bases: equity includes unrealized P&L; exposures include pending orders."""

    model_config = _FROZEN
    max_state_age_s: float = Field(660.0, gt=0.0)  # dead man's switch: two normal cycles + 60 s grace (chosen)
    cadence_age_factor: float = Field(2.0, ge=1.0)  # also stale when older than factor * next_cadence_s + grace
    cadence_age_grace_s: float = Field(60.0, ge=0.0)
    price_band: float = Field(0.01, gt=0.0, lt=1.0)  # |price/last - 1|; chosen fat-finger band
    max_notional_usd: float = Field(5_000_000.0, gt=0.0)  # per order; chosen
    max_gross_exposure: float = Field(0.5, gt=0.0)  # INST "Total exposure > 50% of account value" (equity basis)
    max_net_exposure: float = Field(0.5, gt=0.0)  # net |exposure| / equity; no looser than gross (chosen)
    firm_max_gross_usd: float | None = Field(None, gt=0.0)  # across all accounts, incl. pending; None = off
    rate_limit_orders: int = Field(50, ge=1)  # per account per window; chosen
    rate_window_s: float = Field(1.0, gt=0.0)
    resize_to_fit: bool = True  # reduce quantity to the largest that fits instead of rejecting
    min_quantity: float = Field(1.0, ge=0.0)  # a resized order smaller than this is rejected
    restricted_instruments: tuple[str, ...] = ()
    instrument_max_usd: dict[str, float] = {}  # gross |notional| per account and instrument
    strategy_max_usd: dict[str, float] = {}  # gross |notional| per account and strategy


class StrategyConfig(BaseModel):
    """Per-strategy overrides: risk class for the budget, sizing scale, limits."""

    model_config = _FROZEN
    risk_class: Literal["conservative", "moderate", "aggressive"] = "moderate"
    sizing_multiplier: float = Field(1.0, ge=0.0, le=1.0)
    max_position_usd: float | None = Field(None, gt=0.0)
    max_gross_usd: float | None = Field(None, gt=0.0)


class AlertChannels(BaseModel):
    """Channels per alert level (RT "Alert Levels")."""

    model_config = _FROZEN
    level_1: tuple[Channel, ...] = (Channel.EMAIL, Channel.DASHBOARD)
    level_2: tuple[Channel, ...] = (Channel.SMS, Channel.DASHBOARD)
    level_3: tuple[Channel, ...] = (Channel.PHONE, Channel.SMS, Channel.DASHBOARD)
    level_4: tuple[Channel, ...] = (Channel.PHONE, Channel.SMS, Channel.EMAIL, Channel.DASHBOARD)
    level_5: tuple[Channel, ...] = (Channel.PHONE, Channel.SMS, Channel.EMAIL, Channel.DASHBOARD, Channel.MANAGEMENT)


RULES = ("drawdown", "volatility", "stress", "var", "daily_loss", "exposure", "risk_score", "correlation", "feed")


class PolicyConfig(BaseModel):
    """The whole policy. Defaults are the spec's values (see ``risklib/defaults/policy.toml``)."""

    model_config = _FROZEN
    normal_cadence_s: float = Field(300.0, gt=0.0)  # RT volatility "Normal: 5-minute intervals"
    continuous_cadence_s: float = Field(1.0, gt=0.0)  # RT "Continuous (real-time)"; RT price feed 1-second updates
    increased_cadence_s: float = Field(60.0, gt=0.0)  # RT VaR yellow "Increased frequency" (chosen = 1 min)
    confirm_recheck_s: float = Field(5.0, gt=0.0)  # re-evaluate this soon while a cut awaits confirmation
    channels: AlertChannels = AlertChannels()
    drawdown: Ladder
    volatility: Ladder
    stress: Ladder
    var: Ladder
    daily_loss: Ladder
    exposure: Ladder
    risk_score: Ladder
    correlation: Ladder
    feed: Ladder
    feed_unknown: FeedUnknown = FeedUnknown()
    data: DataRule = DataRule()
    breaker: BreakerConfig = BreakerConfig()
    risk_levels: RiskLevelsConfig = RiskLevelsConfig()
    risk_budget: RiskBudgetConfig = RiskBudgetConfig()
    sizing: SizingConfig = SizingConfig()
    stress_detection: StressDetectionConfig = StressDetectionConfig()
    authority: dict[int, AuthorityLevel] = Field(default_factory=_authority_default)
    gate: GateConfig = GateConfig()
    #: account group -> rule -> thresholds replacing the ladder's (same length, same order rules)
    groups: dict[str, dict[str, tuple[float, ...]]] = {}
    strategies: dict[str, StrategyConfig] = {}

    @model_validator(mode="after")
    def _groups(self) -> PolicyConfig:
        for group, rules in self.groups.items():
            for rule, thresholds in rules.items():
                if rule not in RULES:
                    raise ValueError(f"groups.{group}.{rule}: unknown rule; known: {list(RULES)}")
                ladder: Ladder = getattr(self, rule)
                if len(thresholds) != len(ladder.levels):
                    raise ValueError(
                        f"groups.{group}.{rule}={list(thresholds)}: needs {len(ladder.levels)} thresholds"
                    )
                try:
                    Ladder.model_validate(
                        ladder.model_dump() | {"levels": [s.model_dump() | {"threshold": t} for s, t in zip(ladder.levels, thresholds)]}
                    )
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f"groups.{group}.{rule}.{msg}") from None
        if set(self.authority) != {1, 2, 3, 4, 5}:
            raise ValueError(f"authority: levels must be exactly 1..5, got {sorted(self.authority)}")
        return self

    def ladder(self, rule: str) -> Ladder:
        return getattr(self, rule)

    def thresholds_for(self, rule: str, group: str | None) -> tuple[float, ...]:
        """Thresholds of ``rule`` for an account ``group`` (the group's override or the default)."""
        if group is not None and group in self.groups and rule in self.groups[group]:
            return tuple(self.groups[group][rule])
        return self.ladder(rule).thresholds


def _format_errors(exc: ValidationError, root: str) -> str:
    lines = []
    for err in exc.errors():
        path = root
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error":
            # our validators start with a key relative to the model that raised them
            lines.append(f"{path}.{msg}" if "=" in msg.split(":")[0] or msg.split(":")[0].isidentifier() else f"{path}: {msg}")
        elif err["type"] == "missing":
            lines.append(f"{path}: required key missing")
        else:
            lines.append(f"{path}={err.get('input')!r}: {msg}")
    return "; ".join(lines)


def policy_from_dict(data: Mapping[str, Any]) -> PolicyConfig:
    """Validate a ``[policy]`` table into a :class:`PolicyConfig`.

    Parameters
    ----------
    data
        The ``[policy]`` table, complete on its own (the ladders have no built-in
        defaults): to change a few values start from :func:`risklib.config.default_policy_dict`.
        Files, and the shipped defaults, are read by :func:`risklib.config.load_policy_config`.

    Returns
    -------
    PolicyConfig
        Frozen, validated.

    Raises
    ------
    ConfigError
        Naming the key path and value, e.g.
        ``policy.drawdown.levels[2].threshold=15: must be a fraction in (0, 1); did you mean 0.15?``.
    """
    try:
        return PolicyConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, "policy")) from None
