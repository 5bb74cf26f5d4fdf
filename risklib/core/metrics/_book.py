"""Per-account and per-position metrics of a whole book in one vectorised pass (the cycle's metrics stage).

Valuation
    A position of signed ``quantity`` base units in ``BASE/QUOTE`` at ``mid``
    has USD notional :func:`~risklib.core.instruments.notional_usd` and
    unrealized P&L :func:`~risklib.core.instruments.pnl_usd`.
    ``equity = cash_usd + sum(unrealized P&L)``.
Risk
    Each account's exposure per instrument (USD notional, netted across
    strategies) times the per-bar *USD* return factor of the instrument
    (``r`` for ``XXX/USD``, ``r / (1 + r)`` for ``USD/XXX``, exact
    revaluation, see :func:`usd_returns`) gives the account's P&L in every
    historical bar. VaR/ES are positive fractions of current equity over one
    bar (the bar of ``returns`` is the VaR horizon).

Invalid accounts (``valid=False``, ``invalid_reason`` names field and value)
    * *Valuation failures* (no balance row, NaN/inf cash or start-of-day
      equity, non-positive start-of-day equity, a held instrument that is
      unknown or has no usable price, NaN quantity or entry price): every
      metric that depends on equity is NaN, ``peak_equity_usd`` keeps the
      carried high-water mark so it is not lost, ``regime`` is null.
    * *Non-positive equity*: equity and P&L figures are kept (they are real),
      ``drawdown`` is 1.0 (everything lost), ratios to equity are NaN.
    * *History failures* (fewer than ``min_history_bars`` bars, a held
      instrument with NaN/inf/<= -100% returns or without a return column):
      valuation, exposure, drawdown, daily loss and risk score are kept
      (drawdown and loss ladders keep working); VaR, ES, volatility,
      correlation fields are NaN and ``regime`` is null.
    NaN never reads as "no risk" downstream because ``valid=False`` makes the
    policy fail closed; the fields that can be computed stay real so the
    drawdown and daily-loss ladders still fire.
Accounts without positions are valid: zero exposure, VaR, ES and volatility,
``vol_ratio`` 1.0 (nothing changed), correlation fields 0, regime ``sideways``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy.special import ndtri

from risklib.core import frames
from risklib.core.instruments import FX_MAJORS, Instrument
from risklib.core.metrics import _book_kernels, _kernels
from risklib.core.metrics._config import MetricsConfig
from risklib.core.metrics._correlation import correlation_index as _corr_index
from risklib.core.metrics._correlation import cov_to_corr
from risklib.core.metrics._exposure import account_exposure, concentration
from risklib.core.metrics._regime import regime_from_moments
from risklib.core.metrics._risk_score import risk_score
from risklib.core.metrics._volatility import BACKCAST_BARS, BACKCAST_DECAY, ewma_variance, ratio
from risklib.errors import MetricsError, SchemaError


_DEFAULT = MetricsConfig()


@dataclasses.dataclass(frozen=True)
class BookMetrics:
    """Result of :func:`compute_book_metrics`.

    Attributes
    ----------
    accounts : pl.DataFrame
        Exactly :data:`frames.ACCOUNT_METRICS`, one row per account.
    positions : pl.DataFrame
        Exactly :data:`frames.POSITION_METRICS`, one row per position row.
    correlation : np.ndarray (N, N)
        EWMA correlation of the instruments (zero mean, ``ewma_lambda``).
    instrument_vol_ratio : np.ndarray (N,)
        Current / normal volatility per instrument (NaN for unusable columns).
    instruments : tuple of str
        Labels of the N columns.
    instrument_ewma_vol : np.ndarray (N,)
        Annualised EWMA volatility per instrument.
    correlation_index : float
        Average pairwise instrument correlation (usable columns only).
    """

    accounts: pl.DataFrame
    positions: pl.DataFrame
    correlation: np.ndarray
    instrument_vol_ratio: np.ndarray
    instruments: tuple[str, ...]
    instrument_ewma_vol: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))
    correlation_index: float = float("nan")

    def with_accounts(self, accounts: pl.DataFrame) -> BookMetrics:
        """A copy with ``accounts`` replaced (e.g. after marking quarantined accounts invalid)."""
        return dataclasses.replace(self, accounts=accounts)


def _first_bad(values: np.ndarray) -> tuple[int, float] | None:
    bad = ~np.isfinite(values) | (values <= -1.0)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return i, float(values[i])


def _index_of(values: pl.Series, keys: pl.Series) -> np.ndarray:
    """Row of ``keys`` (unique) holding each of ``values``, -1 where absent (null matches a null key).

    A cast to an Enum of the keys: one hash lookup per value, cheaper than a
    join. Runs of equal values (positions grouped by account) are looked up
    once per run.
    """
    n = values.len()
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    head = values.ne_missing(values.shift(1)).to_numpy()
    head[0] = True
    starts = np.flatnonzero(head)
    if starts.size < n // 2:
        found = _index_of(values.gather(starts), keys)
        return np.repeat(found, np.diff(np.append(starts, n)))
    out = np.full(n, -1, dtype=np.int64)
    present = keys.is_not_null().to_numpy()
    if present.any():
        code = values.cast(pl.Enum(keys.filter(pl.Series(present))), strict=False).to_physical()
        hit = code.is_not_null().to_numpy()
        out[hit] = np.flatnonzero(present)[code.drop_nulls().to_numpy().astype(np.int64)]
    if not present.all():
        out[values.is_null().to_numpy()] = int(np.argmin(present))
    return out


def _reason(cond: pl.Expr, text: pl.Expr) -> pl.Expr:
    return pl.when(cond).then(text).otherwise(pl.lit(None, dtype=pl.String))


def _fmt(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String).fill_null("missing")


def compute_book_metrics(
    positions: pl.DataFrame,
    balances: pl.DataFrame,
    prices: pl.DataFrame,
    returns: np.ndarray,
    instruments: Sequence[str],
    *,
    peaks: pl.DataFrame | None = None,
    config: MetricsConfig = _DEFAULT,
    instrument_table: dict[str, Instrument] | None = None,
) -> BookMetrics:
    """Every per-account and per-position metric of the book, vectorised across accounts.

    Parameters
    ----------
    positions : pl.DataFrame
        :data:`frames.POSITIONS` (signed base quantity, entry price).
    balances : pl.DataFrame
        :data:`frames.BALANCES` (cash and start-of-day equity, USD).
    prices : pl.DataFrame
        Latest quotes: ``instrument``, ``mid`` (quote per base); one row per
        instrument (the last row wins if repeated).
    returns : np.ndarray, shape (T, N)
        Simple per-bar instrument returns, oldest first; one bar is the VaR horizon.
    instruments : sequence of str
        The N column labels of ``returns`` (unique).
    peaks : pl.DataFrame, optional
        :data:`frames.PEAKS` carried from the previous cycle. Without it (or
        for an account absent from it) the peak is ``max(start_of_day, equity)``.
    config : MetricsConfig
    instrument_table : dict, optional
        Instrument reference data (default :data:`FX_MAJORS`); instruments
        outside it are unknown.

    Returns
    -------
    BookMetrics
        See the module docstring for definitions and for how invalid accounts read.

    Raises
    ------
    SchemaError
        A frame lacks a column or has an uncastable one.
    MetricsError
        ``returns`` is not 2-D, its column count differs from ``instruments``,
        or instrument labels repeat. (Bad *values* never raise: they mark the
        accounts they touch invalid.)
    """
    cfg = config
    table = FX_MAJORS if instrument_table is None else instrument_table
    pos = frames.conform(positions, frames.POSITIONS, "positions")
    bal = frames.conform(balances, frames.BALANCES, "balances")
    if "instrument" not in prices.columns or "mid" not in prices.columns:
        raise SchemaError(f"prices: missing column(s) {sorted({'instrument', 'mid'} - set(prices.columns))}; have {prices.columns}")
    px = prices.select(pl.col("instrument").cast(pl.String), pl.col("mid").cast(pl.Float64)).unique(
        "instrument", keep="last", maintain_order=True
    )
    labels = [str(s) for s in instruments]
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise MetricsError(f"returns: expected a (T, N) array, got shape {r.shape}")
    if r.shape[1] != len(labels):
        raise MetricsError(f"returns has {r.shape[1]} column(s) but instruments has {len(labels)} label(s)")
    if len(set(labels)) != len(labels):
        dup = sorted({s for s in labels if labels.count(s) > 1})
        raise MetricsError(f"instruments: label(s) {dup} repeat")
    n_bars, n_ins = r.shape

    # --- instruments: reference data, usable return columns ---------------------------------
    usd_quote = np.zeros(n_ins, dtype=bool)
    col_reason: list[str | None] = [None] * n_ins
    for j, sym in enumerate(labels):  # per instrument (N ~ 50), not per account
        ins = table.get(sym)
        if ins is None:
            col_reason[j] = f"instrument={sym!r}: unknown instrument"
            continue
        if ins.base != "USD" and ins.quote != "USD":
            col_reason[j] = f"instrument={sym!r}: cross without USD is not supported"
            continue
        usd_quote[j] = ins.usd_is_quote
        bad = _first_bad(r[:, j])
        if bad is not None:
            col_reason[j] = f"returns[instrument={sym!r}, bar={bad[0]}]={bad[1]!r}: must be finite and > -1"
    col_ok = np.array([c is None for c in col_reason], dtype=bool)
    history_reason = (
        f"returns: {n_bars} bar(s), need at least min_history_bars={cfg.min_history_bars}"
        if n_bars < cfg.min_history_bars
        else None
    )
    rr = np.where(col_ok[None, :], r, 0.0)
    u = np.where(usd_quote[None, :], rr, rr / (1.0 + rr))  # USD P&L per USD notional, per bar

    ins_frame = pl.DataFrame(
        {
            "instrument": labels,
            "_j": np.arange(n_ins, dtype=np.int64),
            "_uq": usd_quote,
            "_col_reason": col_reason,
            "_col_bad": [c is not None for c in col_reason],
        },
        schema={"instrument": pl.String, "_j": pl.Int64, "_uq": pl.Boolean, "_col_reason": pl.String, "_col_bad": pl.Boolean},
    )
    known = pl.DataFrame(
        {
            "instrument": list(table),
            "_known": [i.base == "USD" or i.quote == "USD" for i in table.values()],
            "_uq_ref": [i.usd_is_quote for i in table.values()],
        },
        schema={"instrument": pl.String, "_known": pl.Boolean, "_uq_ref": pl.Boolean},
    )

    # --- accounts -----------------------------------------------------------------------------
    dup_rows = bal["account_id"].is_duplicated()
    if dup_rows.any():
        bal = bal.with_columns(dup_rows.alias("_dup")).unique("account_id", keep="first", maintain_order=True)
    else:
        bal = bal.with_columns(dup_rows.alias("_dup"))
    n_bal = bal.height
    # position rows -> balance rows through an Enum of the balance ids: one hash lookup per row, no join
    a_idx = _index_of(pos["account_id"], bal["account_id"])
    # accounts with positions but no balance row follow the balance rows, in order of first appearance
    no_bal = a_idx < 0
    extra_ids = pos["account_id"].filter(pl.Series(no_bal)).unique(maintain_order=True)
    if extra_ids.len():
        a_idx[no_bal] = n_bal + _index_of(pos["account_id"].filter(pl.Series(no_bal)), extra_ids)
    n_acc = n_bal + extra_ids.len()
    ids = pl.concat([bal["account_id"], extra_ids])
    pad = np.full(extra_ids.len(), np.nan)
    cash = np.concatenate([bal["cash_usd"].to_numpy(), pad])
    sod = np.concatenate([bal["start_of_day_equity_usd"].to_numpy(), pad])
    has_bal = np.arange(n_acc) < n_bal
    dup = np.concatenate([bal["_dup"].to_numpy(), np.zeros(extra_ids.len(), dtype=bool)])
    if peaks is not None:
        pk = frames.conform(peaks, frames.PEAKS, "peaks").unique("account_id", keep="last")
        carried = ids.to_frame().join(pk, on="account_id", how="left", maintain_order="left")["peak_equity_usd"].to_numpy()
    else:
        carried = np.full(n_acc, np.nan)

    # --- positions: instrument data by lookup, per-row validity ----------------------------------
    # one small frame per instrument (reference data, quote, return column), in one Polars call
    ins_info = frames.collect(
        pl.concat([f.lazy().select("instrument") for f in (known, px, ins_frame)])
        .unique(maintain_order=True)
        .join(known.lazy(), on="instrument", how="left")
        .join(px.lazy(), on="instrument", how="left")
        .join(ins_frame.lazy(), on="instrument", how="left")
    )
    i_row = _index_of(pos["instrument"], ins_info["instrument"])  # -1: not found

    # each instrument column with the value a missing instrument reads, then one more row holding
    # just that value: row index -1 (not found) reads it
    missing = {"mid": np.nan, "_uq_ref": True, "_j": -1, "_known": False, "_col_bad": True}
    info = ins_info.select(pl.col(c).fill_null(v) for c, v in missing.items())
    mid, uq, j_idx, known_row, col_bad = (np.append(info[c].to_numpy(), v)[i_row] for c, v in missing.items())
    mid, uq, j_idx = mid.astype(np.float64), uq.astype(bool), j_idx.astype(np.int64)
    q = pos["quantity"].to_numpy().astype(np.float64)  # nulls read as NaN
    entry = pos["entry_price"].to_numpy().astype(np.float64)
    with np.errstate(invalid="ignore"):
        row_ok = known_row.astype(bool) & np.isfinite(q) & np.isfinite(mid) & (mid > 0) & np.isfinite(entry) & (entry > 0)
    hist_ok_row = (j_idx >= 0) & ~col_bad.astype(bool)

    with np.errstate(all="ignore"):
        notional = np.where(uq, q * mid, q)
        upnl = np.where(uq, q * (mid - entry), q * (mid - entry) / mid)
    notional_v = np.where(row_ok, notional, 0.0)
    upnl_v = np.where(row_ok, upnl, 0.0)
    held_row = row_ok & (q != 0)

    # account-level reasons (first offending position row per account); messages are built for
    # the offending rows only (a handful), never for the whole book
    acc_val_reason = np.full(n_acc, None, dtype=object)
    acc_hist_reason = np.full(n_acc, None, dtype=object)
    bad_rows = np.flatnonzero(~row_ok | ~hist_ok_row)
    if bad_rows.size:
        finite = lambda c: pl.col(c).is_not_null() & pl.col(c).is_finite()  # noqa: E731
        bad_checks = (
            ~pl.col("_known").fill_null(False),
            ~finite("quantity"),
            ~(finite("mid") & (pl.col("mid") > 0)),
            ~(finite("entry_price") & (pl.col("entry_price") > 0)),
        )
        pb = (
            pos[bad_rows]
            .with_columns(pl.Series("_a", a_idx[bad_rows]))
            .join(ins_info, on="instrument", how="left", maintain_order="left")
            .with_columns(
                pl.coalesce(
                    _reason(
                        bad_checks[0],
                        pl.format("instrument={}: unknown instrument", pl.col("instrument")),
                    ),
                    _reason(
                        bad_checks[1],
                        pl.format(
                            "quantity[instrument={}, strategy={}]={}: must be finite",
                            pl.col("instrument"), pl.col("strategy"), _fmt("quantity"),
                        ),
                    ),
                    _reason(
                        bad_checks[2],
                        pl.format("price[instrument={}]={}: must be a finite price > 0", pl.col("instrument"), _fmt("mid")),
                    ),
                    _reason(
                        bad_checks[3],
                        pl.format(
                            "entry_price[instrument={}, strategy={}]={}: must be > 0",
                            pl.col("instrument"), pl.col("strategy"), _fmt("entry_price"),
                        ),
                    ),
                ).alias("_val_reason"),
                pl.coalesce(
                    pl.col("_col_reason"),
                    _reason(pl.col("_j").is_null(), pl.format("instrument={}: no return history", pl.col("instrument"))),
                ).alias("_hist_reason"),
            )
        )
        val_r = pb.filter(pl.col("_val_reason").is_not_null()).group_by("_a").agg(pl.col("_val_reason").first())
        hist_r = (
            pb.filter(pl.col("_hist_reason").is_not_null() & ~(pl.col("quantity") == 0))
            .group_by("_a")
            .agg(pl.col("_hist_reason").first())
        )
        acc_val_reason[val_r["_a"].to_numpy()] = val_r["_val_reason"].to_list()
        acc_hist_reason[hist_r["_a"].to_numpy()] = hist_r["_hist_reason"].to_list()

    # --- valuation -------------------------------------------------------------------------------
    upnl_acc = np.bincount(a_idx, weights=upnl_v, minlength=n_acc)
    n_pos = np.bincount(a_idx, weights=~(q == 0), minlength=n_acc).astype(np.int64)  # NaN quantity counts
    equity = cash + upnl_acc
    bal_reason = np.full(n_acc, None, dtype=object)
    for cond, make in (  # four vectorised checks; messages are built for the offending accounts only
        (~(np.isfinite(sod) & (sod > 0)), lambda i: f"start_of_day_equity_usd={float(sod[i])!r}: must be > 0"),
        (~np.isfinite(cash), lambda i: f"cash_usd={float(cash[i])!r}: must be finite"),
        (dup, lambda i: "balance: duplicate balance rows for this account"),
        (~has_bal, lambda i: "balance: no balance row for this account"),
    ):
        for i in np.flatnonzero(cond):
            bal_reason[i] = make(i)
    val_bad = (bal_reason != None) | (acc_val_reason != None)  # noqa: E711
    reason = np.where(bal_reason != None, bal_reason, acc_val_reason)  # noqa: E711
    eq_known = ~val_bad
    eq_nonpos = eq_known & ~(equity > 0)
    for i in np.flatnonzero(eq_nonpos & (reason == None)):  # noqa: E711
        reason[i] = f"equity_usd={float(equity[i])!r}: must be > 0"
    good = eq_known & ~eq_nonpos  # equity usable as a denominator
    equity_out = np.where(eq_known, equity, np.nan)
    upnl_out = np.where(eq_known, upnl_acc, np.nan)
    peak = np.where(
        eq_known,
        np.fmax(np.where(np.isnan(carried), np.fmax(sod, equity), carried), equity),
        np.fmax(carried, sod),  # equity unknown: keep the carried mark (or the start of day)
    )
    with np.errstate(all="ignore"):
        daily_pnl = np.where(eq_known, equity - sod, np.nan)
        daily_pct = daily_pnl / sod
        dd = np.where(good, 1.0 - equity / peak, np.where(eq_nonpos, 1.0, np.nan))
        dd = np.clip(dd, 0.0, 1.0)
    daily_loss = np.maximum(0.0, -daily_pct) + 0.0  # + 0.0: no negative zero
    expo = account_exposure(notional_v, a_idx, n_acc, np.where(good, equity, np.nan))

    # --- exposure matrix and history reasons ------------------------------------------------------
    holds = n_pos > 0
    hist_bad = acc_hist_reason != None  # noqa: E711
    if history_reason is not None:
        hist_bad = hist_bad | holds
        acc_hist_reason = np.where(holds & (acc_hist_reason == None), history_reason, acc_hist_reason)  # noqa: E711
    reason = np.where(reason == None, np.where(hist_bad, acc_hist_reason, None), reason)  # noqa: E711
    risk_ok = good & ~hist_bad
    valid = good & ~hist_bad

    # --- risk from history ------------------------------------------------------------------------
    nan_acc = np.full(n_acc, np.nan)
    var95, var99, es99, var99p = nan_acc.copy(), nan_acc.copy(), nan_acc.copy(), nan_acc.copy()
    ewma_vol, vol_ratio = nan_acc.copy(), nan_acc.copy()
    corr_idx, corr_max = nan_acc.copy(), nan_acc.copy()
    regime = np.full(n_acc, None, dtype=object)
    ins_vol_ratio = np.full(n_ins, np.nan)
    ins_ewma_vol = np.full(n_ins, np.nan)
    corr = np.full((n_ins, n_ins), np.nan)
    mean_ins = np.zeros(n_ins)
    z99 = float(ndtri(0.99))
    pos_var_long = np.full(n_ins, np.nan)
    pos_var_short = np.full(n_ins, np.nan)
    pair_out = np.zeros((n_acc, 3))
    conc = np.empty(n_acc)
    row_risk = risk_ok[np.maximum(a_idx, 0)] & held_row & hist_ok_row
    horizon = np.sqrt(cfg.var_horizon_bars)  # square-root-of-time from one bar
    pvar, contrib, vscore, crisk = (np.empty(a_idx.size) for _ in range(4))
    book_corr_index = float("nan")
    eq_safe = np.where(risk_ok, equity, np.nan)

    if history_reason is None and n_ins > 0:
        ppy = cfg.periods_per_year
        w_cur, w_norm = cfg.vol_window_bars, cfg.normal_vol_window_bars
        ok_idx = np.flatnonzero(col_ok)
        # covariances of small (T, N) windows in one compiled pass each: no BLAS thread start-up per call
        uc = np.ascontiguousarray(u)
        start_base = max(0, n_bars - w_cur - w_norm)
        cov_all = _kernels.window_cov(uc, 0, n_bars)
        cov_cur = _kernels.window_cov(uc, n_bars - w_cur, n_bars)
        cov_base = _kernels.window_cov(uc, start_base, n_bars - w_cur)
        cov_reg = _kernels.window_cov(uc, max(0, n_bars - cfg.regime_window_bars), n_bars)
        # EWMA covariance forecast (see ewma_covariance): lam^T backcast + (1 - lam) sum lam^(T-1-t) u_t u_t'
        lam = cfg.ewma_lambda
        tau = min(BACKCAST_BARS, n_bars)
        wb = np.zeros(n_bars)
        wb[:tau] = BACKCAST_DECAY ** np.arange(tau)
        wb[:tau] /= wb[:tau].sum()
        weights = lam**n_bars * wb + (1.0 - lam) * lam ** np.arange(n_bars - 1, -1, -1)
        cov_ewma = _kernels.weighted_gram(uc, weights)
        reg = u[-cfg.regime_window_bars :]
        mean_reg = reg.mean(axis=0)

        # instrument-level figures on the instruments' own (price) returns
        raw = rr[:, ok_idx]
        ins_vol_ratio[ok_idx] = ratio(
            raw[n_bars - w_cur :].std(axis=0, ddof=1), raw[max(0, n_bars - w_cur - w_norm) : n_bars - w_cur].std(axis=0, ddof=1)
        )
        ins_ewma_vol[ok_idx] = np.sqrt(ewma_variance(raw.T, lam=cfg.ewma_lambda)[:, -1] * ppy)
        c_ok = cov_to_corr(cov_ewma[np.ix_(ok_idx, ok_idx)])
        corr[np.ix_(ok_idx, ok_idx)] = c_ok
        book_corr_index = float(_corr_index(c_ok)) if ok_idx.size >= 2 else 0.0

        # stand-alone historical VaR95 per USD of a long and of a short position in each instrument
        sl = np.empty((2 * n_ins, 4))
        _kernels.tail_rows_serial(np.ascontiguousarray(np.concatenate([u.T, -u.T])), 0.05, 0.01, sl)
        pos_var_long, pos_var_short = np.ascontiguousarray(sl[:n_ins, 0]), np.ascontiguousarray(sl[n_ins:, 0])
        # one compiled pass over the accounts' position rows: historical VaR / ES of the P&L in every
        # bar (USD); five quadratic forms x' C x, full-window (parametric VaR and its Euler
        # components, as in component_var), EWMA, current, baseline and regime-window covariances;
        # the P&L means; signed pair correlations; and each position row's figures
        mean = u.mean(axis=0) if cfg.include_mean else None
        if mean is not None:
            mean_ins = mean
        k_cov = 1 if cfg.parametric_cov == "ewma" else 0
        h = np.ascontiguousarray(np.hstack([cov_all, cov_ewma, cov_cur, cov_base, cov_reg]))
        tail, qf, xm = np.empty((n_acc, 4)), np.empty((n_acc, 5)), np.empty((n_acc, 2))
        sorted_rows = a_idx.size == 0 or bool((np.diff(a_idx) >= 0).all())
        order = np.zeros(0, dtype=np.int64) if sorted_rows else np.argsort(a_idx, kind="stable")
        start = np.concatenate([[0], np.cumsum(np.bincount(a_idx, minlength=n_acc))]).astype(np.int64)
        _book_kernels.book_rows(
            start, order, j_idx, notional_v, held_row & hist_ok_row, q, row_risk,
            risk_ok, eq_safe,
            np.ascontiguousarray(u.T), 0.05, 0.01, h, k_cov, np.vstack([mean_reg, mean_ins]),
            np.nan_to_num(corr, nan=0.0), float(cfg.correlation_threshold),
            z99, mean_ins, pos_var_long, pos_var_short, ins_vol_ratio, float(horizon),
            tail, qf, xm, pair_out, conc,
            pvar, contrib, vscore, crisk,
        )
        var95, var99, es99 = tail[:, 0].copy(), tail[:, 1].copy(), tail[:, 3].copy()
        flat = risk_ok & ~holds
        var95[flat] = var99[flat] = es99[flat] = 0.0
        q_all, q_ewma, q_cur, q_base, q_reg = np.maximum(qf.T, 0.0)
        sigma = np.sqrt(q_ewma if k_cov else q_all)
        var99p = z99 * sigma
        if mean is not None:
            var99p = var99p - xm[:, 1]
        ewma_vol = np.sqrt(q_ewma * ppy)
        vol_ratio = np.where(holds, ratio(np.sqrt(q_cur), np.sqrt(q_base)), 1.0)
        regime = regime_from_moments(
            xm[:, 0], np.sqrt(q_reg), vol_ratio,
            periods_per_year=ppy, sideways_sharpe=cfg.regime_sideways_sharpe, high_vol_ratio=cfg.regime_high_vol_ratio,
        )
        corr_idx, corr_max = pair_out[:, 0].copy(), pair_out[:, 1].copy()

        with np.errstate(divide="ignore", invalid="ignore"):
            var95, var99, es99, var99p = (v * horizon / eq_safe for v in (var95, var99, es99, var99p))
            ewma_vol = ewma_vol / eq_safe
        bad = ~risk_ok
        for arr in (vol_ratio, corr_idx, corr_max):
            arr[bad] = np.nan
        regime = regime.astype(object)
        regime[bad] = None

    # an empty book carries no market risk whatever the history: zero, not unknown
    flat = good & ~holds
    for arr in (var95, var99, es99, var99p, ewma_vol, corr_idx, corr_max):
        arr[flat] = 0.0
    vol_ratio[flat] = 1.0
    regime[flat] = "sideways"

    if history_reason is not None or n_ins == 0:
        # the account pass did not run: no account holding anything is risk-valid, so no row's
        # figures are real (row_risk is all False)
        x = np.zeros((n_acc, n_ins))
        keep = held_row & hist_ok_row
        np.add.at(x, (a_idx[keep], j_idx[keep]), notional_v[keep])
        conc = concentration(x)
        zero_row = risk_ok[np.maximum(a_idx, 0)] & (q == 0)
        pvar[:] = contrib[:] = crisk[:] = np.where(zero_row, 0.0, np.nan)
        vscore[:] = np.where(risk_ok[np.maximum(a_idx, 0)] & (j_idx >= 0), ins_vol_ratio[np.maximum(j_idx, 0)], np.nan)
    conc = np.where(good, conc, np.nan)
    unreal_loss = np.where(good, np.maximum(0.0, -upnl_acc) / np.where(good, equity, 1.0), np.nan)
    score = risk_score(
        exposure_pct=expo["exposure_pct"], leverage=expo["leverage"], daily_loss=np.where(good, daily_loss, np.nan),
        unrealized_loss=unreal_loss, concentration=conc, n_positions=n_pos, config=cfg,
    )

    accounts = pl.DataFrame(
        {
            "account_id": ids,
            "account_group": bal["account_group"].extend_constant(None, extra_ids.len()),
            "equity_usd": equity_out,
            "start_of_day_equity_usd": sod,
            "peak_equity_usd": peak,
            "unrealized_pnl_usd": upnl_out,
            "daily_pnl_usd": daily_pnl,
            "daily_pnl_pct": daily_pct,
            "daily_loss": daily_loss,
            "drawdown": dd,
            "gross_exposure_usd": np.where(eq_known, expo["gross_exposure_usd"], np.nan),
            "net_exposure_usd": np.where(eq_known, expo["net_exposure_usd"], np.nan),
            "exposure_pct": expo["exposure_pct"],
            "leverage": expo["leverage"],
            "var_95": var95,
            "var_99": var99,
            "es_99": es99,
            "var_99_parametric": var99p,
            "ewma_vol": ewma_vol,
            "vol_ratio": vol_ratio,
            "correlation_index": corr_idx,
            "max_pair_correlation": corr_max,
            "concentration": conc,
            "regime": pl.Series(regime.tolist(), dtype=pl.String),
            "risk_score": score,
            "n_positions": n_pos,
            "valid": valid,
            "invalid_reason": pl.Series(reason.tolist(), dtype=pl.String),
        },
        schema=frames.ACCOUNT_METRICS,
        nan_to_null=False,
    )

    # --- positions --------------------------------------------------------------------------------
    positions_out = pl.DataFrame(
        {
            "account_id": pos["account_id"],
            "strategy": pos["strategy"],
            "instrument": pos["instrument"],
            "quantity": q,
            "price": mid,
            "notional_usd": np.where(row_ok, notional, np.nan),
            "unrealized_pnl_usd": np.where(row_ok, upnl, np.nan),
            "position_var_95": pvar,
            "volatility_score": vscore,
            "correlation_risk": crisk,
            "risk_contribution": contrib,
        },
        schema=frames.POSITION_METRICS,
        nan_to_null=False,
    )
    return BookMetrics(
        accounts=accounts,
        positions=positions_out,
        correlation=corr,
        instrument_vol_ratio=ins_vol_ratio,
        instruments=tuple(labels),
        instrument_ewma_vol=ins_ewma_vol,
        correlation_index=book_corr_index,
    )
