"""Builders for paper-broker tests: a small book, quotes and actions."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from risklib.adapters.brokers import PaperBroker
from risklib.adapters.feeds import BrokerConfig
from risklib.core import frames

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def book() -> tuple[pl.DataFrame, pl.DataFrame]:
    positions = pl.DataFrame(
        [
            ("A1", "Swing_MA", "EUR/USD", 100_000.0, 1.0800),
            ("A1", "Carry", "USD/JPY", -50_000.0, 150.00),
            ("A2", "Swing_MA", "GBP/USD", 20_000.0, 1.2600),
        ],
        schema=frames.POSITIONS,
        orient="row",
    )
    balances = pl.DataFrame(
        [("A1", "moderate", 100_000.0, 100_000.0), ("A2", "moderate", 50_000.0, 50_000.0)],
        schema=frames.BALANCES,
        orient="row",
    )
    return positions, balances


QUOTES = pl.DataFrame(
    {
        "instrument": ["EUR/USD", "USD/JPY", "GBP/USD"],
        "bid": [1.0899, 149.99, 1.2699],
        "ask": [1.0901, 150.01, 1.2701],
        "mid": [1.0900, 150.00, 1.2700],
    }
)


def actions(*rows: tuple[str, str, str, float]) -> pl.DataFrame:
    """Rows of (idempotency_key, account_id, action, fraction)."""
    return pl.DataFrame(
        [(k, f"inc-{k}", a, act, f, "test", NOW) for k, a, act, f in rows],
        schema=frames.ACTIONS,
        orient="row",
    )


@pytest.fixture
def exact_config() -> BrokerConfig:
    """No partial fills, no slippage: arithmetic is exact."""
    return BrokerConfig(slippage_bps=0.0, partial_fill_p=0.0)


@pytest.fixture
def broker(exact_config: BrokerConfig) -> PaperBroker:
    positions, balances = book()
    return PaperBroker(exact_config, positions=positions, balances=balances)


def qty(b: PaperBroker, account: str, instrument: str) -> float:
    return float(
        b.positions().filter((pl.col("account_id") == account) & (pl.col("instrument") == instrument))["quantity"].sum()
    )


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def quotes() -> pl.DataFrame:
    return QUOTES


@pytest.fixture
def make_actions():
    return actions


@pytest.fixture
def make_book():
    return book


@pytest.fixture
def held():
    return qty
