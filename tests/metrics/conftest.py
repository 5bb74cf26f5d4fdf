"""Fixtures for the metrics tests: real index data shipped with ``arch`` and a small FX book."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_builders import FX, make_balances, make_positions, make_prices


def _index_returns(name: str) -> np.ndarray:
    import importlib

    frame = importlib.import_module(f"arch.data.{name}").load()
    return frame["Adj Close"].pct_change().dropna().to_numpy()


@pytest.fixture(scope="session")
def sp500_returns() -> np.ndarray:
    """Daily simple returns of the S&P 500 (arch.data.sp500, 1999-2018), oldest first."""
    return _index_returns("sp500")


@pytest.fixture(scope="session")
def index_returns(sp500_returns) -> np.ndarray:
    """S&P 500 and NASDAQ daily returns over their common dates as a (2, T) series array, cut into 4 rows of 1,000 days."""
    nasdaq = _index_returns("nasdaq")
    n = min(len(sp500_returns), len(nasdaq))
    rows = [sp500_returns[:1000], sp500_returns[1000:2000], nasdaq[:1000], nasdaq[n - 1000 : n]]
    return np.vstack(rows)


@pytest.fixture(scope="session")
def fx_returns() -> np.ndarray:
    """Seeded fat-tailed, correlated (300, 7) returns for the FX majors."""
    rng = np.random.default_rng(7)
    f = rng.standard_t(5, size=(300, 2))
    load = rng.normal(0, 1, size=(2, len(FX)))
    return f @ load * 0.002 + rng.standard_t(5, size=(300, len(FX))) * 0.003


@pytest.fixture
def small_book(fx_returns):
    """Three healthy accounts (one flat) over the FX majors."""
    positions = make_positions(
        [
            ("a", "swing", "EUR/USD", 100_000.0, 1.07),
            ("a", "swing", "USD/JPY", -50_000.0, 151.0),
            ("a", "carry", "EUR/USD", 20_000.0, 1.09),
            ("a", "carry", "AUD/USD", 30_000.0, 0.65),
            ("b", "trend", "GBP/USD", 40_000.0, 1.25),
            ("b", "trend", "USD/CHF", 25_000.0, 0.90),
        ]
    )
    balances = make_balances([("a", 100_000.0, 100_000.0), ("b", 50_000.0, 51_000.0), ("flat", 10_000.0, 10_000.0)])
    return {"positions": positions, "balances": balances, "prices": make_prices(), "returns": fx_returns, "instruments": FX}
