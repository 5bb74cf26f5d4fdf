"""Risk metrics: pure functions over many series or many accounts at once (no I/O, no clock).

Conventions shared by every function (each docstring states its own):

* Returns are *simple* per-bar returns unless a name says ``log``.
* Series arrays are ``(n_series, T)``, time along axis 1, oldest first;
  instrument matrices from the pipeline are ``(T, N)``.
* VaR and ES are **positive losses** (fractions of value or of equity, USD
  where the name says so); drawdown is a positive fraction of the peak.
* Historical quantiles use numpy's linear interpolation; ES averages the
  ``int((T-1)(1-level)) + 1`` worst bars (empyrical's definitions).
* Sample standard deviations use ``ddof=1``; annualisation multiplies by
  ``sqrt(periods_per_year)``, 252 by default.
* Bad input raises :class:`risklib.errors.MetricsError` (a ``ValueError``)
  naming field, row and value; the book function instead marks the affected
  accounts invalid so one bad account never poisons the rest.
"""

from risklib.core.metrics._attribution import attribute_pnl
from risklib.core.metrics._book import BookMetrics, compute_book_metrics
from risklib.core.metrics._config import MetricsConfig
from risklib.core.metrics._correlation import (
    correlated_pairs,
    correlation_index,
    correlation_matrix,
    correlation_rows,
    cov_to_corr,
    ewma_correlation,
    rolling_correlation,
)
from risklib.core.metrics._drawdown import (
    drawdown,
    drawdown_series,
    drawdown_stats,
    max_drawdown,
    update_peak,
    wealth_from_returns,
)
from risklib.core.metrics._exposure import account_exposure, concentration
from risklib.core.metrics._regime import REGIMES, classify_regime, regime_from_moments
from risklib.core.metrics._returns import (
    equity_curve,
    instrument_table,
    log_returns,
    pnl_curve,
    prices_frame_to_returns,
    simple_returns,
    usd_returns,
)
from risklib.core.metrics._risk_score import risk_score, risk_subscores
from risklib.core.metrics._series import series_risk
from risklib.core.metrics._var import (
    component_var,
    cornish_fisher_var_es,
    historical_var_es,
    monte_carlo_scenarios,
    monte_carlo_var_es,
    normal_var_es,
    parametric_var_es,
    portfolio_pnl,
    portfolio_var_es,
    tail_losses,
)
from risklib.core.metrics._volatility import (
    annual_volatility,
    ewma_covariance,
    ewma_variance,
    ewma_volatility,
    rolling_volatility,
    volatility_ratio,
    window_covariances,
)

__all__ = [
    "REGIMES",
    "BookMetrics",
    "MetricsConfig",
    "account_exposure",
    "annual_volatility",
    "attribute_pnl",
    "classify_regime",
    "component_var",
    "compute_book_metrics",
    "concentration",
    "cornish_fisher_var_es",
    "correlated_pairs",
    "correlation_index",
    "correlation_matrix",
    "correlation_rows",
    "cov_to_corr",
    "drawdown",
    "drawdown_series",
    "drawdown_stats",
    "equity_curve",
    "ewma_correlation",
    "ewma_covariance",
    "ewma_variance",
    "ewma_volatility",
    "historical_var_es",
    "instrument_table",
    "log_returns",
    "max_drawdown",
    "monte_carlo_scenarios",
    "monte_carlo_var_es",
    "normal_var_es",
    "parametric_var_es",
    "pnl_curve",
    "portfolio_pnl",
    "portfolio_var_es",
    "prices_frame_to_returns",
    "regime_from_moments",
    "risk_score",
    "risk_subscores",
    "rolling_correlation",
    "rolling_volatility",
    "series_risk",
    "simple_returns",
    "tail_losses",
    "update_peak",
    "usd_returns",
    "volatility_ratio",
    "wealth_from_returns",
    "window_covariances",
]
