"""Returns, P&L and equity curves.

Layout: a *series array* has one row per series (account, instrument) and
time along axis 1, oldest first. Instrument price/return matrices handed over
by the pipeline are ``(T, N)`` (time down, instruments across); functions that
take those say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from risklib.core.instruments import FX_MAJORS, Instrument
from risklib.core.metrics._validate import as_2d, check_positive
from risklib.errors import MetricsError


def simple_returns(prices: np.ndarray, *, labels: Sequence[str] | None = None) -> np.ndarray:
    """Simple returns ``p[t] / p[t-1] - 1`` of each row of a series array.

    Parameters
    ----------
    prices : np.ndarray, shape (n_series, T) or (T,)
        Strictly positive prices, oldest first.
    labels : sequence of str, optional
        Row keys used in error messages.

    Returns
    -------
    np.ndarray, shape (n_series, T - 1)
        Simple returns as fractions.

    Raises
    ------
    MetricsError
        A price is NaN, infinite or non-positive (message names row, column and
        value), or fewer than two prices are given.
    """
    p = as_2d(prices, "prices", min_cols=2, axis_names=("row", "bar"))
    check_positive(p, "prices", rows=labels, axis_names=("row", "bar"))
    return p[:, 1:] / p[:, :-1] - 1.0


def log_returns(prices: np.ndarray, *, labels: Sequence[str] | None = None) -> np.ndarray:
    """Log returns ``ln(p[t] / p[t-1])`` of each row; same shapes and checks as :func:`simple_returns`."""
    p = as_2d(prices, "prices", min_cols=2, axis_names=("row", "bar"))
    check_positive(p, "prices", rows=labels, axis_names=("row", "bar"))
    return np.diff(np.log(p), axis=1)


def instrument_table(instruments: Sequence[str], table: dict[str, Instrument] | None = None) -> np.ndarray:
    """``usd_is_quote`` flags of ``instruments`` (N bool) from ``table`` (default :data:`FX_MAJORS`).

    Raises
    ------
    MetricsError
        An instrument is not in the table, or is a cross without USD.
    """
    table = FX_MAJORS if table is None else table
    flags = np.empty(len(instruments), dtype=bool)
    for j, sym in enumerate(instruments):
        ins = table.get(sym)
        if ins is None:
            raise MetricsError(f"instrument={sym!r} (column {j}): unknown instrument; known: {sorted(table)}")
        if ins.quote != "USD" and ins.base != "USD":
            raise MetricsError(f"instrument={sym!r}: cross without USD; convert it to USD before computing metrics")
        flags[j] = ins.usd_is_quote
    return flags


def usd_returns(returns: np.ndarray, usd_is_quote: np.ndarray) -> np.ndarray:
    """Per-bar P&L per USD of notional, exact for both quoting conventions.

    For ``XXX/USD`` a position of notional ``q p`` USD earns ``q p r``: the factor
    is ``r``. For ``USD/XXX`` a position of ``q`` USD (its notional) earns
    ``q (p1 - p0) / p1`` USD = ``q r / (1 + r)``: the factor is ``r / (1 + r)``.
    So the P&L of a book over one bar is exactly ``notional_usd @ usd_returns``.

    Parameters
    ----------
    returns : np.ndarray, shape (T, N)
        Simple instrument returns, oldest first.
    usd_is_quote : np.ndarray, shape (N,)
        From :func:`instrument_table`.
    """
    r = np.asarray(returns, dtype=np.float64)
    return np.where(usd_is_quote[None, :], r, r / (1.0 + r))


def pnl_curve(
    quantity: np.ndarray,
    entry_price: np.ndarray,
    prices: np.ndarray,
    usd_is_quote: np.ndarray,
) -> np.ndarray:
    """Unrealized P&L in USD of fixed positions along a price path, for many accounts at once.

    Parameters
    ----------
    quantity, entry_price : np.ndarray, shape (A, N)
        Signed base-currency quantity and entry price per account and
        instrument (0 quantity = not held).
    prices : np.ndarray, shape (T, N)
        Instrument prices (quote per base), oldest first, strictly positive.
    usd_is_quote : np.ndarray, shape (N,)

    Returns
    -------
    np.ndarray, shape (A, T)
        ``sum_j pnl_usd(q_aj, e_aj, p_tj)`` (see :func:`risklib.core.instruments.pnl_usd`),
        computed as two matrix products: ``XXX/USD`` legs are ``q p - q e``,
        ``USD/XXX`` legs ``q - q e / p``.
    """
    q = np.asarray(quantity, dtype=np.float64)
    e = np.asarray(entry_price, dtype=np.float64)
    p = np.asarray(prices, dtype=np.float64)
    if q.shape != e.shape or q.ndim != 2 or p.ndim != 2 or p.shape[1] != q.shape[1]:
        raise MetricsError(
            f"quantity {q.shape}, entry_price {e.shape}, prices {p.shape}: need (A, N), (A, N) and (T, N)"
        )
    check_positive(p, "prices", axis_names=("bar", "instrument"))
    uq = usd_is_quote.astype(bool)
    qe = q * e
    out = q[:, uq] @ p[:, uq].T - qe[:, uq].sum(axis=1, keepdims=True)
    out += q[:, ~uq].sum(axis=1, keepdims=True) - qe[:, ~uq] @ (1.0 / p[:, ~uq]).T
    return out


def equity_curve(cash_usd: np.ndarray, pnl: np.ndarray) -> np.ndarray:
    """Equity ``cash + unrealized P&L`` per account and bar: (A,) + (A, T) -> (A, T), USD."""
    return np.asarray(cash_usd, dtype=np.float64)[:, None] + pnl


def prices_frame_to_returns(prices: pl.DataFrame, date_column: str = "date") -> tuple[list[str], np.ndarray]:
    """Instrument labels and the (T-1, N) simple-return matrix of a wide price frame (date + one column per instrument)."""
    cols = [c for c in prices.columns if c != date_column]
    p = prices.select(cols).to_numpy().astype(np.float64).T
    return cols, simple_returns(p, labels=cols).T
