"""Frame and cycle builders for warehouse tests (producers' column names, small data)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from risklib.warehouse import CycleRecords

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def account_metrics(now: datetime, accounts=("A1", "A2"), *, drawdown=0.01, daily_loss=0.0, alert_level=0) -> pl.DataFrame:
    """realtime_risk_metrics rows using the producers' (frames.ACCOUNT_METRICS) names."""
    n = len(accounts)
    return pl.DataFrame(
        {
            "account_id": list(accounts),
            "account_group": ["g"] * n,
            "equity_usd": [1_000_000.0] * n,
            "drawdown": [drawdown] * n,
            "daily_loss": [daily_loss] * n,
            "var_95": [0.02] * n,
            "var_99": [0.03] * n,
            "regime": ["NORMAL"] * n,
            "risk_score": [12.4] * n,
            "alert_level": [alert_level] * n,
            "valid": [True] * n,
            "ts": [now] * n,
        }
    )


def position_metrics(now: datetime, n: int = 6) -> pl.DataFrame:
    """position_risk_metrics rows using the producers' (frames.POSITION_METRICS) names."""
    return pl.DataFrame(
        {
            "account_id": [f"A{1 + i % 2}" for i in range(n)],
            "strategy": ["trend"] * n,
            "instrument": ["EUR/USD"] * n,
            "quantity": [100_000.0 + i for i in range(n)],
            "price": [1.0850] * n,
            "notional_usd": [108_500.0] * n,
            "unrealized_pnl_usd": [-12.5] * n,
            "position_var_95": [0.001] * n,
            "volatility_score": [1.1] * n,
            "correlation_risk": [0.3] * n,
            "risk_contribution": [0.0005] * n,
            "ts": [now] * n,
        }
    )


def alert_rows(now: datetime, incident_key="A1:drawdown:1", level=2) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "incident_key": [incident_key],
            "account_id": [incident_key.split(":")[0]],
            "rule": ["drawdown"],
            "level": [level],
            "metric_value": [0.06],
            "threshold": [0.05],
            "trading_mode": ["REDUCE_ONLY"],
            "message": ["drawdown 6% > 5%"],
            "ts": [now],
        }
    )


def risk_state_rows(now: datetime, accounts=("A1", "A2"), **extra) -> pl.DataFrame:
    n = len(accounts)
    frame = pl.DataFrame(
        {
            "account_id": list(accounts),
            "ts": [now] * n,
            "episode_id": [None] * n,
            "alert_level": [0] * n,
            "breaker_state": ["CLOSED"] * n,
            "trading_mode": ["ACTIVE"] * n,
            "risk_level": ["LOW"] * n,
            "sizing_multiplier": [1.0] * n,
            "max_leverage": [3.0] * n,
            "next_cadence_s": [300.0] * n,
            "peak_equity_usd": [1_000_000.0] * n,
        },
        schema_overrides={"episode_id": pl.String},
    )
    return frame.with_columns(**{k: pl.lit(v) for k, v in extra.items()})


def cycle(cycle_id: str, now: datetime, **tables: pl.DataFrame) -> CycleRecords:
    return CycleRecords(
        cycle_id=cycle_id,
        flow_run_id="fr-1",
        started_at=now - timedelta(seconds=1),
        finished_at=now,
        status="completed",
        stage_ms={"ingest": 1.5, "record": 3.0},
        tables=dict(tables),
        audit=[{"actor": "policy", "action": "evaluate", "subject": "book", "detail": {"alerts": 0}}],
        n_accounts=2,
        next_interval_s=300.0,
    )
