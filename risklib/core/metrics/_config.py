"""Configuration of the metrics engine: frozen, unknown keys rejected, spec values as defaults.

"RT" is the real-time risk design document, "INST" the institutional risk
architecture document; "chosen" marks values the spec does not give. The
shipped defaults are mirrored, commented, in ``risklib/defaults/metrics.toml``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MetricsConfig(BaseModel):
    """Windows, factors and score mappings of the metrics engine.

    Parameters
    ----------
    periods_per_year : int
        Annualisation factor: bars per year (252 trading days; 260 for FX
        week-days, 365 for crypto). Volatility is annualised by
        ``sqrt(periods_per_year)``.
    vol_window_bars : int
        Bars of the "current" volatility (rolling sample standard deviation).
    normal_vol_window_bars : int
        Bars of the "normal" volatility baseline, taken immediately *before*
        the current window (so a spike never inflates its own baseline).
    ewma_lambda : float
        RiskMetrics decay of the EWMA variance, in (0, 1).
    min_history_bars : int
        Fewest return bars the book metrics accept; fewer raise ``MetricsError``.
    correlation_threshold : float
        Pair correlation above which a pair is flagged (RT "Correlation Breakdown > 0.8").
    include_mean : bool
        Whether parametric / Cornish-Fisher / Monte Carlo VaR subtract the
        estimated mean return. False (chosen, protective): over one bar the
        drift estimate is noise, and a positive one would lower the VaR.
    regime_window_bars, regime_sideways_sharpe, regime_high_vol_ratio
        Market regime rules (see :func:`classify_regime`).
    score_weights : tuple of 4 floats
        INST "Risk Score" weights: exposure 0.30, P&L 0.25, leverage 0.25, position 0.20.
    score_exposure_full, score_leverage_full, score_pnl_full, score_positions_full, score_concentration_floor
        Sub-score mappings (see :func:`risk_score`).
    var_horizon_bars : int
        VaR/ES horizon in bars; book VaR, ES, position VaR and risk contributions
        are the one-bar figures times ``sqrt(var_horizon_bars)``.
    parametric_cov : {"window", "ewma"}
        Covariance behind the parametric VaR and component VaR of the book.
    mc_scenarios, mc_seed, mc_dof, mc_dtype
        Monte Carlo VaR: number of scenarios, seed, Student-t degrees of freedom, float dtype.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    periods_per_year: int = Field(252, gt=0)  # bars per year; FX users pass 260, crypto 365
    vol_window_bars: int = Field(20, ge=2)  # chosen: about one trading month of daily bars
    normal_vol_window_bars: int = Field(250, ge=2)  # chosen: about one year before the current window
    ewma_lambda: float = Field(0.94, gt=0.0, lt=1.0)  # RiskMetrics daily decay
    min_history_bars: int = Field(30, ge=3)  # chosen: fewer bars give no usable 99% tail
    correlation_threshold: float = Field(0.8, gt=0.0, lt=1.0)  # RT "Correlation Breakdown >0.8"
    include_mean: bool = False  # chosen, protective (see class docstring)
    regime_window_bars: int = Field(60, ge=2)  # chosen
    regime_sideways_sharpe: float = Field(0.5, ge=0.0)  # chosen: |annualised Sharpe| below this is sideways
    regime_high_vol_ratio: float = Field(1.5, gt=0.0)  # RT "Elevated Volatility (1.5x)"
    score_weights: tuple[float, float, float, float] = (0.30, 0.25, 0.25, 0.20)  # INST risk score
    # INST "Total exposure > 50% of account value" halts trading, so exposure scores 100 at 50%.
    # INST also allows 5-20x leverage on the same basis; the two read together contradict each other
    # and the protective reading (50%) is kept for the exposure sub-score.
    score_exposure_full: float = Field(0.50, gt=0.0)
    score_leverage_full: float = Field(5.0, gt=0.0)  # INST "Maximum leverage: 5x (conservative)"
    score_pnl_full: float = Field(0.02, gt=0.0)  # INST "Daily loss > 2% (emergency)"
    score_positions_full: int = Field(20, ge=1)  # chosen: the policy's normal position cap
    score_concentration_floor: float = Field(0.20, ge=0.0, lt=1.0)  # chosen: concentration at or below scores 0
    # VaR/ES horizon in bars: one-bar figures are scaled by sqrt(var_horizon_bars)
    # (square-root-of-time, i.i.d. bars). 1 = the bar itself (a day for daily data).
    var_horizon_bars: int = Field(1, ge=1)
    # Covariance of the parametric VaR and its Euler components: the whole window,
    # or the EWMA (RiskMetrics) estimate, which reacts to a spike within a few bars.
    parametric_cov: Literal["window", "ewma"] = "window"
    mc_scenarios: int = Field(10_000, ge=100)
    mc_seed: int = Field(20260302, ge=0)
    mc_dof: float = Field(5.0, gt=2.0)  # Student-t degrees of freedom (> 2 so the variance exists)
    mc_dtype: Literal["float32", "float64"] = "float32"  # float32 halves memory; same draws: VaR within 1e-5 relative

    @model_validator(mode="after")
    def _consistent(self) -> MetricsConfig:
        total = sum(self.score_weights)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"score_weights={list(self.score_weights)}: must sum to 1, sum is {total:g}")
        if any(w < 0 for w in self.score_weights):
            raise ValueError(f"score_weights={list(self.score_weights)}: weights must be >= 0")
        if self.min_history_bars < self.vol_window_bars + 2:
            raise ValueError(
                f"min_history_bars={self.min_history_bars}: must be >= vol_window_bars + 2 = {self.vol_window_bars + 2}"
                " (the normal-volatility baseline needs bars before the current window)"
            )
        return self
