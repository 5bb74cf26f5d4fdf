"""The book's VaR horizon and parametric covariance settings (used by the live cycle)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from risklib.core.metrics import MetricsConfig, compute_book_metrics

RISK_COLUMNS = ("var_95", "var_99", "es_99", "var_99_parametric")


def _book(small_book, **cfg):
    return compute_book_metrics(
        small_book["positions"],
        small_book["balances"],
        small_book["prices"],
        small_book["returns"],
        small_book["instruments"],
        config=MetricsConfig(**cfg),
    )


def test_horizon_scales_every_var_figure_by_the_square_root_of_its_bars(small_book):
    # Arrange
    one = _book(small_book)
    # Act
    four = _book(small_book, var_horizon_bars=4)
    # Assert
    for col in RISK_COLUMNS:
        assert np.allclose(four.accounts[col].to_numpy(), 2.0 * one.accounts[col].to_numpy(), rtol=1e-12, equal_nan=True)
    for col in ("position_var_95", "risk_contribution"):
        assert np.allclose(four.positions[col].to_numpy(), 2.0 * one.positions[col].to_numpy(), rtol=1e-12, equal_nan=True)
    assert four.accounts["drawdown"].equals(one.accounts["drawdown"])


@pytest.mark.parametrize("cov", ["window", "ewma"])
def test_risk_contributions_sum_to_the_parametric_var_for_either_covariance(small_book, cov):
    # Act
    book = _book(small_book, parametric_cov=cov, var_horizon_bars=60)
    # Assert
    sums = book.positions.group_by("account_id").agg(pl.col("risk_contribution").sum().alias("s"))
    joined = book.accounts.join(sums, on="account_id")
    assert np.allclose(joined["s"].to_numpy(), joined["var_99_parametric"].to_numpy(), rtol=1e-9)


def test_ewma_parametric_var_reacts_to_a_recent_spike_more_than_the_window_estimate(small_book):
    # Arrange: the last ten bars five times as volatile
    spiked = small_book["returns"].copy()
    spiked[-10:] *= 5.0
    book = {**small_book, "returns": spiked}
    # Act
    window = _book(book, parametric_cov="window").accounts["var_99_parametric"].to_numpy()
    ewma = _book(book, parametric_cov="ewma").accounts["var_99_parametric"].to_numpy()
    # Assert (the flat account has no risk either way)
    held = window > 0
    assert np.all(ewma[held] > 1.5 * window[held])
