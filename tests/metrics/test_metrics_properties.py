"""Invariants of the metrics under arbitrary data (hypothesis)."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from risklib.metrics import (
    attribute_pnl,
    component_var,
    drawdown_series,
    historical_var_es,
    monte_carlo_scenarios,
    portfolio_var_es,
    series_risk,
    update_peak,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEAVY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # five methods each

returns_2d = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(2, 120)),
    elements=st.floats(-0.5, 0.5, allow_nan=False, allow_infinity=False, width=64),
)
instrument_returns = arrays(
    np.float64,
    st.tuples(st.integers(30, 80), st.integers(2, 6)),
    elements=st.floats(-0.05, 0.05, allow_nan=False, allow_infinity=False, width=64),
)


@SETTINGS
@given(returns_2d)
def test_drawdown_is_a_fraction(r):
    got = series_risk(r)
    assert np.all((got["max_drawdown"] >= 0) & (got["max_drawdown"] <= 1))
    dd = drawdown_series(np.cumprod(1 + r, axis=1))
    assert np.all((dd >= 0) & (dd <= 1))


@SETTINGS
@given(returns_2d)
def test_var99_at_least_var95_and_es_at_least_var(r):
    got = historical_var_es(r)
    assert np.all(got["var_99"] >= got["var_95"] - 1e-15)
    assert np.all(got["es_95"] >= got["var_95"] - 1e-15)
    assert np.all(got["es_99"] >= got["var_99"] - 1e-15)


@HEAVY
@given(instrument_returns, st.integers(0, 2**31 - 1))
def test_portfolio_var_orders_and_es_dominates_for_every_method(r, seed):
    x = np.random.default_rng(seed).normal(0, 1e5, size=(3, r.shape[1]))
    for method in ("historical", "parametric", "cornish_fisher", "mc_normal", "mc_t"):
        got = portfolio_var_es(x, r, method=method, n_scenarios=2_000, seed=seed)
        assert np.all(got["var_99"] >= got["var_95"] - 1e-9 * np.abs(got["var_95"]).max() - 1e-12), method
        assert np.all(got["es_99"] >= got["var_99"] - 1e-9 * np.abs(got["var_99"]).max() - 1e-12), method


@SETTINGS
@given(instrument_returns, st.integers(0, 2**31 - 1))
def test_component_var_sums_to_portfolio_var(r, seed):
    x = np.random.default_rng(seed).normal(0, 1e5, size=(5, r.shape[1]))
    var, comp = component_var(x, np.cov(r, rowvar=False))
    np.testing.assert_allclose(comp.sum(axis=1), var, rtol=1e-9, atol=1e-9 * np.abs(x).sum())
    parametric = portfolio_var_es(x, r, method="parametric")["var_99"]
    np.testing.assert_allclose(var, parametric, rtol=1e-9, atol=1e-6)


@HEAVY
@given(instrument_returns, st.integers(0, 2**31 - 1), st.floats(0.01, 100.0))
def test_scaling_positions_by_k_scales_var_by_k(r, seed, k):
    x = np.random.default_rng(seed).normal(0, 1e5, size=(3, r.shape[1]))
    for method in ("historical", "parametric", "cornish_fisher", "mc_normal", "mc_t"):
        base = portfolio_var_es(x, r, method=method, n_scenarios=1_000, seed=seed, dtype="float64")
        scaled = portfolio_var_es(k * x, r, method=method, n_scenarios=1_000, seed=seed, dtype="float64")
        for key in base:
            np.testing.assert_allclose(scaled[key], k * base[key], rtol=1e-9, atol=1e-6, err_msg=f"{method} {key}")


@HEAVY
@given(instrument_returns, st.integers(0, 2**31 - 1), st.randoms(use_true_random=False))
def test_permuting_instruments_changes_nothing(r, seed, rnd):
    x = np.random.default_rng(seed).normal(0, 1e5, size=(3, r.shape[1]))
    perm = list(range(r.shape[1]))
    rnd.shuffle(perm)
    # Monte Carlo draws along the covariance's eigenvectors; they are unique (so the draws are tied to
    # the same directions whatever the column order) only when the eigenvalues are distinct.
    # An eigenvector that a permutation maps to its own negative (e.g. (1, -1)/sqrt(2)) has no
    # order-free sign either; the draws are then mirrored (same distribution, other sample).
    vals, vecs = np.linalg.eigh(np.cov(r, rowvar=False))
    signed = np.all((np.abs(vecs.sum(axis=0)) > 1e-6) | (np.abs((vecs**3).sum(axis=0)) > 1e-6))
    distinct = bool(np.all(np.diff(vals) > 1e-6 * max(vals[-1], 1e-300)) and signed)
    methods = ("historical", "parametric", "cornish_fisher") + (("mc_normal", "mc_t") if distinct else ())
    for method in methods:
        a = portfolio_var_es(x, r, method=method, n_scenarios=1_000, seed=seed, dtype="float64")
        b = portfolio_var_es(x[:, perm], r[:, perm], method=method, n_scenarios=1_000, seed=seed, dtype="float64")
        # Monte Carlo: the covariance factor is rebuilt from a permuted eigen-decomposition, equal to rounding
        rtol = 1e-5 if method.startswith("mc") else 1e-7
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=1e-6, err_msg=f"{method} {key}")
    va, ca = component_var(x, np.cov(r, rowvar=False))
    vb, cb = component_var(x[:, perm], np.cov(r[:, perm], rowvar=False))
    np.testing.assert_allclose(vb, va, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(cb, ca[:, perm], rtol=1e-9, atol=1e-6)


def test_monte_carlo_is_reproducible_with_a_seed(fx_returns):
    a = monte_carlo_scenarios(fx_returns, 500, seed=3, dist="t")
    b = monte_carlo_scenarios(fx_returns, 500, seed=3, dist="t")
    c = monte_carlo_scenarios(fx_returns, 500, seed=4, dist="t")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32


@SETTINGS
@given(
    arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 40)), elements=st.floats(1.0, 1e6)),
    st.floats(1.0, 1e6),
)
def test_streaming_high_water_mark_equals_batch(equity, peak0):
    # Arrange
    peak = np.full(equity.shape[0], peak0)
    streamed = np.empty_like(equity)
    # Act: one cycle per bar
    for t in range(equity.shape[1]):
        peak, streamed[:, t] = update_peak(peak, equity[:, t])
    # Assert
    np.testing.assert_array_equal(streamed, drawdown_series(equity, peak0=peak0))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["s1", "s2"]), st.sampled_from(["EUR/USD", "USD/JPY", "GBP/USD"]), st.floats(-1e7, 1e7)), min_size=1, max_size=40))
def test_attribution_parts_sum_exactly_to_the_total(rows):
    frame = pl.DataFrame(rows, schema=["account_id", "strategy", "instrument", "unrealized_pnl_usd"], orient="row")
    totals = {by: int(attribute_pnl(frame, by)["pnl_cents"].sum()) for by in ("account_id", "strategy", "instrument", "currency")}
    both = int(attribute_pnl(frame, ["account_id", "currency"])["pnl_cents"].sum())
    assert len(set(totals.values()) | {both}) == 1
    assert abs(totals["account_id"] / 100 - frame["unrealized_pnl_usd"].sum()) <= 0.005 * len(rows) + 1e-6
