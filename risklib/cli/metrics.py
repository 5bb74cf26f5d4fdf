"""`riskctl metrics`: every risk metric of a price file (and optionally a positions file) at a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

CONVENTIONS = {
    "returns": "simple per-bar returns p[t]/p[t-1] - 1; one bar (one row of the price file) is the VaR horizon",
    "sign": "VaR, ES and drawdown are positive losses; instrument figures are fractions of price, "
    "account figures fractions of equity (USD where the name ends in _usd)",
    "quantile_method": "historical VaR: numpy linear interpolation (Hyndman-Fan 7); "
    "historical ES: mean of the int((T-1)(1-level))+1 worst bars",
    "parametric": "normal, sample std (ddof=1), zero mean; Cornish-Fisher with population skew and excess kurtosis",
    "monte_carlo": "multivariate normal and Student-t from the sample covariance, seeded, float32 scenarios",
    "volatility": "sample std (ddof=1) annualised by sqrt(periods_per_year); EWMA RiskMetrics zero mean with arch's backcast",
    "vol_ratio": "std of the last vol_window bars / std of up to normal_window bars before them",
    "drawdown": "1 - price / running peak of the price path",
    "correlation": "Pearson over the whole file; account correlation is between positions' P&L (signs applied)",
    "risk_score": "0-100: 0.30 exposure + 0.25 P&L + 0.25 leverage + 0.20 position (see risklib.metrics.risk_score)",
}


class InputError(Exception):
    """A CLI input file is unusable; the message names file, row and column."""


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _read_csv(path: Path):
    import polars as pl

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        frame = pl.read_csv(path, infer_schema_length=0)  # all strings: we report bad cells ourselves
    except Exception as exc:  # noqa: BLE001 - the parser's message is the most precise we have
        raise InputError(f"{path}: not a readable CSV file ({exc})") from exc
    if frame.height == 0:
        raise InputError(f"{path}: no data rows")
    return frame


def _numeric(path: Path, frame, column: str, *, positive: bool = False):
    """Column as float64; the first bad cell is reported with its file line number (header = line 1)."""
    import numpy as np
    import polars as pl

    raw = frame[column]
    values = raw.cast(pl.Float64, strict=False)
    bad = values.is_null() | ~values.is_finite()
    if positive:
        bad = bad | (values <= 0).fill_null(True)
    if bad.any():
        i = int(bad.arg_max())
        need = "a finite number > 0" if positive else "a finite number"
        raise InputError(f"{path}: row {i + 2}, column {column!r}: value {raw[i]!r} is not {need}")
    return values.to_numpy().astype(np.float64)


def load_prices(path: Path) -> tuple[list[str], Any, list[str]]:
    """Instrument labels, (T, N) prices and date labels from a wide price CSV (a date column + one per instrument)."""
    import numpy as np

    frame = _read_csv(path)
    lower = [c.lower() for c in frame.columns]
    date_col = frame.columns[lower.index("date")] if "date" in lower else frame.columns[0]
    labels = [c for c in frame.columns if c != date_col]
    if not labels:
        raise InputError(f"{path}: no instrument columns besides {date_col!r}")
    dates = frame[date_col].to_list()
    for i, d in enumerate(dates):
        if d is None or not str(d).strip():
            raise InputError(f"{path}: row {i + 2}, column {date_col!r}: empty date")
    if len(set(dates)) != len(dates):
        seen: set[str] = set()
        for i, d in enumerate(dates):
            if d in seen:
                raise InputError(f"{path}: row {i + 2}, column {date_col!r}: date {d!r} repeats")
            seen.add(d)
    prices = np.column_stack([_numeric(path, frame, c, positive=True) for c in labels])
    return labels, prices, dates


def load_positions(path: Path, instruments: list[str]):
    """Positions frame (frames.POSITIONS) and balances from a positions CSV: account, instrument, quantity.

    Optional columns: ``strategy`` (default "default"), ``entry_price`` (default:
    the last price, so unrealized P&L is 0), ``equity_usd`` per account
    (default: the account's gross exposure, i.e. fully funded, leverage 1).
    """
    import polars as pl

    frame = _read_csv(path)
    for col in ("account", "instrument", "quantity"):
        if col not in frame.columns:
            raise InputError(f"{path}: missing column {col!r}; have {frame.columns}")
    for i, (acc, ins) in enumerate(zip(frame["account"].to_list(), frame["instrument"].to_list(), strict=True)):
        if acc is None or not acc.strip():
            raise InputError(f"{path}: row {i + 2}, column 'account': empty account")
        if ins not in instruments:
            raise InputError(f"{path}: row {i + 2}, column 'instrument': {ins!r} is not a column of the price file")
    qty = _numeric(path, frame, "quantity")
    out = pl.DataFrame(
        {
            "account_id": frame["account"],
            "strategy": frame["strategy"] if "strategy" in frame.columns else ["default"] * frame.height,
            "instrument": frame["instrument"],
            "quantity": qty,
        }
    )
    if "entry_price" in frame.columns:
        out = out.with_columns(pl.Series("entry_price", _numeric(path, frame, "entry_price", positive=True)))
    equity = _numeric(path, frame, "equity_usd", positive=True) if "equity_usd" in frame.columns else None
    return out, equity


def _tables(title: str, rows: list[dict[str, Any]], key: str, metrics: list[str], per_table: int = 6) -> list[Any]:
    """Metrics down, one column per instrument/account, ``per_table`` entities per table (readable at 120 columns)."""
    from rich.table import Table

    out = []
    for lo in range(0, len(rows), per_table):
        chunk = rows[lo : lo + per_table]
        table = Table(title=title if lo == 0 else f"{title} (cont.)")
        table.add_column("metric", justify="left")
        for r in chunk:
            table.add_column(str(r[key]), justify="right")
        for m in metrics:
            table.add_row(m, *[_fmt(r.get(m)) for r in chunk])
        out.append(table)
    return out


def _fmt(v: Any) -> str:
    import math

    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.2f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _clean(v: Any) -> Any:
    import math

    import numpy as np

    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, np.generic):
        return _clean(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def compute_report(
    prices_path: Path,
    positions_path: Path | None,
    *,
    periods_per_year: int = 252,
    vol_window: int = 20,
    normal_window: int = 250,
    scenarios: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything ``riskctl metrics`` prints, as plain data."""
    import numpy as np
    import polars as pl

    from risklib.core.instruments import FX_MAJORS, Instrument
    from risklib.errors import MetricsError
    from risklib.metrics import (
        MetricsConfig,
        classify_regime,
        compute_book_metrics,
        cornish_fisher_var_es,
        correlated_pairs,
        correlation_index,
        correlation_matrix,
        drawdown_stats,
        ewma_volatility,
        historical_var_es,
        parametric_var_es,
        portfolio_var_es,
        simple_returns,
        usd_returns,
        volatility_ratio,
    )

    labels, prices, dates = load_prices(prices_path)
    n_ret = prices.shape[0] - 1
    need = vol_window + 2
    if n_ret < need:
        raise InputError(
            f"{prices_path}: {prices.shape[0]} price rows give {n_ret} returns; need at least {need} "
            f"(vol_window={vol_window} plus a normal baseline); pass a smaller --vol-window or more rows"
        )
    cfg = MetricsConfig(
        periods_per_year=periods_per_year,
        vol_window_bars=vol_window,
        normal_vol_window_bars=normal_window,
        min_history_bars=min(need, n_ret),
        regime_window_bars=min(60, n_ret),
        mc_scenarios=scenarios,
        mc_seed=seed,
    )
    try:
        series = simple_returns(prices.T, labels=labels)  # (N, T)
    except MetricsError as exc:
        raise InputError(f"{prices_path}: {exc}") from exc
    r = series.T
    hist = historical_var_es(series)
    p95, pe95 = parametric_var_es(series, 0.95)
    p99, pe99 = parametric_var_es(series, 0.99)
    cf99, cfe99 = cornish_fisher_var_es(series, 0.99)
    dd = drawdown_stats(prices.T)
    vr = volatility_ratio(series, window=vol_window, normal_window=normal_window)
    corr = correlation_matrix(r)
    n = len(labels)
    avg_corr = (corr.sum(axis=1) - 1.0) / max(n - 1, 1)
    regime = classify_regime(series, vr, window=cfg.regime_window_bars, periods_per_year=periods_per_year)
    annual = series.std(axis=1, ddof=1) * np.sqrt(periods_per_year)
    ewma = ewma_volatility(series, lam=cfg.ewma_lambda, periods_per_year=periods_per_year)
    instruments = []
    for j, s in enumerate(labels):
        instruments.append(
            {
                "instrument": s,
                "last_price": prices[-1, j],
                "annual_vol": annual[j],
                "ewma_vol": ewma[j],
                "vol_ratio": vr[j],
                "max_drawdown": dd["max_drawdown"][j],
                "current_drawdown": dd["current_drawdown"][j],
                "drawdown_bars": int(dd["current_duration_bars"][j]),
                "max_drawdown_bars": int(dd["max_duration_bars"][j]),
                "var_95": hist["var_95"][j],
                "var_99": hist["var_99"][j],
                "es_95": hist["es_95"][j],
                "es_99": hist["es_99"][j],
                "var_95_parametric": p95[j],
                "var_99_parametric": p99[j],
                "es_99_parametric": pe99[j],
                "var_99_cornish_fisher": cf99[j],
                "es_99_cornish_fisher": cfe99[j],
                "avg_correlation": avg_corr[j],
                "regime": regime[j],
            }
        )
    report: dict[str, Any] = {
        "file": str(prices_path),
        "bars": n_ret,
        "first_date": dates[0],
        "last_date": dates[-1],
        "conventions": {
            **CONVENTIONS,
            "periods_per_year": periods_per_year,
            "vol_window": vol_window,
            "normal_window": normal_window,
            "ewma_lambda": cfg.ewma_lambda,
            "levels": [0.95, 0.99],
            "mc_scenarios": scenarios,
            "mc_seed": seed,
            "mc_dof": cfg.mc_dof,
        },
        "instruments": instruments,
        "correlation": {
            "instruments": labels,
            "matrix": corr,
            "correlation_index": correlation_index(corr),
            "pairs_above_threshold": correlated_pairs(corr, labels, cfg.correlation_threshold).to_dicts(),
            "threshold": cfg.correlation_threshold,
        },
    }
    if positions_path is None:
        return report

    # Instruments outside the FX majors are taken as priced in USD (e.g. equities, crypto in USD).
    table = dict(FX_MAJORS)
    for s in labels:
        table.setdefault(s, Instrument(s, s, "USD", 0.01))
    pos, equity = load_positions(positions_path, labels)
    last = pl.DataFrame({"instrument": labels, "mid": prices[-1]})
    if "entry_price" not in pos.columns:
        pos = pos.join(last.rename({"mid": "entry_price"}), on="instrument", how="left")
    uq = np.array([table[s].usd_is_quote for s in labels])
    mids = dict(zip(labels, prices[-1], strict=True))
    notional = np.array(
        [q * mids[i] if table[i].usd_is_quote else q for q, i in zip(pos["quantity"], pos["instrument"], strict=True)]
    )
    pos = pos.with_columns(pl.Series("_notional", notional))
    if equity is None:
        eq = pos.group_by("account_id", maintain_order=True).agg(pl.col("_notional").abs().sum().alias("equity"))
        eq = eq.with_columns(pl.when(pl.col("equity") > 0).then(pl.col("equity")).otherwise(1.0))
    else:
        eq = pos.with_columns(pl.Series("equity", equity)).group_by("account_id", maintain_order=True).agg(pl.col("equity").first())
    balances = eq.select(
        "account_id",
        pl.lit("cli").alias("account_group"),
        pl.col("equity").alias("cash_usd"),
        pl.col("equity").alias("start_of_day_equity_usd"),
    )
    book = compute_book_metrics(
        pos.drop("_notional"), balances, last, r, labels, config=cfg, instrument_table=table
    )
    accounts = book.accounts
    # Monte Carlo and Cornish-Fisher VaR/ES per account, in USD, on the same net exposures
    j = {s: k for k, s in enumerate(labels)}
    ids = accounts["account_id"].to_list()
    a_of = {a: k for k, a in enumerate(ids)}
    x = np.zeros((len(ids), n))
    np.add.at(x, (np.array([a_of[a] for a in pos["account_id"]]), np.array([j[s] for s in pos["instrument"]])), notional)
    u = usd_returns(r, uq)
    mc_n = portfolio_var_es(x, u, method="mc_normal", n_scenarios=scenarios, seed=seed)
    mc_t = portfolio_var_es(x, u, method="mc_t", n_scenarios=scenarios, seed=seed, dof=cfg.mc_dof)
    cf = portfolio_var_es(x, u, method="cornish_fisher")
    eqv = accounts["equity_usd"].to_numpy()
    accounts = accounts.with_columns(
        pl.Series("var_99_cornish_fisher", cf["var_99"] / eqv),
        pl.Series("es_99_cornish_fisher", cf["es_99"] / eqv),
        pl.Series("var_99_mc_normal", mc_n["var_99"] / eqv),
        pl.Series("es_99_mc_normal", mc_n["es_99"] / eqv),
        pl.Series("var_99_mc_t", mc_t["var_99"] / eqv),
        pl.Series("es_99_mc_t", mc_t["es_99"] / eqv),
    )
    report["accounts"] = accounts.to_dicts()
    report["positions"] = book.positions.to_dicts()
    report["conventions"]["account_equity"] = (
        "equity_usd column of the positions file" if equity is not None else "not given: gross exposure (fully funded)"
    )
    return report


ACCOUNT_COLUMNS = [
    "account_id", "equity_usd", "gross_exposure_usd", "leverage", "var_95", "var_99", "es_99", "var_99_parametric",
    "var_99_cornish_fisher", "var_99_mc_normal", "var_99_mc_t", "es_99_mc_t", "ewma_vol", "vol_ratio",
    "correlation_index", "max_pair_correlation", "concentration", "regime", "risk_score", "valid",
]
INSTRUMENT_COLUMNS = [
    "instrument", "last_price", "annual_vol", "ewma_vol", "vol_ratio", "max_drawdown", "current_drawdown",
    "drawdown_bars", "var_95", "var_99", "es_99", "var_99_parametric", "var_99_cornish_fisher", "avg_correlation", "regime",
]
POSITION_COLUMNS = [
    "account_id", "strategy", "instrument", "quantity", "notional_usd", "position_var_95", "volatility_score",
    "correlation_risk", "risk_contribution",
]


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""

    @app.command("metrics")
    def metrics_command(
        prices: Path = typer.Argument(..., help="CSV: a date column plus one price column per instrument, oldest first."),
        positions: Path | None = typer.Option(
            None, "--positions", help="CSV: account, instrument, quantity [, strategy, entry_price, equity_usd]."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (with each metric's convention)."),
        periods_per_year: int = typer.Option(252, "--periods-per-year", min=1, help="Annualisation: 252, 260 (FX), 365."),
        vol_window: int = typer.Option(20, "--vol-window", min=2, help="Bars of current volatility."),
        normal_window: int = typer.Option(250, "--normal-window", min=2, help="Bars of the normal-volatility baseline."),
        scenarios: int = typer.Option(10_000, "--scenarios", min=100, help="Monte Carlo scenarios."),
        seed: int = typer.Option(0, "--seed", min=0, help="Monte Carlo seed."),
    ) -> None:
        """Every risk metric per instrument (and per account with --positions): VaR/ES four ways, volatility,
        drawdown, correlation, regime, risk score. Instruments outside the FX majors are taken as priced in USD."""
        import json

        try:
            report = compute_report(
                prices, positions, periods_per_year=periods_per_year, vol_window=vol_window,
                normal_window=normal_window, scenarios=scenarios, seed=seed,
            )
        except InputError as exc:
            _fail(str(exc))
            return
        if as_json:
            typer.echo(json.dumps(_clean(report), indent=2, default=str))
            return
        from rich.console import Console

        console = Console()
        console.print(f"{report['file']}: {report['bars']} bars {report['first_date']} .. {report['last_date']}, "
                      f"annualised x sqrt({periods_per_year}); VaR/ES positive losses, one bar horizon")
        for t in _tables("Instruments", report["instruments"], "instrument", INSTRUMENT_COLUMNS[1:]):
            console.print(t)
        c = report["correlation"]
        pairs = ", ".join(f"{p['instrument_a']}~{p['instrument_b']} {p['correlation']:+.2f}" for p in c["pairs_above_threshold"])
        console.print(f"correlation index {c['correlation_index']:.3f}; pairs |corr| > {c['threshold']}: {pairs or 'none'}")
        if "accounts" in report:
            for t in _tables("Accounts (risk as fractions of equity)", report["accounts"], "account_id", ACCOUNT_COLUMNS[1:]):
                console.print(t)
            positions = [{**p, "position": f"{p['account_id']} {p['instrument']} {p['strategy']}"} for p in report["positions"]]
            for t in _tables("Positions", positions, "position", POSITION_COLUMNS[3:], per_table=4):
                console.print(t)
            invalid = [a for a in report["accounts"] if not a["valid"]]
            for a in invalid:
                console.print(f"invalid: {a['account_id']}: {a['invalid_reason']}")
