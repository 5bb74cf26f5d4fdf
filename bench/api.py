"""Control-plane API latency on a 2,000-account cycle, over ASGI (no network).

Baselines measured in the same process: the in-process gate check on the same
state (what the HTTP gate adds is reported as a ratio) and a bare warehouse query
of the newest cycle's metrics (what the status endpoint adds on top of reading).
Spec figures: "Dashboard updates: <3 seconds", "Position size calculation: <2 seconds".
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from bench._harness import ms, p, time_calls

N_ACCOUNTS = 2_000
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _cycle_tables(n: int, now: datetime) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(7)
    acct = [f"A{i:05d}" for i in range(n)]
    equity = rng.uniform(5e5, 5e6, n)
    metrics = pl.DataFrame({
        "account_id": acct, "account_group": ["g"] * n, "equity_usd": equity, "start_of_day_equity_usd": equity,
        "peak_equity_usd": equity * 1.01, "unrealized_pnl_usd": rng.normal(0, 1e3, n), "daily_pnl_usd": rng.normal(0, 1e3, n),
        "drawdown": np.full(n, 1 - 1 / 1.01), "var_95": rng.uniform(1e-4, 1e-3, n), "var_99": rng.uniform(2e-4, 2e-3, n),
        "regime": ["NORMAL"] * n, "risk_score": rng.uniform(0, 60, n), "alert_level": [0] * n, "n_positions": [2] * n,
        "valid": [True] * n, "ts": [now] * n,
    })
    state = pl.DataFrame({
        "account_id": acct, "ts": [now] * n, "alert_level": [0] * n, "breaker_state": ["CLOSED"] * n,
        "trading_mode": ["ACTIVE"] * n, "risk_level": ["LOW"] * n, "sizing_multiplier": [1.0] * n,
        "max_leverage": [3.0] * n, "next_cadence_s": [300.0] * n, "peak_equity_usd": equity * 1.01,
    })
    pos = pl.DataFrame({
        "account_id": acct * 2, "strategy": ["trend"] * (2 * n),
        "instrument": ["EUR/USD"] * n + ["GBP/USD"] * n,
        "quantity": np.concatenate([rng.uniform(1e3, 5e3, n), -rng.uniform(1e3, 5e3, n)]),
        "price": [1.085] * n + [1.27] * n, "notional_usd": np.zeros(2 * n), "unrealized_pnl_usd": np.zeros(2 * n),
        "position_var_95": np.full(2 * n, 1e-4), "volatility_score": np.ones(2 * n), "correlation_risk": np.full(2 * n, 0.3),
        "risk_contribution": rng.uniform(0, 1e-3, 2 * n), "ts": [now] * (2 * n),
    })
    return {"realtime_risk_metrics": metrics, "risk_state": state, "position_risk_metrics": pos}


def run() -> dict[str, float]:
    from fastapi.testclient import TestClient

    from risklib.api._control import build_app
    from risklib.api._gate import build_gate_state
    from risklib.clock import FixedClock
    from risklib.config import load_config
    from risklib.core.gate import Order, check
    from risklib.warehouse import CycleRecords, Warehouse

    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp, Warehouse.open(Path(tmp) / "wh") as wh:
        wh.write_cycle(CycleRecords("c1", None, T0 - timedelta(seconds=1), T0, tables=_cycle_tables(N_ACCOUNTS, T0),
                                    n_accounts=N_ACCOUNTS, next_interval_s=300.0))
        clock = FixedClock(T0 + timedelta(seconds=5))
        client = TestClient(build_app(risk_config=cfg, warehouse=wh, clock=clock, api_token="", twilio_auth_token="x"))
        order = {"account_id": "A00042", "strategy": "trend", "instrument": "EUR/USD", "side": "SELL", "quantity": 10}

        first = time_calls(lambda: client.post("/api/gate/check", json=order), repeat=1, warmup=0)  # builds state
        gate_http = time_calls(lambda: client.post("/api/gate/check", json=order), repeat=200, warmup=5)
        state = build_gate_state(wh, "c1", clock.now(), cfg)
        o = Order("A00042", "trend", "EUR/USD", "SELL", 10.0, None, clock.now())
        gate_core = time_calls(lambda: check(o, state, now=clock.now()), repeat=2000, warmup=10)
        build = time_calls(lambda: build_gate_state(wh, "c1", clock.now(), cfg), repeat=5, warmup=1)
        status = time_calls(lambda: client.get("/api/risk/status"), repeat=10, warmup=1)
        health = time_calls(lambda: client.get("/api/risk/portfolio-health"), repeat=10, warmup=1)
        positions = time_calls(lambda: client.get("/api/risk/position-risks", params={"limit": 100}), repeat=10, warmup=1)
        raw = time_calls(lambda: wh.query("SELECT * FROM realtime_risk_metrics WHERE cycle_id = ?", ["c1"]),
                         repeat=10, warmup=1)
    return {
        "accounts": float(N_ACCOUNTS),
        "gate_http_p50_ms": ms(p(gate_http, 50)),
        "gate_http_p99_ms": ms(p(gate_http, 99)),
        "gate_core_p50_ms": ms(p(gate_core, 50)),
        "gate_http_over_core_p50": round(p(gate_http, 50) / p(gate_core, 50), 1),
        "gate_first_call_ms": ms(float(first[0])),
        "gate_state_build_p50_ms": ms(p(build, 50)),
        "status_p50_ms": ms(p(status, 50)),
        "portfolio_health_p50_ms": ms(p(health, 50)),
        "position_risks_p50_ms": ms(p(positions, 50)),
        "raw_metrics_query_p50_ms": ms(p(raw, 50)),
        "status_over_raw_query_p50": round(p(status, 50) / p(raw, 50), 2),
    }
