"""compute_book_metrics: the contract the cycle relies on, checked against slow obvious per-account loops."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from metrics_builders import FX, MIDS, make_balances, make_positions, make_prices

from risklib.core import frames
from risklib.core.instruments import FX_MAJORS, pnl_usd
from risklib.errors import MetricsError, SchemaError
from risklib.metrics import (
    MetricsConfig,
    compute_book_metrics,
    ewma_volatility,
    parametric_var_es,
    update_peak,
    volatility_ratio,
)


def _run(book, **kw):
    args = {k: kw.pop(k, book[k]) for k in ("positions", "balances", "prices", "returns", "instruments")}
    return compute_book_metrics(args["positions"], args["balances"], args["prices"], args["returns"], args["instruments"], **kw)


def _slow_account(book, account):
    """Revalue every position bar by bar with the reference pnl_usd: the obvious loop."""
    pos = book["positions"].filter(pl.col("account_id") == account)
    bal = book["balances"].filter(pl.col("account_id") == account).row(0, named=True)
    r = book["returns"]
    upnl = 0.0
    bar_pnl = np.zeros(r.shape[0])
    gross = 0.0
    for row in pos.iter_rows(named=True):
        ins = FX_MAJORS[row["instrument"]]
        p0 = MIDS[row["instrument"]]
        j = FX.index(row["instrument"])
        upnl += float(pnl_usd(np.array(row["quantity"]), np.array(row["entry_price"]), np.array(p0), np.array(ins.usd_is_quote)))
        gross += abs(row["quantity"] * p0 if ins.usd_is_quote else row["quantity"])
        for t in range(r.shape[0]):
            p1 = p0 * (1 + r[t, j])
            bar_pnl[t] += float(pnl_usd(np.array(row["quantity"]), np.array(p0), np.array(p1), np.array(ins.usd_is_quote)))
    equity = bal["cash_usd"] + upnl
    k = int((r.shape[0] - 1) * 0.01)
    return {
        "equity_usd": equity,
        "gross_exposure_usd": gross,
        "var_95": -np.percentile(bar_pnl, 5) / equity,
        "var_99": -np.percentile(bar_pnl, 1) / equity,
        "es_99": -np.sort(bar_pnl)[: k + 1].mean() / equity,
        "daily_pnl_pct": (equity - bal["start_of_day_equity_usd"]) / bal["start_of_day_equity_usd"],
        # the account's own P&L series through the series functions: EWMA vol and current/normal ratio
        "ewma_vol": ewma_volatility(bar_pnl)[0] / equity,
        "vol_ratio": volatility_ratio(bar_pnl, window=20, normal_window=250)[0],
        "var_99_parametric": parametric_var_es(bar_pnl, 0.99)[0][0] / equity,
    }


def test_frames_have_exactly_the_contract_schemas(small_book):
    book = _run(small_book)
    assert book.accounts.schema == pl.Schema(frames.ACCOUNT_METRICS)
    assert book.positions.schema == pl.Schema(frames.POSITION_METRICS)
    assert book.correlation.shape == (7, 7)
    assert book.instrument_vol_ratio.shape == (7,)
    assert book.instruments == tuple(FX)


@pytest.mark.parametrize("account", ["a", "b"])
def test_account_metrics_equal_a_slow_revaluation_loop(small_book, account):
    # Arrange
    want = _slow_account(small_book, account)
    # Act
    got = _run(small_book).accounts.filter(pl.col("account_id") == account).row(0, named=True)
    # Assert: exact USD/JPY and USD/CHF revaluation, historical VaR/ES of the account's bar P&L
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert got["valid"] and got["invalid_reason"] is None


def test_component_var_sums_to_parametric_var_per_account(small_book):
    book = _run(small_book)
    sums = book.positions.group_by("account_id").agg(pl.col("risk_contribution").sum())
    joined = book.accounts.join(sums, on="account_id", how="left").filter(pl.col("n_positions") > 0)
    np.testing.assert_allclose(joined["risk_contribution"], joined["var_99_parametric"], rtol=1e-9)


def test_flat_account_is_valid_with_zero_risk(small_book):
    got = _run(small_book).accounts.filter(pl.col("account_id") == "flat").row(0, named=True)
    assert got["valid"] is True
    assert got["gross_exposure_usd"] == 0.0 and got["var_99"] == 0.0 and got["es_99"] == 0.0
    assert got["vol_ratio"] == 1.0 and got["regime"] == "sideways" and got["risk_score"] == 0.0
    assert got["drawdown"] == 0.0 and got["n_positions"] == 0


def test_bad_accounts_are_marked_invalid_and_never_poison_the_rest(small_book):
    # Arrange: one bad account per failure mode next to the healthy ones
    bad_positions = make_positions(
        [
            ("nanq", "s", "EUR/USD", float("nan"), 1.08),
            ("noprice", "s", "USD/CAD", 1000.0, 1.3),
            ("unknown", "s", "XAU/USD", 1.0, 2000.0),
            ("nobalance", "s", "EUR/USD", 1000.0, 1.08),
            ("broke", "s", "EUR/USD", 1_000_000.0, 1.20),
        ]
    )
    bad_balances = make_balances(
        [("nanq", 1e4, 1e4), ("noprice", 1e4, 1e4), ("unknown", 1e4, 1e4), ("broke", 10_000.0, 10_000.0), ("zerosod", 1e4, 0.0)]
    )
    book = dict(small_book)
    book["positions"] = pl.concat([small_book["positions"], bad_positions])
    book["balances"] = pl.concat([small_book["balances"], bad_balances])
    book["prices"] = make_prices().filter(pl.col("instrument") != "USD/CAD")
    # Act
    got = _run(book).accounts
    clean = _run(small_book).accounts
    # Assert
    reasons = dict(zip(got["account_id"], got["invalid_reason"], strict=True))
    assert reasons["nanq"] == "quantity[instrument=EUR/USD, strategy=s]=NaN: must be finite"
    assert reasons["noprice"] == "price[instrument=USD/CAD]=missing: must be a finite price > 0"
    assert reasons["unknown"] == "instrument=XAU/USD: unknown instrument"
    assert reasons["nobalance"] == "balance: no balance row for this account"
    value = float(reasons["broke"].removeprefix("equity_usd=").removesuffix(": must be > 0"))
    assert value == pytest.approx(-110_000.0)
    assert reasons["zerosod"] == "start_of_day_equity_usd=0.0: must be > 0"
    bad = got.filter(pl.col("account_id").is_in(["nanq", "noprice", "unknown", "nobalance", "broke", "zerosod"]))
    assert not bad["valid"].any()
    assert bad["var_99"].is_nan().all() and bad["risk_score"].is_nan().all()  # unknown, never zero
    broke = got.filter(pl.col("account_id") == "broke").row(0, named=True)
    assert broke["drawdown"] == 1.0 and broke["daily_loss"] == pytest.approx(12.0)  # real losses stay visible
    healthy = got.filter(pl.col("account_id").is_in(["a", "b", "flat"]))
    assert healthy.equals(clean)


def test_short_history_keeps_drawdown_and_loss_but_invalidates_market_risk(small_book):
    short = small_book["returns"][:10]
    got = _run(small_book, returns=short).accounts
    a = got.filter(pl.col("account_id") == "a").row(0, named=True)
    assert a["valid"] is False
    assert a["invalid_reason"] == "returns: 10 bar(s), need at least min_history_bars=30"
    assert np.isnan(a["var_99"]) and np.isnan(a["ewma_vol"]) and a["regime"] is None
    assert np.isfinite(a["drawdown"]) and np.isfinite(a["daily_loss"]) and np.isfinite(a["risk_score"])
    assert got.filter(pl.col("account_id") == "flat")["valid"].item() is True


def test_a_bad_return_column_invalidates_only_its_holders(small_book):
    r = small_book["returns"].copy()
    r[5, FX.index("GBP/USD")] = np.nan
    got = _run(small_book, returns=r).accounts
    b = got.filter(pl.col("account_id") == "b").row(0, named=True)
    assert b["valid"] is False
    assert b["invalid_reason"] == "returns[instrument='GBP/USD', bar=5]=nan: must be finite and > -1"
    assert got.filter(pl.col("account_id") == "a")["valid"].item() is True


def test_carried_peak_sets_drawdown_and_streams_like_batch(small_book):
    # Arrange: the previous cycle's high-water mark is above today's equity
    first = _run(small_book).accounts
    peaks = first.select("account_id", (pl.col("equity_usd") * 1.25).alias("peak_equity_usd"))
    # Act
    got = _run(small_book, peaks=peaks).accounts
    # Assert
    want_peak, want_dd = update_peak(peaks["peak_equity_usd"].to_numpy(), first["equity_usd"].to_numpy())
    np.testing.assert_allclose(got["peak_equity_usd"], want_peak)
    np.testing.assert_allclose(got["drawdown"], want_dd)
    assert got.filter(pl.col("account_id") == "a")["drawdown"].item() == pytest.approx(0.2)


def test_without_peaks_the_start_of_day_equity_is_the_peak(small_book):
    b = _run(small_book).accounts.filter(pl.col("account_id") == "b").row(0, named=True)
    assert b["peak_equity_usd"] == max(51_000.0, b["equity_usd"])
    assert b["drawdown"] == pytest.approx(1 - b["equity_usd"] / b["peak_equity_usd"])


def test_risk_score_is_bounded_and_rises_with_exposure(small_book):
    base = _run(small_book).accounts
    doubled = _run(small_book, positions=small_book["positions"].with_columns(pl.col("quantity") * 3)).accounts
    assert base["risk_score"].is_between(0, 100).all()
    a0 = base.filter(pl.col("account_id") == "a")["risk_score"].item()
    a1 = doubled.filter(pl.col("account_id") == "a")["risk_score"].item()
    assert a1 > a0


def test_config_changes_annualisation(small_book):
    a252 = _run(small_book).accounts["ewma_vol"][0]
    a365 = _run(small_book, config=MetricsConfig(periods_per_year=365)).accounts["ewma_vol"][0]
    assert a365 == pytest.approx(a252 * np.sqrt(365 / 252), rel=1e-12)


def test_structural_errors_raise(small_book):
    with pytest.raises(MetricsError, match=r"returns has 7 column\(s\) but instruments has 6 label\(s\)"):
        _run(small_book, instruments=FX[:6])
    with pytest.raises(MetricsError, match=r"instruments: label\(s\) \['EUR/USD'\] repeat"):
        _run(small_book, instruments=["EUR/USD"] * 2 + FX[2:])
    with pytest.raises(SchemaError, match=r"balances: missing column\(s\) \['cash_usd'\]"):
        _run(small_book, balances=small_book["balances"].drop("cash_usd"))


def test_with_accounts_replaces_only_the_accounts(small_book):
    book = _run(small_book)
    other = book.with_accounts(book.accounts.head(1))
    assert other.accounts.height == 1 and other.positions.equals(book.positions)
