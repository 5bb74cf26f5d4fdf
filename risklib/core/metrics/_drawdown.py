"""Drawdown: batch series, current, maximum and duration, plus the incremental high-water-mark form.

Definition (all forms): ``drawdown_t = 1 - equity_t / peak_t`` with
``peak_t = max(peak_0, equity_0..t)``, a positive fraction of the peak in
[0, 1] for positive equity. Batch and incremental forms agree exactly: the
streaming cycle carries ``peak`` and applies :func:`update_peak`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from risklib.core.metrics._validate import as_2d, check_positive


def drawdown(equity: pl.Expr) -> pl.Expr:
    """Drawdown series of an equity expression (positive fraction of the running peak, in [0, 1])."""
    return 1 - equity / equity.cum_max()


def max_drawdown(equity: pl.Expr) -> pl.Expr:
    """Largest peak-to-trough loss as a fraction of peak, in [0, 1]."""
    return drawdown(equity).max().alias("max_drawdown")


def drawdown_series(equity: np.ndarray, *, peak0: np.ndarray | float | None = None) -> np.ndarray:
    """Drawdown of each row of an equity (or wealth) series array.

    Parameters
    ----------
    equity : np.ndarray, shape (n_series, T) or (T,)
        Strictly positive equity, oldest first.
    peak0 : float or np.ndarray (n_series,), optional
        High-water mark carried in from before the first bar (default: none).

    Returns
    -------
    np.ndarray, shape (n_series, T)
        ``1 - equity / running_peak`` in [0, 1].
    """
    e = as_2d(equity, "equity")
    check_positive(e, "equity", axis_names=("row", "bar"))
    peak = np.maximum.accumulate(e, axis=1)
    if peak0 is not None:
        peak = np.maximum(peak, np.asarray(peak0, dtype=np.float64).reshape(-1, 1))
    return 1.0 - e / peak


def wealth_from_returns(returns: np.ndarray) -> np.ndarray:
    """Wealth path ``prod(1 + r)`` starting at 1 *before* the first return: (n, T) -> (n, T + 1)."""
    r = as_2d(returns, "returns")
    out = np.ones((r.shape[0], r.shape[1] + 1))
    np.cumprod(1.0 + r, axis=1, out=out[:, 1:])
    return out


def drawdown_stats(equity: np.ndarray) -> dict[str, np.ndarray]:
    """Current and maximum drawdown and durations per row.

    Returns
    -------
    dict of np.ndarray (n_series,)
        ``current_drawdown`` (fraction, last bar), ``max_drawdown`` (fraction),
        ``current_duration_bars`` (bars since the last peak; 0 at a peak),
        ``max_duration_bars`` (longest run of bars below a peak).
    """
    dd = drawdown_series(equity)
    below = dd > 0.0
    n, t = dd.shape
    # length of the current run of "below peak" bars at every bar, vectorised:
    idx = np.arange(1, t + 1)[None, :]
    last_peak = np.maximum.accumulate(np.where(below, 0, idx), axis=1)
    run = np.where(below, idx - last_peak, 0)
    return {
        "current_drawdown": dd[:, -1],
        "max_drawdown": dd.max(axis=1),
        "current_duration_bars": run[:, -1].astype(np.int64),
        "max_duration_bars": run.max(axis=1).astype(np.int64),
    }


def update_peak(peak: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One streaming step of the high-water mark.

    Parameters
    ----------
    peak : np.ndarray (A,)
        High-water mark carried from the previous cycle (USD); NaN = none yet.
    equity : np.ndarray (A,)
        This cycle's equity (USD).

    Returns
    -------
    (new_peak, drawdown) : tuple of np.ndarray (A,)
        ``max(peak, equity)`` and ``1 - equity / new_peak``. Feeding the bars of
        an equity series one at a time gives exactly :func:`drawdown_series`.
    """
    peak = np.asarray(peak, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    new_peak = np.fmax(peak, equity)
    return new_peak, 1.0 - equity / new_peak
