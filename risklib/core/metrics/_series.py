"""The per-series risk set in one fused compiled pass: max drawdown, annual volatility, VaR 95/99, ES 95/99."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from risklib.core.metrics import _kernels
from risklib.core.metrics._validate import check_length, check_level
from risklib.errors import MetricsError


def series_risk(
    returns_2d: np.ndarray,
    *,
    periods_per_year: int = 252,
    levels: tuple[float, float] = (0.95, 0.99),
    labels: Sequence[str] | None = None,
    on_invalid: Literal["raise", "mark"] = "raise",
) -> dict[str, np.ndarray]:
    """Max drawdown, annual volatility, VaR and ES of many return series at once.

    One compiled pass per row (rows run in parallel), the tail selected
    without a full sort. Definitions match empyrical-reloaded exactly:

    * ``max_drawdown``: largest ``1 - wealth / running_peak`` of the wealth
      path ``prod(1 + r)`` starting at 1 before the first return; a positive
      fraction in [0, 1] (empyrical returns it negative).
    * ``annual_vol``: ``std(r, ddof=1) * sqrt(periods_per_year)``.
    * ``var_95``, ``var_99``: ``-percentile(r, 5 / 1)`` with linear
      interpolation (empyrical ``value_at_risk``, sign flipped: a loss is
      positive).
    * ``es_95``, ``es_99``: ``-mean`` of the ``int((T-1) * (1-level)) + 1``
      smallest returns (empyrical ``conditional_value_at_risk``, sign flipped).

    Parameters
    ----------
    returns_2d : np.ndarray, shape (n_series, T) or (T,)
        Simple returns, one row per series (account), oldest first, T >= 2.
    periods_per_year : int
        Annualisation factor (252 trading days; 260 FX; 365 crypto).
    levels : (float, float)
        The two confidence levels; keys follow them (``var_95``, ``es_99``…).
    labels : sequence of str, optional
        Row keys (account ids) for error messages.
    on_invalid : {"raise", "mark"}
        ``raise``: a NaN/inf return raises :class:`MetricsError` naming the
        row key, bar and value. ``mark``: that row's metrics are NaN, the
        others are computed, and ``valid`` (bool) plus ``invalid_bar`` (int,
        -1 when valid) are added to the result.

    Returns
    -------
    dict of np.ndarray (n_series,)
    """
    a, b = (check_level(x) for x in levels)
    r = np.asarray(returns_2d)
    if r.dtype != np.float64:
        r = r.astype(np.float64)
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2:
        raise MetricsError(f"returns_2d: expected (n_series, T), got shape {r.shape}")
    check_length(r.shape[1], 2, "returns_2d")
    if periods_per_year <= 0:
        raise MetricsError(f"periods_per_year={periods_per_year}: must be > 0")
    r = np.ascontiguousarray(r)
    out = np.empty((r.shape[0], 6))
    bad = np.empty(r.shape[0], dtype=np.int64)
    _kernels.series_risk_rows(r, 1.0 - a, 1.0 - b, float(periods_per_year), out, bad)
    if on_invalid == "raise" and (bad >= 0).any():
        i = int(np.argmax(bad >= 0))
        key = f" ({labels[i]!r})" if labels is not None and i < len(labels) else ""
        raise MetricsError(f"returns_2d[row={i}{key}, bar={bad[i]}]={float(r[i, bad[i]])!r}: must be finite")
    if on_invalid not in ("raise", "mark"):
        raise MetricsError(f"on_invalid={on_invalid!r}: must be 'raise' or 'mark'")
    ka, kb = (f"{x * 100:g}".replace(".", "_") for x in (a, b))
    res = {
        "max_drawdown": out[:, 0],
        "annual_vol": out[:, 1],
        f"var_{ka}": out[:, 2],
        f"var_{kb}": out[:, 3],
        f"es_{ka}": out[:, 4],
        f"es_{kb}": out[:, 5],
    }
    if on_invalid == "mark":
        res["valid"] = bad < 0
        res["invalid_bar"] = bad
    return res
