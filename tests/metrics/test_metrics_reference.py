"""The metrics against the libraries that define the same quantity, on real index data shipped with ``arch``.

Each test names the definition it matches. Tolerance 1e-9 relative throughout.
"""

from __future__ import annotations

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from arch.univariate import EWMAVariance, ZeroMean

from risklib.metrics import (
    annual_volatility,
    cornish_fisher_var_es,
    correlation_matrix,
    drawdown_series,
    drawdown_stats,
    ewma_variance,
    ewma_volatility,
    historical_var_es,
    log_returns,
    parametric_var_es,
    rolling_correlation,
    rolling_volatility,
    series_risk,
    simple_returns,
    wealth_from_returns,
)

RTOL = 1e-9


def test_series_risk_matches_empyrical_on_index_returns(index_returns):
    # Arrange: empyrical's max_drawdown, annual_volatility, value_at_risk, conditional_value_at_risk (signs flipped)
    want = np.array(
        [
            [
                -ep.max_drawdown(pd.Series(r)),
                ep.annual_volatility(pd.Series(r)),
                -ep.value_at_risk(r, 0.05),
                -ep.value_at_risk(r, 0.01),
                -ep.conditional_value_at_risk(r, 0.05),
                -ep.conditional_value_at_risk(r, 0.01),
            ]
            for r in index_returns
        ]
    )
    # Act
    got = series_risk(index_returns)
    # Assert
    mine = np.column_stack([got[k] for k in ("max_drawdown", "annual_vol", "var_95", "var_99", "es_95", "es_99")])
    np.testing.assert_allclose(mine, want, rtol=RTOL, atol=0)


def test_series_risk_honours_periods_per_year(sp500_returns):
    got = series_risk(sp500_returns, periods_per_year=365)
    assert got["annual_vol"][0] == pytest.approx(ep.annual_volatility(sp500_returns, annualization=365), rel=RTOL)


def test_historical_var_es_matches_empyrical_and_numpy_percentile(sp500_returns):
    got = historical_var_es(sp500_returns)
    assert got["var_99"][0] == pytest.approx(-np.percentile(sp500_returns, 1), rel=RTOL)
    assert got["es_95"][0] == pytest.approx(-ep.conditional_value_at_risk(sp500_returns, 0.05), rel=RTOL)


def test_annual_volatility_matches_empyrical(index_returns):
    np.testing.assert_allclose(annual_volatility(index_returns), [ep.annual_volatility(r) for r in index_returns], rtol=RTOL)


def test_max_drawdown_of_wealth_matches_empyrical(sp500_returns):
    # drawdown_series over the wealth path starting at 1 is empyrical's drawdown definition
    dd = drawdown_series(wealth_from_returns(sp500_returns))
    assert dd.max() == pytest.approx(-ep.max_drawdown(sp500_returns), rel=RTOL)
    stats = drawdown_stats(wealth_from_returns(sp500_returns))
    assert stats["max_drawdown"][0] == pytest.approx(-ep.max_drawdown(sp500_returns), rel=RTOL)


def test_rolling_volatility_matches_pandas(sp500_returns):
    r = sp500_returns[:400]
    want = pd.Series(r).rolling(20).std().to_numpy() * np.sqrt(252)
    got = rolling_volatility(r, 20)[0]
    assert np.isnan(got[:19]).all()
    np.testing.assert_allclose(got[19:], want[19:], rtol=RTOL)


def test_ewma_variance_matches_arch_riskmetrics(sp500_returns):
    # arch's EWMAVariance(0.94) with a zero mean: same recursion and same backcast
    res = ZeroMean(sp500_returns, volatility=EWMAVariance(0.94)).fix([])
    got = ewma_variance(sp500_returns, lam=0.94)[0]
    np.testing.assert_allclose(got[:-1], res.conditional_volatility**2, rtol=RTOL)
    forecast = res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    assert got[-1] == pytest.approx(forecast, rel=RTOL)
    assert ewma_volatility(sp500_returns, periods_per_year=252)[0] == pytest.approx(np.sqrt(forecast * 252), rel=RTOL)


def test_parametric_var_es_match_scipy_normal(sp500_returns):
    mu, sigma = sp500_returns.mean(), sp500_returns.std(ddof=1)
    var, es = parametric_var_es(sp500_returns, 0.99, include_mean=True)
    q = st.norm.ppf(0.01, mu, sigma)
    tail_mean = st.norm.expect(lambda x: x, loc=mu, scale=sigma, ub=q) / 0.01
    assert var[0] == pytest.approx(-q, rel=RTOL)
    assert es[0] == pytest.approx(-tail_mean, rel=1e-7)  # scipy integrates numerically


def test_parametric_var_without_mean_is_zero_mean_normal(sp500_returns):
    var, _ = parametric_var_es(sp500_returns, 0.95)
    assert var[0] == pytest.approx(-st.norm.ppf(0.05, 0.0, sp500_returns.std(ddof=1)), rel=RTOL)


def test_cornish_fisher_uses_scipy_skew_and_kurtosis(sp500_returns):
    s, k = st.skew(sp500_returns), st.kurtosis(sp500_returns)
    z = st.norm.ppf(0.01)
    z_cf = z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36
    var, es = cornish_fisher_var_es(sp500_returns, 0.99)
    assert var[0] == pytest.approx(-sp500_returns.std(ddof=1) * z_cf, rel=RTOL)
    # ES: the tail mean of the expansion, checked by numerical integration over the tail probabilities
    p = np.linspace(0, 0.01, 400_001)[1:]
    zz = st.norm.ppf(p)
    cf = zz + (zz**2 - 1) * s / 6 + (zz**3 - 3 * zz) * k / 24 - (2 * zz**3 - 5 * zz) * s**2 / 36
    assert es[0] == pytest.approx(-sp500_returns.std(ddof=1) * cf.mean(), rel=1e-3)
    assert es[0] > var[0]


def test_correlation_matrix_matches_numpy_and_rolling_matches_pandas(index_returns):
    r = index_returns.T  # (T, 4)
    np.testing.assert_allclose(correlation_matrix(r), np.corrcoef(r.T), rtol=RTOL)
    frame = pd.DataFrame(r[:120])
    want = frame.rolling(60).corr().to_numpy().reshape(120, 4, 4)[59:]
    np.testing.assert_allclose(rolling_correlation(r[:120], 60), want, rtol=1e-8)


def test_returns_from_prices_match_pandas():
    prices = np.array([[100.0, 101.0, 99.0, 99.5], [1.1, 1.0, 1.2, 1.3]])
    np.testing.assert_allclose(simple_returns(prices), pd.DataFrame(prices.T).pct_change().to_numpy()[1:].T, rtol=RTOL)
    np.testing.assert_allclose(log_returns(prices), np.log(prices[:, 1:] / prices[:, :-1]), rtol=RTOL)
