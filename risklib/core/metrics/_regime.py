"""Market regime classification (bull/bear x low/high vol, sideways) used by position sizing.

Rules (documented defaults in :class:`MetricsConfig`), per series over the
last ``regime_window_bars`` simple returns:

1. ``sharpe = mean / std * sqrt(periods_per_year)`` (annualised, std ddof=1).
2. ``|sharpe| < regime_sideways_sharpe`` (or std = 0) -> ``sideways``.
3. Otherwise ``bull`` if ``sharpe > 0`` else ``bear``, suffixed ``_high_vol``
   when the volatility ratio (current / normal) is at least
   ``regime_high_vol_ratio`` (RT "Elevated volatility 1.5x"), else ``_low_vol``.

Labels are the keys of the spec's ``regime_multipliers``: ``bull_low_vol``,
``bull_high_vol``, ``bear_low_vol``, ``bear_high_vol``, ``sideways``.
"""

from __future__ import annotations

import numpy as np

from risklib.core.metrics._validate import as_2d, check_finite, check_length
from risklib.errors import MetricsError

REGIMES = ("bull_low_vol", "bull_high_vol", "bear_low_vol", "bear_high_vol", "sideways")


def regime_from_moments(
    mean: np.ndarray,
    std: np.ndarray,
    vol_ratio: np.ndarray,
    *,
    periods_per_year: int = 252,
    sideways_sharpe: float = 0.5,
    high_vol_ratio: float = 1.5,
) -> np.ndarray:
    """Regime labels from per-bar mean, std and volatility ratio (arrays of equal shape); NaN input -> ``None``."""
    mean, std, vr = (np.asarray(a, dtype=np.float64) for a in (mean, std, vol_ratio))
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(std > 0, mean / std * np.sqrt(periods_per_year), 0.0)
    # code: 0 bull_low_vol, 1 bull_high_vol, 2 bear_low_vol, 3 bear_high_vol, 4 sideways, 5 unknown
    code = np.where(sharpe > 0, 0, 2) + (vr >= high_vol_ratio)
    code = np.where(np.abs(sharpe) < sideways_sharpe, 4, code)
    code = np.where(np.isfinite(mean) & np.isfinite(std) & ~np.isnan(vr), code, 5)
    return np.array([*REGIMES, None], dtype=object)[code]


def classify_regime(
    returns: np.ndarray,
    vol_ratio: np.ndarray,
    *,
    window: int = 60,
    periods_per_year: int = 252,
    sideways_sharpe: float = 0.5,
    high_vol_ratio: float = 1.5,
) -> np.ndarray:
    """Regime label per row of a return series array (n_series, T), from its last ``window`` bars.

    Parameters
    ----------
    returns : np.ndarray, shape (n_series, T)
        Simple returns, oldest first.
    vol_ratio : np.ndarray (n_series,)
        Current / normal volatility (see :func:`volatility_ratio`).

    Returns
    -------
    np.ndarray of str (n_series,)
    """
    r = as_2d(returns, "returns", axis_names=("row", "bar"))
    check_finite(r, "returns", axis_names=("row", "bar"))
    check_length(r.shape[1], 2, "returns")
    vr = np.asarray(vol_ratio, dtype=np.float64).reshape(-1)
    if vr.shape[0] != r.shape[0]:
        raise MetricsError(f"vol_ratio has {vr.shape[0]} values for {r.shape[0]} series")
    tail = r[:, -window:]
    return regime_from_moments(
        tail.mean(axis=1), tail.std(axis=1, ddof=1), vr,
        periods_per_year=periods_per_year, sideways_sharpe=sideways_sharpe, high_vol_ratio=high_vol_ratio,
    )
