"""Builders for gate tests: a gate state from a calm evaluation, orders."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from risklib.core import frames
from risklib.core.gate import GateState, Order
from risklib.config import default_policy_dict, load_policy_config
from risklib.core.policy import MarketInputs, evaluate

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=1)
PRICES = {"EUR/USD": 1.10, "USD/JPY": 150.0, "GBP/USD": 1.25}
CFG = load_policy_config(None)


def config(**gate) -> object:
    d = default_policy_dict()
    d["gate"] = d["gate"] | gate
    return load_policy_config(d)


def metrics(*accounts: str, equity: float = 100_000.0) -> pl.DataFrame:
    rows = []
    for a in accounts or ("A1",):
        rows.append(dict(
            account_id=a, account_group="retail", equity_usd=equity, start_of_day_equity_usd=equity,
            peak_equity_usd=equity, unrealized_pnl_usd=0.0, daily_pnl_usd=0.0, daily_pnl_pct=0.0, daily_loss=0.0,
            drawdown=0.0, gross_exposure_usd=0.0, net_exposure_usd=0.0, exposure_pct=0.0, leverage=0.0,
            var_95=0.0003, var_99=0.0005, es_99=0.0006, var_99_parametric=0.0004, ewma_vol=0.05, vol_ratio=1.0,
            correlation_index=0.2, max_pair_correlation=0.3, concentration=0.5, regime="sideways", risk_score=10.0,
            n_positions=1, valid=True, invalid_reason=None))
    return pl.DataFrame(rows, schema=frames.ACCOUNT_METRICS)


def positions(*rows: tuple) -> pl.DataFrame:
    """(account, strategy, instrument, signed quantity) rows."""
    return pl.DataFrame(
        [dict(account_id=a, strategy=s, instrument=i, quantity=float(q), entry_price=PRICES.get(i, 1.0))
         for a, s, i, q in rows],
        schema=frames.POSITIONS,
    )


def gate_state(*, cfg=None, accounts=("A1",), pos=None, prices=None, state_edit=None, equity=100_000.0) -> GateState:
    cfg = cfg or CFG
    m = metrics(*accounts, equity=equity)
    st = evaluate(T0, m, None, cfg, market=MarketInputs(feed_silent_s=1.0)).state
    if state_edit:
        st = st.with_columns(**state_edit)
    pos = pos if pos is not None else positions(("A1", "swing", "EUR/USD", 1000))
    return GateState.from_frames(T0, st, m, pos, PRICES if prices is None else prices, cfg)


def order(side="BUY", qty=100.0, inst="EUR/USD", account="A1", strategy="swing", price=None, ts=T1, reduce_only=False):
    return Order(account, strategy, inst, side, qty, price, ts, reduce_only)
