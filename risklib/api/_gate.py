"""``POST /api/gate/check``: the pre-trade gate for trading systems outside the pipeline's process.

The gate's state is built from the warehouse's newest completed cycle (risk state,
account metrics, positions of ``position_risk_metrics``, prices of ``market_quotes``: every
instrument the cycle had a valid quote for, held or not) and cached
per cycle id; ``now`` is the API's clock, so the dead man's switch holds: without a
recent cycle every order adding risk is refused (``STALE_STATE``), while orders
that reduce a position always pass. Anything unexpected refuses new risk.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Literal

import polars as pl
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from risklib.api._deps import (
    METRIC_NAMES,
    clean,
    effective_config_locked,
    max_heartbeat_age_s,
    newest_cycle,
    unpack_state,
)

router = APIRouter(prefix="/api/gate", tags=["gate"])
_build_lock = threading.Lock()


class OrderRequest(BaseModel):
    """An order asking to go out (quantity in base-currency units; price in quote per base)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    account_id: str = Field(min_length=1, max_length=100)
    strategy: str = Field(min_length=1, max_length=100)
    instrument: str = Field(min_length=3, max_length=20)
    side: Literal["BUY", "SELL"]
    quantity: float = Field(gt=0.0, allow_inf_nan=False)
    price: float | None = Field(None, gt=0.0, allow_inf_nan=False)  # None: market order at the last price
    reduce_only: bool = False


def build_gate_state(wh: Any, cycle_id: str | None, now: Any, config: Any) -> Any:
    """A :class:`~risklib.core.gate.GateState` from one cycle's warehouse rows (caller holds the lock).

    ``cycle_id=None`` (no completed cycle) gives an empty state: every account is unknown,
    so only ``reduce_only`` orders pass.
    """
    from risklib.core.gate import GateState

    if cycle_id is None:
        state = pl.DataFrame(schema={"account_id": pl.String, "ts": pl.Datetime("us", "UTC"),
                                     "trading_mode": pl.String, "breaker_state": pl.String})
        metrics = pl.DataFrame(schema={"account_id": pl.String, "equity_usd": pl.Float64, "valid": pl.Boolean})
        positions = pl.DataFrame(schema={"account_id": pl.String, "strategy": pl.String, "instrument": pl.String,
                                         "quantity": pl.Float64, "entry_price": pl.Float64})
        prices = pl.DataFrame(schema={"instrument": pl.String, "mid": pl.Float64})
    else:
        state = unpack_state(wh.query("SELECT * FROM risk_state WHERE cycle_id = ? ORDER BY account_id", [cycle_id]))
        metrics = wh.query(
            "SELECT account_id, equity_usd, valid FROM realtime_risk_metrics WHERE cycle_id = ?", [cycle_id]
        ).rename(METRIC_NAMES, strict=False)
        positions = wh.query(
            "SELECT account_id, strategy_name AS strategy, currency_pair AS instrument, position_size AS quantity, "
            "price AS entry_price FROM position_risk_metrics WHERE cycle_id = ?", [cycle_id]
        ).with_columns(pl.col("strategy").fill_null("unknown"))
        quoted = wh.query("SELECT instrument, mid FROM market_quotes WHERE cycle_id = ? AND mid > 0", [cycle_id])
        # cycles recorded before market_quotes existed: the prices their positions were marked at
        marked = (
            positions.filter(pl.col("entry_price").is_not_null() & (pl.col("entry_price") > 0))
            .group_by("instrument").agg(pl.col("entry_price").first().alias("mid"))
        )
        prices = pl.concat([quoted.select("instrument", pl.col("mid").cast(pl.Float64)), marked]).unique(
            "instrument", keep="first", maintain_order=True
        )
    return GateState.from_frames(now, state, metrics, positions, prices, config.policy)


def _stale_decision(order: Any, gs: Any, now: Any, cyc: Any) -> Any:
    """Dead man's switch at the heartbeat: only the part of an order that reduces a known position passes."""
    from dataclasses import replace

    from risklib.core.gate import Decision, Reason, check_and_record

    age = "none" if cyc.heartbeat_age_s is None else f"{cyc.heartbeat_age_s:.1f}s"
    stale = Reason("STALE_STATE", f"pipeline heartbeat age={age} > max={cyc.max_age_s:g}s (dead man's switch): "
                                  "no new risk")
    if order.account_id not in gs.account_index:
        return Decision(False, 0.0, (stale,), False)
    d = check_and_record(replace(order, reduce_only=True), gs, now=now)
    if d.approved:
        return Decision(True, d.quantity, (stale, *d.reasons), True)
    return Decision(False, 0.0, (stale,), False)


@router.post("/check")
def gate_check(request: Request, body: OrderRequest) -> dict[str, Any]:
    """Ask the pre-trade gate about one order.

    Returns ``approved``, the approved ``quantity`` (may be cut to fit), ``reducing`` and
    ``reasons`` (stable ``code`` plus a message naming values and basis), with the cycle
    the decision rests on. An approval counts as pending exposure for later checks until
    the next cycle's positions replace it.
    """
    from risklib.core.gate import Decision, Order, Reason, check_and_record

    ctx = request.app.state.ctx
    app_state = request.app.state
    cycle_id = None
    try:
        with ctx.lock:
            now = ctx.clock.now()
            # The gate's state and config are cached per cycle: recorded threshold changes take
            # effect at the pipeline's next cycle, and so here.
            cached = getattr(app_state, "gate_cache", None)
            cfg = cached[1] if cached is not None else effective_config_locked(request)[0]
            cyc = newest_cycle(ctx.warehouse, now, cfg)
            cycle_id = cyc.cycle_id
            if cached is None or cached[0] != cyc.cycle_id:
                cfg = effective_config_locked(request)[0]
                cyc = replace(cyc, max_age_s=max_heartbeat_age_s(cfg, cyc.next_interval_s))
                cached = (cyc.cycle_id, cfg, build_gate_state(ctx.warehouse, cyc.cycle_id, now, cfg))
                app_state.gate_cache = cached
            gs = cached[2]
            with _build_lock:
                order = Order(body.account_id, body.strategy, body.instrument, body.side, float(body.quantity),
                              body.price, now, body.reduce_only)
                if cyc.stale and not body.reduce_only:
                    decision = _stale_decision(order, gs, now, cyc)
                else:
                    decision = check_and_record(order, gs, now=now)
        meta = cyc.describe()
    except Exception as exc:  # noqa: BLE001 - the gate fails closed on anything
        now = ctx.clock.now()
        reason = Reason("CHECK_ERROR", f"{type(exc).__name__}: {exc}")
        decision = (Decision(True, float(body.quantity), (reason,), True) if body.reduce_only
                    else Decision(False, 0.0, (reason,), False))
        meta = {"cycle_id": cycle_id, "now": now, "stale": True}
    return clean({
        "approved": decision.approved,
        "quantity": decision.quantity,
        "requested_quantity": body.quantity,
        "reducing": decision.reducing,
        "codes": list(decision.codes),
        "reasons": [{"code": r.code, "message": r.message} for r in decision.reasons],
        **meta,
    })
