"""Exposure, leverage and concentration per account from position-level notionals (vectorised with bincount)."""

from __future__ import annotations

import numpy as np


def account_exposure(
    notional_usd: np.ndarray, account_index: np.ndarray, n_accounts: int, equity_usd: np.ndarray
) -> dict[str, np.ndarray]:
    """Gross and net exposure, exposure as a fraction of equity, and leverage per account.

    Parameters
    ----------
    notional_usd : np.ndarray (P,)
        Signed USD notional of each position row.
    account_index : np.ndarray (P,) of int
        Row -> account in ``range(n_accounts)``.
    equity_usd : np.ndarray (n_accounts,)

    Returns
    -------
    dict of np.ndarray (n_accounts,)
        ``gross_exposure_usd = sum |notional|`` over position rows (offsetting
        rows of different strategies both count: the protective reading),
        ``net_exposure_usd = sum notional``, ``exposure_pct = gross / equity``
        (a fraction) and ``leverage`` (same basis). Non-positive equity gives NaN
        fractions (undefined, never small).
    """
    gross = np.bincount(account_index, weights=np.abs(notional_usd), minlength=n_accounts)
    net = np.bincount(account_index, weights=notional_usd, minlength=n_accounts)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(equity_usd > 0, gross / equity_usd, np.nan)
    return {"gross_exposure_usd": gross, "net_exposure_usd": net, "exposure_pct": pct, "leverage": pct.copy()}


def concentration(exposure_matrix: np.ndarray) -> np.ndarray:
    """Largest net instrument exposure over the sum of net instrument exposures, per account (0 for an empty book).

    ``exposure_matrix`` is (A, N) USD, netted per instrument across strategies.
    """
    a = np.abs(exposure_matrix)
    tot = a.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tot > 0, a.max(axis=1, initial=0.0) / tot, 0.0)
