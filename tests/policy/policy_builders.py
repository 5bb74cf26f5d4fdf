"""Builders for policy tests: account metrics frames, a fixed time, repeated evaluation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
from risklib.core import frames
from risklib.core.policy import MarketInputs, evaluate

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
FEED_OK = MarketInputs(feed_silent_s=1.0)

#: Metrics of a calm, valid account: nothing fires.
CALM = dict(
    account_id="A1", account_group="retail", equity_usd=100_000.0, start_of_day_equity_usd=100_000.0,
    peak_equity_usd=100_000.0, unrealized_pnl_usd=0.0, daily_pnl_usd=0.0, daily_pnl_pct=0.0, daily_loss=0.0,
    drawdown=0.0, gross_exposure_usd=10_000.0, net_exposure_usd=10_000.0, exposure_pct=0.1, leverage=0.1,
    var_95=0.0003, var_99=0.0005, es_99=0.0006, var_99_parametric=0.0004, ewma_vol=0.05, vol_ratio=1.0,
    correlation_index=0.2, max_pair_correlation=0.3, concentration=0.5, regime="sideways", risk_score=10.0,
    n_positions=2, valid=True, invalid_reason=None,
)


def make_metrics(*rows: dict, **common) -> pl.DataFrame:
    """A ``frames.ACCOUNT_METRICS`` frame: one row per dict (default one calm row), ``common`` applied to all."""
    rows = rows or ({},)
    return pl.DataFrame([CALM | common | r for r in rows], schema=frames.ACCOUNT_METRICS)


def run(metrics: pl.DataFrame, cfg, *, steps: int = 1, dt_s: float = 5.0, start=T0, market=FEED_OK, previous=None,
        overrides=None):
    """Evaluate ``steps`` times with the same metrics, ``dt_s`` apart; return the list of evaluations."""
    out = []
    prev = previous
    for k in range(steps):
        ev = evaluate(start + timedelta(seconds=k * dt_s), metrics, prev, cfg, market=market, overrides=overrides)
        out.append(ev)
        prev = ev.state
    return out


