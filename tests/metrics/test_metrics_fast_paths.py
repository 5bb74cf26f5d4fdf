"""The compiled fast paths against straightforward numpy references (sort, matmul, loops)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risklib.core.metrics import _book_kernels, _kernels
from risklib.core.metrics._exposure import concentration
from risklib.metrics import monte_carlo_scenarios, monte_carlo_var_es, tail_losses


def _reference_tails(pnl: np.ndarray) -> np.ndarray:
    """VaR 95/99 (numpy linear percentile) and ES 95/99 (mean of the int((n-1)q)+1 smallest) by full sort."""
    n = pnl.shape[1]
    s = np.sort(pnl, axis=1)
    out = []
    for q in (0.05, 0.01):
        out.append(-np.percentile(pnl, 100 * q, axis=1))
    for q in (0.05, 0.01):
        out.append(-s[:, : int((n - 1) * q) + 1].mean(axis=1))
    return np.column_stack(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 6000), st.integers(0, 2**31 - 1), st.sampled_from(["t", "ties", "few_values"]))
def test_tail_selection_equals_a_full_sort(n, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "t":
        pnl = rng.standard_t(3, size=(3, n))
    elif kind == "ties":  # long runs of equal values (a flat book is all zeros)
        pnl = np.where(rng.random((3, n)) < 0.9, 0.0, rng.normal(size=(3, n)))
    else:
        pnl = rng.integers(-3, 3, size=(3, n)).astype(np.float64)
    got = tail_losses(pnl)
    want = _reference_tails(pnl)
    for i, key in enumerate(("var_95", "var_99", "es_95", "es_99")):
        # atol: the tail probability is 1 - 0.95 in floating point, numpy's 5 / 100 differs in the last bits
        np.testing.assert_allclose(got[key], want[:, i], rtol=1e-12, atol=1e-12, err_msg=key)


def test_select_places_the_rank_and_partitions_around_it():
    rng = np.random.default_rng(1)
    for a in (rng.normal(size=1000), np.zeros(1000), np.repeat(rng.normal(size=10), 100), np.arange(1000.0)[::-1].copy()):
        for k in (0, 1, 499, 998, 999):
            b = a.copy()
            _kernels.select(b, 0, b.size, k)
            assert b[k] == np.sort(a)[k]
            assert (b[:k] <= b[k]).all() and (b[k + 1 :] >= b[k]).all()
            assert np.array_equal(np.sort(b), np.sort(a))


def test_non_finite_rows_give_nan_and_leave_the_others_exact():
    rng = np.random.default_rng(2)
    pnl = rng.normal(size=(4, 5000))
    pnl[1, 77] = np.nan
    pnl[2, 4000] = np.inf
    got = tail_losses(pnl)
    want = _reference_tails(pnl[[0, 3]])
    for i, key in enumerate(("var_95", "var_99", "es_95", "es_99")):
        assert np.isnan(got[key][[1, 2]]).all()
        np.testing.assert_allclose(got[key][[0, 3]], want[:, i], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_monte_carlo_var_es_equals_matmul_then_tails(fx_returns, dtype):
    """Fused P&L + tail kernel vs the obvious (A, M) product and a full sort (float32: float32 rounding only)."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1e5, size=(40, fx_returns.shape[1])) * (rng.random((40, fx_returns.shape[1])) < 0.6)
    x[0] = 0.0  # a flat book
    scen = monte_carlo_scenarios(fx_returns, 3_000, seed=11, dist="t", dtype=dtype)
    got = monte_carlo_var_es(x, scen)
    want = _reference_tails(x @ scen.astype(np.float64).T)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for i, key in enumerate(("var_95", "var_99", "es_95", "es_99")):
        np.testing.assert_allclose(got[key], want[:, i], rtol=rtol, atol=1e-9, err_msg=key)
    assert all(np.array_equal(got[k], monte_carlo_var_es(x, scen)[k]) for k in got)


@pytest.mark.parametrize("grouped", [True, False])
def test_account_pass_equals_dense_products_and_pair_loops(grouped):
    rng = np.random.default_rng(4)
    n, n_acc, per = 9, 40, 6
    a_idx = np.repeat(np.arange(n_acc), per)
    j_idx = rng.integers(0, n, a_idx.size)
    notional = rng.normal(0, 1e4, a_idx.size)
    keep = rng.random(a_idx.size) < 0.8
    keep[:per] = False  # a flat book
    if not grouped:
        perm = rng.permutation(a_idx.size)
        a_idx, j_idx, notional, keep = a_idx[perm], j_idx[perm], notional[perm], keep[perm]
    order = np.zeros(0, dtype=np.int64) if grouped else np.argsort(a_idx, kind="stable")
    start = np.concatenate([[0], np.cumsum(np.bincount(a_idx, minlength=n_acc))])
    x = np.zeros((n_acc, n))
    np.add.at(x, (a_idx[keep], j_idx[keep]), notional[keep])
    u = rng.standard_t(4, size=(300, n)) * 0.01
    covs = [np.cov(u[lo:], rowvar=False) for lo in (0, 100, 200)]
    means = np.vstack([u.mean(axis=0), u[200:].mean(axis=0)])
    corr = np.corrcoef(u, rowvar=False)
    q, row_risk, risk_ok, eq = np.ones(a_idx.size), keep.copy(), np.ones(n_acc, dtype=bool), rng.uniform(1e5, 1e6, n_acc)
    var_long, var_short, vol_ratio, mean = rng.random(n), rng.random(n), rng.random(n), rng.normal(0, 1e-4, n)
    z, horizon, kc = 2.33, 2.0, 1
    tail, qf, xm, pair, conc = np.empty((n_acc, 4)), np.empty((n_acc, 3)), np.empty((n_acc, 2)), np.empty((n_acc, 3)), np.empty(n_acc)
    pvar, contrib, vscore, crisk = (np.empty(a_idx.size) for _ in range(4))
    _book_kernels.book_rows(
        start, order, j_idx, notional, keep, q, row_risk, risk_ok, eq,
        np.ascontiguousarray(u.T), 0.05, 0.01, np.hstack(covs), kc, means, corr, 0.1,
        z, mean, var_long, var_short, vol_ratio, horizon,
        tail, qf, xm, pair, conc, pvar, contrib, vscore, crisk,
    )
    np.testing.assert_allclose(tail, _reference_tails(x @ u.T), rtol=1e-12, atol=1e-9)
    for m, c in enumerate(covs):
        np.testing.assert_allclose(qf[:, m], np.einsum("an,nk,ak->a", x, c, x), rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(xm, x @ means.T, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(conc, concentration(x), rtol=1e-12)
    sigma = np.sqrt(np.einsum("an,nk,ak->a", x, covs[kc], x))
    with np.errstate(divide="ignore", invalid="ignore"):  # the flat book has sigma 0
        marginal = np.where(sigma[:, None] > 0, (x @ covs[kc]) * (z / sigma)[:, None], 0.0) - mean
    rows = np.flatnonzero(keep)
    a, j, v = a_idx[rows], j_idx[rows], notional[rows]
    np.testing.assert_allclose(contrib[rows], v * marginal[a, j] / eq[a] * horizon, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(pvar[rows], np.where(v > 0, var_long[j], var_short[j]) * np.abs(v) / eq[a] * horizon, rtol=1e-14)
    np.testing.assert_array_equal(vscore, vol_ratio[j_idx])
    assert np.isnan(pvar[~keep]).all()
    for i in range(n_acc):
        held = np.flatnonzero(x[i])
        sg = np.sign(x[i, held])
        pairs = [corr[held[p], held[q]] * sg[p] * sg[q] for p in range(held.size) for q in range(p + 1, held.size)]
        if pairs:
            assert pair[i, 0] == pytest.approx(np.mean(pairs), rel=1e-12, abs=1e-15)
            assert pair[i, 1] == max(pairs) and pair[i, 2] == sum(v > 0.1 for v in pairs)
        for p, jj in enumerate(held):
            others = [corr[jj, k] * sg[p] * np.sign(x[i, k]) for k in held if k != jj]
            want = np.mean(others) if others else 0.0
            for r in rows[(a_idx[rows] == i) & (j_idx[rows] == jj)]:
                assert crisk[r] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_book_metrics_do_not_depend_on_the_order_of_position_rows(small_book):
    """Grouped rows are looked up once per account run, shuffled rows one by one: same figures."""
    import polars as pl

    from risklib.metrics import compute_book_metrics

    def run(positions):
        b = small_book
        return compute_book_metrics(positions, b["balances"], b["prices"], b["returns"], b["instruments"])

    pos = small_book["positions"].with_row_index("_row")
    grouped = run(pos.drop("_row"))
    shuffled_pos = pos.sample(fraction=1.0, shuffle=True, seed=3)
    shuffled = run(shuffled_pos.drop("_row"))
    a, b = grouped.accounts, shuffled.accounts
    assert a.select(pl.col(pl.String, pl.Boolean)).equals(b.select(pl.col(pl.String, pl.Boolean)))
    np.testing.assert_allclose(a.select(pl.col(pl.Float64)).to_numpy(), b.select(pl.col(pl.Float64)).to_numpy(), rtol=1e-12)
    back = shuffled.positions.with_columns(shuffled_pos["_row"]).sort("_row").drop("_row")
    np.testing.assert_allclose(
        grouped.positions.select(pl.col(pl.Float64)).to_numpy(), back.select(pl.col(pl.Float64)).to_numpy(), rtol=1e-12
    )
