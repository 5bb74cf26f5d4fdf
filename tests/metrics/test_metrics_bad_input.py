"""Bad input raises a MetricsError (a ValueError) naming the field, the row key and the value."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from risklib.errors import MetricsError
from risklib.metrics import (
    MetricsConfig,
    attribute_pnl,
    component_var,
    historical_var_es,
    instrument_table,
    parametric_var_es,
    portfolio_var_es,
    rolling_volatility,
    series_risk,
    simple_returns,
    volatility_ratio,
)


def test_nan_return_names_the_row_key_bar_and_value():
    r = np.zeros((3, 10))
    r[1, 4] = np.nan
    with pytest.raises(MetricsError, match=r"returns_2d\[row=1 \('acct-2'\), bar=4\]=nan: must be finite"):
        series_risk(r, labels=["acct-1", "acct-2", "acct-3"])


def test_infinite_return_is_rejected_by_every_series_metric():
    r = np.zeros((2, 30))
    r[0, 7] = np.inf
    for fn in (historical_var_es, parametric_var_es, lambda x: rolling_volatility(x, 5)):
        with pytest.raises(MetricsError, match=r"returns\[row=0, bar=7\]=inf: must be finite"):
            fn(r)


def test_series_risk_can_mark_a_bad_row_instead_of_raising():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, size=(3, 50))
    r[1, 3] = np.nan
    got = series_risk(r, on_invalid="mark")
    assert got["valid"].tolist() == [True, False, True]
    assert got["invalid_bar"].tolist() == [-1, 3, -1]
    assert np.isnan(got["var_99"][1])
    assert got["var_99"][0] == series_risk(r[[0]])["var_99"][0]  # the bad row does not touch the others


@pytest.mark.parametrize(("price", "shown"), [(0.0, "0.0"), (-1.5, "-1.5")])
def test_non_positive_price_is_named(price, shown):
    prices = np.array([[1.0, 1.1, 1.2], [2.0, price, 2.1]])
    with pytest.raises(MetricsError, match=rf"prices\[row=1 \('GBP/USD'\), bar=1\]={shown}: must be > 0"):
        simple_returns(prices, labels=["EUR/USD", "GBP/USD"])


def test_empty_and_too_short_histories():
    with pytest.raises(MetricsError, match=r"returns_2d: 1 bar\(s\) given, need at least 2"):
        series_risk(np.array([[0.01]]))
    with pytest.raises(MetricsError, match=r"prices: 0 bar\(s\) given, need at least 2"):
        simple_returns(np.empty((2, 0)))
    with pytest.raises(MetricsError, match=r"returns \(current window plus a normal baseline\): 21 bar\(s\) given, need at least 22"):
        volatility_ratio(np.zeros((1, 21)), window=20)


def test_mismatched_shapes():
    with pytest.raises(MetricsError, match=r"exposure_usd shape \(2, 3\) and returns shape \(50, 4\): need \(A, N\) and \(T, N\) with the same N"):
        portfolio_var_es(np.ones((2, 3)), np.zeros((50, 4)))
    with pytest.raises(MetricsError, match=r"cov shape \(2, 2\): need \(3, 3\)"):
        component_var(np.ones((1, 3)), np.eye(2))


def test_unknown_instrument_is_named():
    with pytest.raises(MetricsError, match=r"instrument='XAU/USD' \(column 1\): unknown instrument"):
        instrument_table(["EUR/USD", "XAU/USD"])


def test_bad_level_and_method():
    with pytest.raises(MetricsError, match=r"level=99.0: must be a confidence level in \(0.5, 1\)"):
        parametric_var_es(np.zeros((1, 10)), 99.0)
    with pytest.raises(MetricsError, match=r"method='magic': must be one of"):
        portfolio_var_es(np.ones((1, 2)), np.zeros((10, 2)), method="magic")


def test_attribution_rejects_nan_pnl_naming_the_position():
    frame = pl.DataFrame(
        {"account_id": ["a", "b"], "strategy": ["s", "s"], "instrument": ["EUR/USD", "USD/JPY"], "unrealized_pnl_usd": [1.0, float("nan")]}
    )
    with pytest.raises(MetricsError, match=r"unrealized_pnl_usd\[row=1, account_id='b', instrument='USD/JPY'\]=nan: must be finite"):
        attribute_pnl(frame, "strategy")


def test_config_is_frozen_rejects_unknown_keys_and_bad_values():
    cfg = MetricsConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.ewma_lambda = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        MetricsConfig(ewma_lamda=0.9)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"score_weights=\[0.5, 0.5, 0.5, 0.5\]: must sum to 1"):
        MetricsConfig(score_weights=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="less than 1"):
        MetricsConfig(ewma_lambda=1.0)
