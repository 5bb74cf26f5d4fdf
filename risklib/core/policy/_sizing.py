"""Position sizing: the spec's two algorithms exactly as written, their protective vectorized forms,
fractional Kelly and the risk-budget allocation.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import polars as pl

from risklib.core.policy._config import PolicyConfig, RiskLevelsConfig, SizingConfig
from risklib.core.policy._enums import RiskLevel, TradingMode
from risklib.errors import DataError

_RT_REGIMES = {"bull_low_vol": 1.2, "bull_high_vol": 0.8, "bear_low_vol": 0.6, "bear_high_vol": 0.3, "sideways": 0.9}


def calculate_dynamic_position_size(
    base_position_size: float,
    current_volatility: float,
    portfolio_drawdown: float,
    correlation_factor: float,
    var_utilization: float,
    market_regime: str,
    *,
    historical_volatility: float,
) -> float:
    """Real-time document's ``calculate_dynamic_position_size``, exactly as written.

    Parameters
    ----------
    base_position_size
        Unused by the listing's arithmetic (kept for its signature); the caller multiplies it.
    current_volatility, historical_volatility
        Same units, > 0. The listing reads ``historical_volatility`` from its scope; here it is
        an explicit keyword.
    portfolio_drawdown
        Fraction (0.05 = 5 %).
    correlation_factor
        Correlation in [0, 1].
    var_utilization
        VaR in percent of equity against the listing's 0.4 divisor (0.4 = the red-zone limit).
    market_regime
        One of bull_low_vol, bull_high_vol, bear_low_vol, bear_high_vol, sideways; others get 0.7.

    Returns
    -------
    float
        Size multiplier clamped to [0.05, 1.0].

    Raises
    ------
    DataError
        When a volatility is not a positive finite number (the listing would divide by zero).
    """
    for name, v in (("current_volatility", current_volatility), ("historical_volatility", historical_volatility)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise DataError(f"{name}={v!r}: must be a positive finite number")
    volatility_adjustment = min(1.0, 1.0 / (current_volatility / historical_volatility))
    drawdown_adjustment = max(0.1, 1.0 - (portfolio_drawdown / 0.15))
    correlation_adjustment = max(0.5, 1.0 - correlation_factor)
    var_adjustment = max(0.2, 1.0 - (var_utilization / 0.4))
    regime_adjustment = _RT_REGIMES.get(market_regime, 0.7)
    final_adjustment = (
        volatility_adjustment * drawdown_adjustment * correlation_adjustment * var_adjustment * regime_adjustment
    )
    return max(0.05, min(1.0, final_adjustment))


def calculate_position_size(
    account_balance: float,
    symbol_price: float,
    volatility: float,
    risk_level: RiskLevel | str,
    emergency_mode: bool,
) -> float:
    """Institutional document's ``calculate_position_size``, exactly as written.

    ``volatility`` is in percent (15 = 15 %); returns a USD position size with the listing's $1
    minimum. ``symbol_price`` is unused, as in the listing. Note the listing gives MEDIUM, HIGH and
    CRITICAL 0.5 % and emergency 0.5 %; :func:`account_position_size` is the protective form used
    by the product.
    """
    level = RiskLevel(risk_level)
    if emergency_mode:
        base_pct = 0.5
    elif level is RiskLevel.MINIMAL:
        base_pct = 2.0
    elif level is RiskLevel.LOW:
        base_pct = 1.0
    else:
        base_pct = 0.5
    if volatility > 15:
        vol_factor = 0.3
    else:
        vol_factor = 1.0 - (volatility / 15) * 0.5
    balance_factor = min(account_balance / 1000, 1.0)
    position_size = account_balance * (base_pct / 100) * vol_factor * balance_factor
    return max(position_size, 1.0)


def dynamic_multiplier(
    vol_ratio: np.ndarray,
    drawdown: np.ndarray,
    correlation: np.ndarray,
    var_fraction: np.ndarray,
    regime: np.ndarray,
    cfg: SizingConfig,
) -> np.ndarray:
    """Vectorized :func:`calculate_dynamic_position_size` over arrays.

    ``regime`` holds regime names, or their multipliers already looked up (float array).

    ``vol_ratio`` = current / historical volatility; ``var_fraction`` = VaR as a fraction of
    equity, divided by ``cfg.var_scale`` (0.004, the listing's 0.4 %). Any NaN input gives 0
    (fail closed) instead of the 0.05 floor.
    """
    vr = np.asarray(vol_ratio, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        vol_adj = np.minimum(1.0, 1.0 / vr)
    dd_adj = np.maximum(0.1, 1.0 - np.asarray(drawdown, float) / cfg.drawdown_scale)
    corr_adj = np.maximum(0.5, 1.0 - np.asarray(correlation, float))
    var_adj = np.maximum(0.2, 1.0 - np.asarray(var_fraction, float) / cfg.var_scale)
    regime = np.asarray(regime)
    if regime.dtype.kind == "f":  # already the regime multipliers (as size_positions passes them)
        reg = regime
    else:
        reg = np.array([cfg.regime_multipliers.get(r, cfg.unknown_regime_multiplier) if isinstance(r, str)
                        else cfg.unknown_regime_multiplier for r in regime.astype(object)]) \
            if regime.size else np.zeros(0)
    out = np.clip(vol_adj * dd_adj * corr_adj * var_adj * reg, cfg.min_multiplier, cfg.max_multiplier)
    bad = ~(np.isfinite(vr) & (vr > 0) & np.isfinite(drawdown) & np.isfinite(correlation) & np.isfinite(var_fraction))
    return np.where(bad, 0.0, out)


def account_position_size(
    balance_usd: np.ndarray,
    volatility_pct: np.ndarray,
    risk_level: np.ndarray,
    emergency: np.ndarray,
    levels: RiskLevelsConfig,
    cfg: SizingConfig,
) -> np.ndarray:
    """Protective, vectorized account-based sizing (institutional document), USD.

    ``size = balance * base(risk level) * volatility factor * balance factor`` where

    * base: the prose table (MINIMAL 2 %, LOW 1 %, MEDIUM 0.5 %, HIGH/CRITICAL 0.25 %);
      emergency mode: min(0.5 %, the level's base);
    * volatility factor: the smaller of the code listing's ``1 - vol/15 * 0.5`` (0.3 above 15 %)
      and the prose's (0.3 above 15 %, 0.75 from 10 %, 1 below);
    * balance factor: ``min(balance / 1000, 1)``.

    The listing's $1 minimum would lift a position above its cap; here a size below
    ``min_position_usd`` is 0 (no trade). NaN inputs give 0.
    """
    bal = np.asarray(balance_usd, float)
    vol = np.asarray(volatility_pct, float)
    lv = np.asarray(risk_level, dtype=object)
    base = np.array([levels.base_position.get(x, levels.base_position["CRITICAL"]) for x in lv]) if lv.size else np.zeros(0)
    base = np.where(np.asarray(emergency, bool) | (lv == RiskLevel.EMERGENCY.value),
                    np.minimum(levels.emergency_position, base), base)
    code = np.where(vol > cfg.high_vol_pct, 0.3, 1.0 - vol / cfg.high_vol_pct * 0.5)
    prose = np.where(vol > cfg.high_vol_pct, 0.3, np.where(vol >= cfg.medium_vol_pct, 0.75, 1.0))
    vf = np.minimum(code, prose)
    bf = np.minimum(bal / cfg.balance_scale_usd, 1.0)
    size = bal * base * vf * bf
    size = np.where(np.isfinite(size) & (size >= cfg.min_position_usd) & (bal > 0), size, 0.0)
    return size


def fractional_kelly(
    win_probability: np.ndarray | float,
    win_loss_ratio: np.ndarray | float,
    *,
    fraction: float = 0.25,
    cap: float = 0.02,
) -> np.ndarray:
    """Fractional Kelly stake as a fraction of capital.

    ``f* = p - (1 - p) / b``; returns ``clip(fraction * f*, 0, cap)``. ``cap`` defaults to the
    spec's "Maximum single position: 2% of total capital". Invalid inputs (p outside [0, 1],
    b <= 0, NaN) give 0.
    """
    p = np.asarray(win_probability, float)
    b = np.asarray(win_loss_ratio, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = p - (1.0 - p) / b
    ok = np.isfinite(f) & (p >= 0) & (p <= 1) & (b > 0)
    return np.where(ok, np.clip(fraction * f, 0.0, cap), 0.0)


def allocate_risk_budget(
    total_risk_usd: float,
    strategies: dict[str, str],
    config: PolicyConfig,
    *,
    budget_multiplier: float = 1.0,
) -> pl.DataFrame:
    """Split a risk budget across strategies (RT "Position Sizing Framework").

    Conservative 40 %, moderate 35 %, aggressive 20 % of the budget, each class split evenly
    across its strategies; the 5 % emergency reserve is never allocated, nor is a class's share
    when it has no strategy. ``budget_multiplier`` is the volatility ladder's risk budget
    (100/90/75/50 %).

    Returns
    -------
    pl.DataFrame
        ``strategy``, ``risk_class``, ``budget_usd``.
    """
    if not math.isfinite(total_risk_usd) or total_risk_usd < 0:
        raise DataError(f"total_risk_usd={total_risk_usd!r}: must be a finite number >= 0")
    rb = config.risk_budget
    shares = {"conservative": rb.conservative, "moderate": rb.moderate, "aggressive": rb.aggressive}
    unknown = {s: c for s, c in strategies.items() if c not in shares}
    if unknown:
        raise DataError(f"strategies={unknown}: risk class must be one of {sorted(shares)}")
    counts = {c: sum(1 for v in strategies.values() if v == c) for c in shares}
    names = sorted(strategies)
    return pl.DataFrame(
        {
            "strategy": names,
            "risk_class": [strategies[s] for s in names],
            "budget_usd": [
                total_risk_usd * budget_multiplier * shares[strategies[s]] / counts[strategies[s]] for s in names
            ],
        },
        schema={"strategy": pl.String, "risk_class": pl.String, "budget_usd": pl.Float64},
    )


SIZING = {
    "account_id": pl.String,
    "instrument": pl.String,
    "strategy": pl.String,
    "sizing_multiplier": pl.Float64,
    "max_position_usd": pl.Float64,
    "target_cut_fraction": pl.Float64,
    "state_multiplier": pl.Float64,  # the account's multiplier from the risk state
    "dynamic_multiplier": pl.Float64,  # calculate_dynamic_position_size's, for this position
    "reason": pl.String,  # which factors applied (their values are the columns above)
}


def size_positions(
    state: pl.DataFrame,
    metrics: pl.DataFrame,
    position_metrics: pl.DataFrame,
    config: PolicyConfig,
) -> pl.DataFrame:
    """Per account, instrument and strategy: the size multiplier and cap for new risk, and cuts.

    Parameters
    ----------
    state
        Risk state from :func:`evaluate` (``sizing_multiplier``, ``trading_mode``,
        ``max_position_frac``, ``valid``).
    metrics
        ``frames.ACCOUNT_METRICS`` (equity, drawdown, VaR, regime).
    position_metrics
        ``frames.POSITION_METRICS`` (one row per held position; ``volatility_score`` is the
        instrument's vol ratio, ``correlation_risk`` its correlation with the rest of the book).

    Returns
    -------
    pl.DataFrame
        ``account_id, instrument, strategy, sizing_multiplier`` (state multiplier x dynamic
        multiplier x strategy multiplier x correlation cut, in [0, 1]; 0 unless the account is
        ACTIVE with valid data), ``max_position_usd`` (equity x position cap of the risk level x
        multiplier, capped by the strategy's limit), ``target_cut_fraction`` (0.3 for positions
        whose correlation_risk exceeds the threshold, else 0), the ``state_multiplier`` and
        ``dynamic_multiplier`` factors, and ``reason`` (which factors applied).
    """
    sc = config.sizing
    if position_metrics.height == 0:
        return pl.DataFrame(schema=SIZING)
    df, i_st, i_mt = _account_rows(position_metrics, state, metrics)
    if df.height == 0:
        return pl.DataFrame(schema=SIZING)
    # account-level inputs: one select per frame, then one gather per frame (small Polars calls cost more than
    # the arithmetic); positions whose account is missing (row -1) get the appended last row
    has = set(state.columns)
    sm = pl.col("sizing_multiplier").cast(pl.Float64).fill_null(0.0)
    acct = _with_missing_row(state.select(
        sm,
        (pl.col("trading_mode") == TradingMode.ACTIVE.value).fill_null(False).cast(pl.Float64).alias("_active"),
        # a missing column counts as valid, a missing account as invalid
        (pl.col("valid").fill_null(False).cast(pl.Boolean).cast(pl.Float64) if "valid" in has
         else pl.lit(1.0)).alias("_valid"),
        (pl.col("max_position_frac").cast(pl.Float64).fill_null(0.0) if "max_position_frac" in has
         else pl.lit(config.risk_budget.max_single_position, pl.Float64)).alias("_cap"),
    ).to_numpy(), [0.0, 0.0, 0.0, 0.0])[i_st]
    state_mult, mode_active, valid, cap_frac = acct.T
    active = (mode_active != 0) & (valid != 0)
    regimes = tuple(sc.regime_multipliers)
    mvals = metrics.select(
        pl.col("var_99").cast(pl.Float64), pl.col("var_99_parametric").cast(pl.Float64),
        pl.col("drawdown").cast(pl.Float64), pl.col("equity_usd").cast(pl.Float64).fill_null(0.0),
        # regime -> its index in the table (null, unknown: one past the end)
        pl.col("regime").fill_null("").cast(_enum(regimes), strict=False).to_physical().fill_null(len(regimes)),
    ).to_numpy()  # nulls of the float columns read as NaN
    var = np.nan_to_num(np.fmax(mvals[:, 0], mvals[:, 1]), nan=np.nan)
    reg = np.array([*sc.regime_multipliers.values(), sc.unknown_regime_multiplier], dtype=float)
    mvals = _with_missing_row(np.column_stack([var, mvals[:, 2:4], reg[mvals[:, 4].astype(np.int64)]]),
                              [np.nan, np.nan, 0.0, sc.unknown_regime_multiplier])[i_mt]
    var, drawdown, equity, regime_mult = mvals.T

    vol_score = df["volatility_score"].cast(pl.Float64).to_numpy()  # null reads as NaN
    corr = np.nan_to_num(df["correlation_risk"].cast(pl.Float64).to_numpy(), nan=0.0)  # null or NaN: none
    dyn = dynamic_multiplier(vol_score, drawdown, np.clip(corr, 0.0, 1.0), var, regime_mult, sc)
    s_mult, s_cap = _lookup(df["strategy"], {k: (v.sizing_multiplier, v.max_position_usd or np.inf)
                                              for k, v in config.strategies.items()}, (1.0, np.inf)).T
    correlated = corr > sc.correlation_threshold
    mult = state_mult * dyn * s_mult * np.where(correlated, 1.0 - sc.correlated_cut, 1.0)
    mult = np.where(active & np.isfinite(mult), np.clip(mult, 0.0, 1.0), 0.0)
    max_pos = np.minimum(np.where(equity > 0, equity, 0.0) * cap_frac * mult, s_cap)
    cut = np.where(correlated, sc.correlated_cut, 0.0)
    return pl.DataFrame([
        df["account_id"], df["instrument"], df["strategy"], pl.Series("sizing_multiplier", mult),
        pl.Series("max_position_usd", max_pos), pl.Series("target_cut_fraction", cut),
        pl.Series("state_multiplier", state_mult), pl.Series("dynamic_multiplier", dyn),
        _reasons(correlated, active, sc.correlated_cut),
    ])


def _account_rows(positions: pl.DataFrame, state: pl.DataFrame, metrics: pl.DataFrame
                  ) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
    """The positions with each one's row in ``state`` and in ``metrics`` (-1: account missing).

    As the reference's left joins, a position whose account appears twice becomes one row per match.
    """
    m = metrics.height
    # evaluate returns state rows that start with the metrics rows: a state row below m is that metrics row
    aligned = state.height >= m and state["account_id"].head(m).equals(metrics["account_id"])
    ids, st_ids = positions["account_id"], state["account_id"]
    if aligned and ids.null_count() == 0 and st_ids.len() > 0 and st_ids.n_unique() == st_ids.len():
        run = ids.rle_id().cast(pl.Int64).to_numpy()
        starts = np.flatnonzero(np.diff(run, prepend=-1))
        heads = ids.gather(starts)
        if run[-1] == st_ids.len() - 1 and heads.equals(st_ids):
            # positions grouped by account in state order, every account holding some (as the cycle
            # builds them): the i-th run of equal ids is state row i
            return positions, run, np.where(run < m, run, -1)
        # grouped otherwise (a position opened since the book was sorted comes last): one lookup per
        # run of equal ids instead of a join (~1-3 ms a cycle for a 100-account book here)
        state_row = {account: i for i, account in enumerate(st_ids.to_list())}
        i_st = np.fromiter((state_row.get(a, -1) for a in heads.to_list()), dtype=np.int64, count=starts.size)[run]
        return positions, i_st, np.where(i_st < m, i_st, -1)
    pos = positions.select("account_id", "instrument", "strategy", "volatility_score", "correlation_risk")
    df = pos.join(state.select("account_id").with_row_index("_st"), on="account_id", how="left")
    if aligned and df.height == pos.height:  # no position matched two state rows
        i_st = df["_st"].cast(pl.Int64).fill_null(-1).to_numpy()
        return df, i_st, np.where(i_st < m, i_st, -1)
    df = df.join(metrics.select("account_id").with_row_index("_mt"), on="account_id", how="left")
    return (df, df["_st"].cast(pl.Int64).fill_null(-1).to_numpy(), df["_mt"].cast(pl.Int64).fill_null(-1).to_numpy())


def _with_missing_row(values: np.ndarray, missing: list[float]) -> np.ndarray:
    """Account rows of float columns with one more row, ``missing``, that row index -1 picks."""
    return np.vstack([values.reshape(-1, len(missing)), missing]).astype(float, copy=False)


def _lookup(names: pl.Series, table: dict[str, tuple[float, ...]], default: tuple[float, ...]) -> np.ndarray:
    """Each name's row of values in a small table (null or unknown: ``default``), one column per value."""
    if not table:
        return np.tile(np.asarray(default, dtype=float), (names.len(), 1))
    # an enum cast is one hash lookup per row; unknown names become null
    code = names.cast(_enum(tuple(table)), strict=False).to_physical().cast(pl.Int64).fill_null(len(table))
    return np.array([*table.values(), default], dtype=float)[code.to_numpy()]


@functools.lru_cache(maxsize=64)
def _enum(names: tuple[str, ...]) -> pl.Enum:
    """The enum of a lookup table's names (built once: building one costs as much as a small cast)."""
    return pl.Enum(names)


def _reasons(correlated: np.ndarray, active: np.ndarray, correlated_cut: float) -> pl.Series:
    """Which factors applied to each position, from a table of three texts (the factors' values are
    columns of their own: a sentence per row would format 20,000 numbers a cycle)."""
    texts = pl.Series([
        "state x dynamic",
        f"state x dynamic x correlated cut {correlated_cut:.0%}",
        "no new risk: account not ACTIVE or data invalid",
    ], dtype=pl.String)
    return texts.gather(np.where(active, correlated.astype(np.int64), 2)).alias("reason")
