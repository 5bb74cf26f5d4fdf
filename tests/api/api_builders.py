"""Builders for the control-plane API tests: recorded cycles and clients (imported by tests and conftest)."""


from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
from fastapi.testclient import TestClient

from risklib.warehouse import CycleRecords, Warehouse

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def account_metrics(now: datetime, *, equity=(1_000_000.0, 2_000_000.0), var_99=(0.0008, 0.0012)) -> pl.DataFrame:
    """Two accounts (frames.ACCOUNT_METRICS names) with distinct numbers."""
    return pl.DataFrame(
        {
            "account_id": ["A1", "A2"],
            "account_group": ["g", "g"],
            "equity_usd": list(equity),
            "start_of_day_equity_usd": [1_010_000.0, 2_000_000.0],
            "peak_equity_usd": [1_050_000.0, 2_000_000.0],
            "unrealized_pnl_usd": [-1_000.0, 2_500.0],
            "daily_pnl_usd": [-10_000.0, 0.0],
            "daily_pnl_pct": [-10_000.0 / 1_010_000.0, 0.0],
            "daily_loss": [10_000.0 / 1_010_000.0, 0.0],
            "drawdown": [1 - 1_000_000.0 / 1_050_000.0, 0.0],
            "gross_exposure_usd": [10_850.0, 12_700.0],
            "net_exposure_usd": [10_850.0, -12_700.0],
            "exposure_pct": [0.01085, 0.00635],
            "leverage": [0.01085, 0.00635],
            "var_95": [0.0005, 0.0009],
            "var_99": list(var_99),
            "es_99": [0.001, 0.0015],
            "var_99_parametric": [0.0007, 0.0011],
            "ewma_vol": [0.08, 0.09],
            "vol_ratio": [1.0, 1.2],
            "correlation_index": [0.31, 0.42],
            "max_pair_correlation": [0.5, 0.6],
            "concentration": [1.0, 1.0],
            "regime": ["NORMAL", "NORMAL"],
            "risk_score": [21.0, 34.0],
            "alert_level": [1, 0],
            "n_positions": [1, 1],
            "valid": [True, True],
            "invalid_reason": [None, None],
            "ts": [now, now],
        },
        schema_overrides={"invalid_reason": pl.String},
    )


def position_metrics(now: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": ["A1", "A2"],
            "strategy": ["trend", "carry"],
            "instrument": ["EUR/USD", "GBP/USD"],
            "quantity": [10_000.0, -10_000.0],
            "price": [1.085, 1.27],
            "notional_usd": [10_850.0, -12_700.0],
            "unrealized_pnl_usd": [-1_000.0, 2_500.0],
            "position_var_95": [0.0005, 0.0009],
            "volatility_score": [1.0, 1.2],
            "correlation_risk": [0.3, 0.4],
            "risk_contribution": [0.0007, 0.0011],
            "ts": [now, now],
        }
    )


def risk_state(now: datetime, *, modes=("ACTIVE", "ACTIVE"), alert_levels=(1, 0)) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "account_id": ["A1", "A2"],
            "ts": [now, now],
            "episode_id": [None, None],
            "alert_level": list(alert_levels),
            "breaker_state": ["CLOSED", "CLOSED"],
            "trading_mode": list(modes),
            "risk_level": ["LOW", "LOW"],
            "sizing_multiplier": [1.0, 1.0],
            "max_leverage": [3.0, 3.0],
            "next_cadence_s": [300.0, 300.0],
            "peak_equity_usd": [1_050_000.0, 2_000_000.0],
        },
        schema_overrides={"episode_id": pl.String},
    )


def record_cycle(wh: Warehouse, cycle_id: str, now: datetime, **kw) -> None:
    tables = {
        "realtime_risk_metrics": account_metrics(now, **kw.get("metrics", {})),
        "position_risk_metrics": position_metrics(now),
        "risk_state": risk_state(now, **kw.get("state", {})),
    }
    tables.update(kw.get("extra", {}))
    wh.write_cycle(CycleRecords(cycle_id=cycle_id, flow_run_id=None, started_at=now - timedelta(seconds=1),
                                finished_at=now, tables=tables, n_accounts=2, next_interval_s=300.0))


def make_client(wh, clock, token=""):
    from risklib.api._control import build_app

    return TestClient(build_app(warehouse=wh, clock=clock, api_token=token, twilio_auth_token="x"))
