"""Builders shared by the metrics tests (a module with a unique name, importable from the tests)."""

from __future__ import annotations

import polars as pl

from risklib.core.instruments import FX_MAJORS

FX = list(FX_MAJORS)
MIDS = {"EUR/USD": 1.08, "GBP/USD": 1.27, "USD/JPY": 150.0, "AUD/USD": 0.66, "USD/CHF": 0.88, "USD/CAD": 1.36, "NZD/USD": 0.61}


def make_prices() -> pl.DataFrame:
    return pl.DataFrame({"instrument": FX, "mid": [MIDS[i] for i in FX]})


def make_positions(rows: list[tuple[str, str, str, float, float]]) -> pl.DataFrame:
    """Positions from (account_id, strategy, instrument, quantity, entry_price) tuples."""
    return pl.DataFrame(
        rows,
        schema={"account_id": pl.String, "strategy": pl.String, "instrument": pl.String, "quantity": pl.Float64, "entry_price": pl.Float64},
        orient="row",
    )


def make_balances(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    """Balances from (account_id, cash_usd, start_of_day_equity_usd) tuples, group "g"."""
    return pl.DataFrame(
        [(a, "g", c, s) for a, c, s in rows],
        schema={"account_id": pl.String, "account_group": pl.String, "cash_usd": pl.Float64, "start_of_day_equity_usd": pl.Float64},
        orient="row",
    )
