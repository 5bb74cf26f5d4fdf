"""``/api/risk``: current risk metrics, portfolio health, position risks, correlation matrix.

Every read comes from the warehouse's newest completed cycle (``cycle_runs``) and is
judged against the pipeline's heartbeat at the API's clock: a stale heartbeat is
reported as status ``STALE``, never as a colour.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import polars as pl
from fastapi import APIRouter, HTTPException, Query, Request

from risklib.api._deps import METRIC_NAMES, clean, effective_config, newest_cycle, no_cycle, rows

router = APIRouter(prefix="/api/risk", tags=["risk"])

def _latest_account_metrics(wh: Any, cycle_id: str) -> pl.DataFrame:
    return wh.query("SELECT * FROM realtime_risk_metrics WHERE cycle_id = ? ORDER BY account_id", [cycle_id]).rename(
        METRIC_NAMES, strict=False
    )


def _cycle_state(wh: Any, cycle_id: str) -> pl.DataFrame:
    return wh.query("SELECT * FROM risk_state WHERE cycle_id = ? ORDER BY account_id", [cycle_id])


def _var_halt(config: Any) -> float:
    """The VaR99 that halts new trading (spec Trigger 2: 0.5 %): the top of the policy's VaR ladder."""
    return float(max(config.policy.var.thresholds))


_STATUS_COLUMNS = (
    "account_id", "account_group", "equity_usd", "drawdown", "daily_loss", "var_95", "var_99", "es_99", "regime",
    "correlation_index", "risk_score", "alert_level", "exposure_pct", "leverage", "n_positions", "valid",
    "invalid_reason",
)


def _newest_account_frames(request: Request):
    """``(config, newest cycle, its account metrics, its risk state)``; 503 when no cycle was recorded."""
    cfg, _ = effective_config(request)
    ctx = request.app.state.ctx
    with ctx.lock:
        cyc = newest_cycle(ctx.warehouse, ctx.clock.now(), cfg)
        if cyc.cycle_id is None:
            raise no_cycle()
        return cfg, cyc, _latest_account_metrics(ctx.warehouse, cyc.cycle_id), _cycle_state(ctx.warehouse, cyc.cycle_id)


@router.get("/status")
def status(
    request: Request,
    account_id: str | None = None,
    limit: int = Query(1000, ge=1, le=100_000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Current risk metrics per account (newest completed cycle), with the pipeline's heartbeat.

    ``status`` is ``STALE`` when the heartbeat is older than allowed (the gate then
    refuses new risk), else the portfolio's zone (GREEN / YELLOW / ORANGE / RED).
    Fractions are of equity (drawdown of peak); money in USD.
    """
    from risklib.cycle.dashboard import summarise

    cfg, cyc, metrics, state = _newest_account_frames(request)
    summary = summarise(metrics, state, var_halt=_var_halt(cfg))
    table = metrics.drop("trading_mode", strict=False).join(  # the mode in force is the risk state's
        state.select("account_id", "trading_mode", "breaker_state", "risk_level", "sizing_multiplier",
                     pl.col("alert_level").alias("state_alert_level")),
        on="account_id", how="left", suffix="_state",
    )
    cols = [c for c in _STATUS_COLUMNS if c in table.columns] + [
        c for c in ("trading_mode", "breaker_state", "risk_level", "sizing_multiplier") if c in table.columns
    ]
    if account_id is not None:
        table = table.filter(pl.col("account_id") == account_id)
        if table.height == 0:
            raise HTTPException(status_code=404, detail=f"account_id={account_id!r}: not in cycle {cyc.cycle_id}")
    return clean({
        "status": "STALE" if cyc.stale else summary.status,
        **cyc.describe(),
        "worst_alert_level": summary.worst_alert_level,
        "accounts": table.height,
        "offset": offset,
        "metrics": rows(table.select(cols).slice(offset, limit)),
    })


@router.get("/portfolio-health")
def portfolio_health(request: Request) -> dict[str, Any]:
    """Firm-wide summary of the newest cycle (same aggregation as the operator dashboard).

    ``var_99`` is the sum of account VaR99 in USD over total equity (no diversification
    across accounts); ``risk_utilisation`` is that over the VaR halt level.
    """
    from risklib.cycle.dashboard import summarise

    cfg, cyc, metrics, state = _newest_account_frames(request)
    s = summarise(metrics, state, var_halt=_var_halt(cfg))
    modes = state.group_by("trading_mode").len().sort("trading_mode") if state.height else pl.DataFrame()
    breakers = state.group_by("breaker_state").len().sort("breaker_state") if state.height else pl.DataFrame()
    out = asdict(s)
    out["zone"] = s.status
    out["status"] = "STALE" if cyc.stale else s.status
    return clean({
        **out,
        **cyc.describe(),
        "var_halt": _var_halt(cfg),
        "trading_modes": dict(zip(modes["trading_mode"].to_list(), modes["len"].to_list())) if modes.height else {},
        "breaker_states": dict(zip(breakers["breaker_state"].to_list(), breakers["len"].to_list())) if breakers.height else {},
    })


@router.get("/position-risks")
def position_risks(
    request: Request,
    account_id: str | None = None,
    instrument: str | None = None,
    limit: int = Query(1000, ge=1, le=100_000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Individual position risks of the newest cycle, largest |risk_contribution| first.

    Columns are the spec's ``position_risk_metrics`` names: ``position_size`` (signed base
    units), ``notional_usd`` (signed), ``unrealized_pnl`` (USD), ``position_var_95`` and
    ``risk_contribution`` (fractions of account equity).
    """
    cfg, _ = effective_config(request)
    ctx = request.app.state.ctx
    sql = "SELECT * EXCLUDE (cycle_id) FROM position_risk_metrics WHERE cycle_id = ?"
    params: list[Any] = []
    with ctx.lock:
        cyc = newest_cycle(ctx.warehouse, ctx.clock.now(), cfg)
        if cyc.cycle_id is None:
            raise no_cycle()
        params.append(cyc.cycle_id)
        if account_id is not None:
            sql += " AND account_id = ?"
            params.append(account_id)
        if instrument is not None:
            sql += " AND currency_pair = ?"
            params.append(instrument)
        sql += " ORDER BY abs(risk_contribution) DESC NULLS FIRST, account_id, currency_pair, strategy_name"
        pos = ctx.warehouse.query(sql, params)
    return clean({**cyc.describe(), "positions": pos.height, "offset": offset,
                  "rows": rows(pos.slice(offset, limit))})


@router.get("/correlation-matrix")
def correlation_matrix(request: Request) -> dict[str, Any]:
    """The newest recorded correlation matrix (instruments x instruments; diagonal 1, unknown null)."""
    cfg, _ = effective_config(request)
    ctx = request.app.state.ctx
    with ctx.lock:
        cyc = newest_cycle(ctx.warehouse, ctx.clock.now(), cfg)
        snap = ctx.warehouse.query(
            "SELECT cycle_id, ts, instrument_a, instrument_b, correlation FROM correlation_snapshots "
            "WHERE cycle_id = (SELECT cycle_id FROM correlation_snapshots ORDER BY ts DESC, cycle_id DESC LIMIT 1)"
        )
    if snap.height == 0:
        raise HTTPException(status_code=503, detail="correlation_snapshots: empty; the pipeline has not recorded "
                                                    "a correlation matrix yet")
    names = sorted(set(snap["instrument_a"].to_list()) | set(snap["instrument_b"].to_list()))
    ix = {n: k for k, n in enumerate(names)}
    m = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(m, 1.0)
    a = snap["instrument_a"].replace_strict(ix, return_dtype=pl.Int64).to_numpy()
    b = snap["instrument_b"].replace_strict(ix, return_dtype=pl.Int64).to_numpy()
    c = snap["correlation"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    m[a, b] = c
    m[b, a] = c
    snap_ts = snap["ts"][0]
    return clean({
        **cyc.describe(),
        "status": "STALE" if cyc.stale else "OK",
        "snapshot_cycle_id": snap["cycle_id"][0],
        "snapshot_ts": snap_ts,
        "snapshot_age_s": (cyc.now - snap_ts).total_seconds(),
        "instruments": names,
        "matrix": m.tolist(),
    })
