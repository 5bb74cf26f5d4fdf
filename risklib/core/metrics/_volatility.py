"""Volatility: rolling, EWMA (RiskMetrics) and the current/normal ratio the volatility ladder keys on.

Conventions: inputs are *simple* returns (fractions), series arrays have one
row per series with time along axis 1, oldest first. Standard deviations are
sample (``ddof=1``) unless stated. Annualised figures multiply by
``sqrt(periods_per_year)`` (252 by default; pass 260 for FX, 365 for crypto).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from risklib.core.metrics._validate import as_2d, check_finite, check_length
from risklib.errors import MetricsError

#: arch's backcast: the recursion starts from a 0.94-weighted mean of the first 75 squared returns.
BACKCAST_BARS = 75
BACKCAST_DECAY = 0.94


def _returns(returns: np.ndarray, name: str = "returns") -> np.ndarray:
    r = as_2d(returns, name, axis_names=("row", "bar"))
    check_finite(r, name, axis_names=("row", "bar"))
    return r


def annual_volatility(returns: np.ndarray, *, periods_per_year: int = 252) -> np.ndarray:
    """Annualised sample volatility ``std(r, ddof=1) * sqrt(periods_per_year)`` per row (empyrical's definition)."""
    r = _returns(returns)
    check_length(r.shape[1], 2, "returns")
    return r.std(axis=1, ddof=1) * np.sqrt(periods_per_year)


def rolling_volatility(returns: np.ndarray, window: int, *, periods_per_year: int = 252) -> np.ndarray:
    """Rolling annualised sample volatility.

    Returns
    -------
    np.ndarray, shape (n_series, T)
        Column ``t`` is the std (ddof=1) of bars ``t-window+1 .. t`` times
        ``sqrt(periods_per_year)``; the first ``window - 1`` columns are NaN
        (not enough history, never zero). Matches
        ``pandas.Series.rolling(window).std() * sqrt(periods_per_year)``.
    """
    if window < 2:
        raise MetricsError(f"window={window}: must be >= 2")
    r = _returns(returns)
    check_length(r.shape[1], window, "returns")
    win = np.lib.stride_tricks.sliding_window_view(r, window, axis=1)
    out = np.full(r.shape, np.nan)
    out[:, window - 1 :] = win.std(axis=-1, ddof=1) * np.sqrt(periods_per_year)
    return out


def ewma_variance(returns: np.ndarray, *, lam: float = 0.94) -> np.ndarray:
    """RiskMetrics EWMA variance forecasts, zero mean.

    ``s[t] = lam * s[t-1] + (1 - lam) * r[t-1]**2``, with ``s[0]`` arch's
    backcast (0.94-weighted mean of the first ``min(75, T)`` squared returns).
    Identical to ``arch``'s ``EWMAVariance(lam)`` with a zero mean.

    Returns
    -------
    np.ndarray, shape (n_series, T + 1)
        Column ``t`` is the per-bar variance forecast for bar ``t`` from bars
        before it; the last column forecasts the next, unseen bar (the
        "current" EWMA variance).
    """
    if not 0.0 < lam < 1.0:
        raise MetricsError(f"lam={lam}: must be in (0, 1)")
    r = _returns(returns)
    check_length(r.shape[1], 1, "returns")
    tau = min(BACKCAST_BARS, r.shape[1])
    w = BACKCAST_DECAY ** np.arange(tau)
    w /= w.sum()
    backcast = (r[:, :tau] ** 2) @ w
    x = np.concatenate([np.zeros((r.shape[0], 1)), r**2], axis=1)
    # s[t] = lam s[t-1] + (1 - lam) x[t] with x[0] = 0 and initial state backcast, so s[0] = backcast
    out, _ = lfilter([1.0 - lam], [1.0, -lam], x, axis=1, zi=backcast[:, None])
    return out


def ewma_volatility(returns: np.ndarray, *, lam: float = 0.94, periods_per_year: int = 252) -> np.ndarray:
    """Current annualised EWMA volatility per row: ``sqrt(ewma_variance(...)[:, -1] * periods_per_year)``."""
    return np.sqrt(ewma_variance(returns, lam=lam)[:, -1] * periods_per_year)


def ewma_covariance(returns: np.ndarray, *, lam: float = 0.94) -> np.ndarray:
    """EWMA covariance forecast of the next bar across instruments, zero mean.

    Parameters
    ----------
    returns : np.ndarray, shape (T, N)
        Instrument returns, oldest first.

    Returns
    -------
    np.ndarray, shape (N, N)
        ``lam**T * B + (1 - lam) * sum_t lam**(T-1-t) r_t r_t'`` with ``B`` the
        backcast outer-product matrix; its diagonal equals
        ``ewma_variance(returns.T)[:, -1]`` and ``w' S w`` equals the EWMA
        variance of the portfolio series ``returns @ w``.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise MetricsError(f"returns: expected (T, N), got shape {r.shape}")
    check_finite(r, "returns", axis_names=("bar", "instrument"))
    t = r.shape[0]
    check_length(t, 1, "returns")
    tau = min(BACKCAST_BARS, t)
    wb = BACKCAST_DECAY ** np.arange(tau)
    wb /= wb.sum()
    backcast = (r[:tau] * wb[:, None]).T @ r[:tau]
    decay = (1.0 - lam) * lam ** np.arange(t - 1, -1, -1)
    return lam**t * backcast + (r * decay[:, None]).T @ r


def window_covariances(returns: np.ndarray, window: int, normal_window: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample covariances (ddof=1) of the current window and of the normal baseline before it.

    The current window is the last ``window`` bars; the baseline is up to
    ``normal_window`` bars immediately before it (all earlier bars if fewer,
    at least 2).
    """
    r = np.asarray(returns, dtype=np.float64)
    t = r.shape[0]
    check_length(t, window + 2, "returns (current window plus a normal baseline)")
    cur = r[t - window :]
    base = r[max(0, t - window - normal_window) : t - window]
    return np.cov(cur, rowvar=False, ddof=1).reshape(r.shape[1], r.shape[1]), np.cov(
        base, rowvar=False, ddof=1
    ).reshape(r.shape[1], r.shape[1])


def volatility_ratio(returns: np.ndarray, *, window: int = 20, normal_window: int = 250) -> np.ndarray:
    """Current over normal volatility per row, the multiple the spec's volatility ladder keys on.

    ``std(last window bars) / std(up to normal_window bars before them)``,
    both sample (ddof=1); a ratio needs no annualisation. A zero baseline with
    non-zero current volatility gives ``inf`` (a spike from nothing); zero over
    zero gives 1.0 (nothing moved, nothing changed).
    """
    r = _returns(returns)
    t = r.shape[1]
    check_length(t, window + 2, "returns (current window plus a normal baseline)")
    cur = r[:, t - window :].std(axis=1, ddof=1)
    base = r[:, max(0, t - window - normal_window) : t - window].std(axis=1, ddof=1)
    return ratio(cur, base)


def ratio(cur: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``cur / base`` with 0/0 = 1 and x/0 = inf for x > 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = cur / base
    return np.where((cur == 0) & (base == 0), 1.0, out)
