"""Correlation across instruments: sample, rolling and EWMA matrices, the correlation index, flagged pairs.

Inputs are ``(T, N)`` return matrices (time down, instruments across), oldest
first. Correlations are Pearson. A constant instrument has undefined
correlation; it is reported as 0 with the others (1 with itself) rather than
NaN, and :func:`correlation_matrix` documents it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.metrics._validate import check_finite, check_length
from risklib.core.metrics._volatility import ewma_covariance
from risklib.errors import MetricsError


def _matrix(returns: np.ndarray) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise MetricsError(f"returns: expected (T, N), got shape {r.shape}")
    check_finite(r, "returns", axis_names=("bar", "instrument"))
    return r


def cov_to_corr(cov: np.ndarray) -> np.ndarray:
    """Correlation from covariance (last two axes); zero-variance instruments get 0 off the diagonal, 1 on it."""
    d = np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 0.0))
    outer = d[..., :, None] * d[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(outer > 0, cov / outer, 0.0)
    c = np.clip(c, -1.0, 1.0)
    n = cov.shape[-1]
    c[..., np.arange(n), np.arange(n)] = 1.0
    return c


def correlation_matrix(returns: np.ndarray) -> np.ndarray:
    """Pearson correlation (N, N) of the columns of ``returns`` (T, N); equals ``numpy.corrcoef(returns.T)``."""
    r = _matrix(returns)
    check_length(r.shape[0], 2, "returns")
    return cov_to_corr(np.cov(r, rowvar=False, ddof=1).reshape(r.shape[1], r.shape[1]))


def rolling_correlation(returns: np.ndarray, window: int) -> np.ndarray:
    """Correlation matrices over each window of ``window`` bars: (T - window + 1, N, N), last = most recent.

    Matches ``pandas.DataFrame.rolling(window).corr()`` on the completed windows.
    """
    r = _matrix(returns)
    if window < 2:
        raise MetricsError(f"window={window}: must be >= 2")
    check_length(r.shape[0], window, "returns")
    win = np.lib.stride_tricks.sliding_window_view(r, window, axis=0)  # (W, N, window)
    d = win - win.mean(axis=-1, keepdims=True)
    cov = np.einsum("wit,wjt->wij", d, d) / (window - 1)
    return cov_to_corr(cov)


def ewma_correlation(returns: np.ndarray, *, lam: float = 0.94) -> np.ndarray:
    """Correlation (N, N) of the zero-mean EWMA covariance forecast (:func:`ewma_covariance`)."""
    return cov_to_corr(ewma_covariance(_matrix(returns), lam=lam))


def correlation_index(corr: np.ndarray) -> np.ndarray | float:
    """Average pairwise (off-diagonal) correlation: the spec's ``correlation_index``.

    Accepts (N, N) or a stack (..., N, N); fewer than two instruments give 0.
    """
    c = np.asarray(corr, dtype=np.float64)
    n = c.shape[-1]
    if n < 2:
        return np.zeros(c.shape[:-2]) if c.ndim > 2 else 0.0
    tot = c.sum(axis=(-2, -1)) - np.trace(c, axis1=-2, axis2=-1)
    out = tot / (n * (n - 1))
    return float(out) if np.ndim(out) == 0 else out


def correlated_pairs(corr: np.ndarray, instruments: Sequence[str], threshold: float = 0.8) -> pl.DataFrame:
    """Instrument pairs whose correlation magnitude exceeds ``threshold`` (RT "Correlation Breakdown > 0.8").

    ``|corr| > threshold`` is flagged: strongly negative correlation is as
    much a loss of diversification as positive, since positions in opposite
    directions then move together.

    Returns
    -------
    pl.DataFrame
        ``instrument_a``, ``instrument_b``, ``correlation`` (signed), sorted by
        descending magnitude; one row per unordered pair.
    """
    c = np.asarray(corr, dtype=np.float64)
    if c.shape != (len(instruments), len(instruments)):
        raise MetricsError(f"corr shape {c.shape}: need ({len(instruments)}, {len(instruments)}) for the instruments given")
    i, j = np.triu_indices(len(instruments), k=1)
    keep = np.abs(c[i, j]) > threshold
    i, j = i[keep], j[keep]
    order = np.argsort(-np.abs(c[i, j]), kind="stable")
    names = np.asarray(list(instruments), dtype=object)
    return pl.DataFrame(
        {
            "instrument_a": names[i[order]].tolist(),
            "instrument_b": names[j[order]].tolist(),
            "correlation": c[i[order], j[order]],
        },
        schema={"instrument_a": pl.String, "instrument_b": pl.String, "correlation": pl.Float64},
    )


def correlation_rows(instruments: Sequence[str], matrix: np.ndarray, ts: datetime) -> pl.DataFrame:
    """One row per unordered instrument pair of a correlation matrix, for ``correlation_snapshots``.

    Parameters
    ----------
    instruments
        Names of the matrix's rows/columns, unique (e.g. ``MarketInputs.instruments``).
    matrix
        Square correlation matrix (n x n) in [-1, 1]; NaN where unknown.
    ts
        Time of the cycle (timezone-aware UTC).

    Returns
    -------
    pl.DataFrame
        :data:`risklib.core.frames.CORRELATION` columns, ``instrument_a < instrument_b`` (the diagonal is 1 by
        definition and omitted), NaN stored as null; sorted by ``(instrument_a, instrument_b)``.

    Raises
    ------
    ValueError
        Naming the shape or the duplicate when the inputs disagree.
    """
    names = list(instruments)
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape != (len(names), len(names)):
        raise ValueError(f"matrix.shape={m.shape}: must be ({len(names)}, {len(names)}) for {len(names)} instruments")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"instruments: {dup!r} appears more than once")
    if ts.tzinfo is None:
        raise ValueError(f"ts={ts!r}: must be timezone-aware")
    order = np.argsort(np.array(names, dtype=object))
    m = m[np.ix_(order, order)]
    sorted_names = np.array(names, dtype=object)[order]
    i, j = np.triu_indices(len(names), k=1)
    corr = m[i, j]
    return pl.DataFrame(
        {
            "ts": [ts] * len(i),
            "instrument_a": sorted_names[i].tolist(),
            "instrument_b": sorted_names[j].tolist(),
            "correlation": corr,
        },
        schema=frames.CORRELATION,
    ).with_columns(pl.col("correlation").fill_nan(None))
