"""Metrics engine throughput, each figure against a baseline measured in the same run.

* ``speedup_vs_empyrical``: the per-account set (max drawdown, annual vol,
  VaR 95/99, ES 99) over seeded t-distributed returns, 10,000 accounts x 500
  days: an empyrical-reloaded loop over per-account ``pd.Series`` versus
  :func:`risklib.metrics.series_risk` (also against plain numpy, for scale),
  with the largest relative difference to empyrical.
* ``full_book_ms``: :func:`risklib.metrics.compute_book_metrics` for 10,000
  accounts x 20 positions over 50 instruments and 500 bars (historical and
  parametric VaR/ES, component VaR, vol ratio, EWMA vol, drawdown,
  correlation, risk score), median of repeats.
* ``mc_10k_ms``: Monte Carlo VaR/ES with 10,000 scenarios (multivariate t,
  float32) for the same book, versus float64 matmul + ``np.partition`` per row.
"""

from __future__ import annotations

import numpy as np
import polars as pl

import os
import time

from bench._harness import ms, time_calls
from risklib.core.instruments import Instrument

SEED = 20260302


def make_returns(n_series: int = 10_000, n_days: int = 500, seed: int = SEED) -> np.ndarray:
    """Seeded t-distributed (4 dof) daily returns with about 1% scale: (n_series, n_days)."""
    rng = np.random.default_rng(seed)
    return rng.standard_t(4, size=(n_series, n_days)) * 0.01


def make_book(
    n_accounts: int = 10_000, n_positions: int = 20, n_instruments: int = 50, n_bars: int = 500, seed: int = SEED
) -> dict:
    """A seeded synthetic book: positions, balances, prices, (T, N) returns, labels and instrument table."""
    rng = np.random.default_rng(seed)
    labels = [f"C{j:02d}/USD" if j % 3 else f"USD/C{j:02d}" for j in range(n_instruments)]
    table = {
        s: Instrument(s, s.split("/")[0], s.split("/")[1], 1e-4) for s in labels
    }
    # correlated returns: a few factors plus noise, fat tailed
    k = 4
    load = rng.normal(0, 1, size=(k, n_instruments))
    f = rng.standard_t(5, size=(n_bars, k))
    eps = rng.standard_t(5, size=(n_bars, n_instruments))
    returns = (f @ load * 0.002 + eps * 0.004).clip(-0.2, 0.2)
    mid = rng.uniform(0.5, 2.0, size=n_instruments)
    inst_idx = np.argsort(rng.random((n_accounts, n_instruments)), axis=1)[:, :n_positions]
    qty = rng.normal(0, 20_000, size=(n_accounts, n_positions))
    entry = mid[inst_idx] * (1 + rng.normal(0, 0.01, size=(n_accounts, n_positions)))
    ids = np.array([f"acc{i:05d}" for i in range(n_accounts)])
    positions = pl.DataFrame(
        {
            "account_id": np.repeat(ids, n_positions),
            "strategy": np.tile(np.array(["swing", "trend", "carry", "mr"]), n_accounts * n_positions // 4 + 1)[
                : n_accounts * n_positions
            ],
            "instrument": np.asarray(labels)[inst_idx.ravel()],
            "quantity": qty.ravel(),
            "entry_price": entry.ravel(),
        }
    )
    balances = pl.DataFrame(
        {
            "account_id": ids,
            "account_group": np.where(np.arange(n_accounts) % 2 == 0, "retail", "pro"),
            "cash_usd": rng.uniform(100_000, 1_000_000, size=n_accounts),
            "start_of_day_equity_usd": rng.uniform(100_000, 1_000_000, size=n_accounts),
        }
    )
    prices = pl.DataFrame({"instrument": labels, "mid": mid})
    return {
        "positions": positions,
        "balances": balances,
        "prices": prices,
        "returns": returns,
        "instruments": labels,
        "table": table,
    }


def _cpu_ms(fn, repeat: int = 5) -> float:
    """Median process CPU time of ``fn`` (all threads) in ms: insensitive to other processes sharing the cores."""
    fn()
    out = []
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        out.append(time.process_time() - c0)
    return ms(float(np.median(out)))


def _empyrical_loop(r: np.ndarray) -> np.ndarray:
    import empyrical as ep
    import pandas as pd

    out = np.empty((r.shape[0], 5))
    for i in range(r.shape[0]):
        s = pd.Series(r[i])
        out[i] = (
            ep.max_drawdown(s),
            ep.annual_volatility(s),
            ep.value_at_risk(s, 0.05),
            ep.value_at_risk(s, 0.01),
            ep.conditional_value_at_risk(s, 0.01),
        )
    return out


def _numpy_plain(r: np.ndarray) -> np.ndarray:
    wealth = np.cumprod(1.0 + r, axis=1)
    wealth = np.concatenate([np.ones((r.shape[0], 1)), wealth], axis=1)
    mdd = (1.0 - wealth / np.maximum.accumulate(wealth, axis=1)).max(axis=1)
    vol = r.std(axis=1, ddof=1) * np.sqrt(252)
    q = np.percentile(r, [5, 1], axis=1)
    k = int((r.shape[1] - 1) * 0.01)
    es = np.partition(r, k, axis=1)[:, : k + 1].mean(axis=1)
    return np.column_stack([mdd, vol, -q[0], -q[1], -es])


def _per_account() -> dict[str, float]:
    from risklib.metrics import series_risk

    r = make_returns()
    c0 = time.process_time()
    t_emp = time_calls(lambda: _empyrical_loop(r), repeat=1, warmup=0)
    emp_cpu = time.process_time() - c0  # single-threaded: its CPU time calibrates how loaded the machine is
    ref = _empyrical_loop(r)
    t_np = time_calls(lambda: _numpy_plain(r), repeat=5)
    t_ours = time_calls(lambda: series_risk(r), repeat=15, warmup=2)
    got = series_risk(r)
    mine = np.column_stack([got["max_drawdown"], got["annual_vol"], got["var_95"], got["var_99"], got["es_99"]])
    want = ref * np.array([-1, 1, -1, -1, -1])
    rel = float(np.max(np.abs(mine - want) / np.abs(want)))
    med = float(np.median(t_ours))
    return {
        "series_risk_cpu_ms": _cpu_ms(lambda: series_risk(r)),
        "empyrical_loop_ms": ms(float(t_emp[0])),
        "empyrical_loop_cpu_ms": ms(emp_cpu),
        "numpy_plain_ms": ms(float(np.median(t_np))),
        "series_risk_ms": ms(med),
        "speedup_vs_empyrical": round(float(t_emp[0]) / med, 1),
        "speedup_vs_numpy": round(float(np.median(t_np)) / med, 2),
        "max_rel_diff_vs_empyrical": rel,
    }


def _book() -> dict[str, float]:
    from risklib.metrics import compute_book_metrics, monte_carlo_scenarios, monte_carlo_var_es

    b = make_book()

    def full():
        return compute_book_metrics(
            b["positions"], b["balances"], b["prices"], b["returns"], b["instruments"], instrument_table=b["table"]
        )

    t_full = time_calls(full, repeat=15, warmup=2)
    res = full()
    assert res.accounts["valid"].all(), "benchmark book must be entirely valid"

    # exposure matrix for the Monte Carlo comparison
    n = len(b["instruments"])
    j = {s: i for i, s in enumerate(b["instruments"])}
    pm = res.positions
    a_idx = np.repeat(np.arange(res.accounts.height), pm.height // res.accounts.height)
    x = np.zeros((res.accounts.height, n))
    np.add.at(x, (a_idx, np.array([j[s] for s in pm["instrument"].to_list()])), pm["notional_usd"].to_numpy())
    r = b["returns"]

    def mc():
        scen = monte_carlo_scenarios(r, 10_000, seed=SEED, dist="t", dof=5.0, dtype="float32")
        return monte_carlo_var_es(x, scen)

    def mc_baseline():
        scen = monte_carlo_scenarios(r, 10_000, seed=SEED, dist="t", dof=5.0, dtype="float64")
        out = np.empty((x.shape[0], 2))
        m = scen.shape[0]
        k = int((m - 1) * 0.01)
        h = (m - 1) * 0.01
        for lo in range(0, x.shape[0], 1000):
            pnl = x[lo : lo + 1000] @ scen.T
            part = np.partition(pnl, [k, k + 1], axis=1)
            out[lo : lo + 1000, 0] = -(part[:, k] + (part[:, k + 1] - part[:, k]) * (h - k))
            out[lo : lo + 1000, 1] = -part[:, : k + 1].mean(axis=1)
        return out

    t_mc = time_calls(mc, repeat=5, warmup=1)
    t_mcb = time_calls(mc_baseline, repeat=2, warmup=0)
    a, bb = mc(), mc()
    reproducible = float(all(np.array_equal(a[k], bb[k]) for k in a))
    base = mc_baseline()
    # same draws in float64 (the float32 scenarios cast up): the float32 product's rounding only
    scen32 = monte_carlo_scenarios(r, 10_000, seed=SEED, dist="t", dof=5.0, dtype="float32")
    ref64 = monte_carlo_var_es(x, scen32.astype(np.float64))
    rel = float(np.max(np.abs(a["var_99"] - ref64["var_99"]) / ref64["var_99"]))
    return {
        "full_book_ms": ms(float(np.median(t_full))),
        "full_book_p90_ms": ms(float(np.percentile(t_full, 90))),
        "mc_10k_ms": ms(float(np.median(t_mc))),
        "mc_baseline_ms": ms(float(np.median(t_mcb))),
        "mc_speedup_vs_baseline": round(float(np.median(t_mcb)) / float(np.median(t_mc)), 2),
        "mc_reproducible": reproducible,
        "mc_float32_vs_float64_var99_max_rel": rel,
        "full_book_cpu_ms": _cpu_ms(full),
        "mc_10k_cpu_ms": _cpu_ms(mc, repeat=3),
    }


def run() -> dict[str, float]:
    load_before = os.getloadavg()[0]
    out = _per_account()
    out.update(_book())
    # the machine is shared: the load average says how much of the wall time was other processes'
    out["load_avg_1m_before"] = round(load_before, 2)
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out["cpu_count"] = float(os.cpu_count() or 0)
    return out
