"""Reference data for the instruments the product knows.

An instrument ``BASE/QUOTE`` is priced in QUOTE per unit of BASE; positions are
held in units of BASE. The product's reporting currency is USD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    base: str
    quote: str
    pip: float  # price increment, used for spread and band checks

    @property
    def usd_is_quote(self) -> bool:
        return self.quote == "USD"


#: The instruments the simulator trades and the validators accept by default.
FX_MAJORS: dict[str, Instrument] = {
    i.symbol: i
    for i in (
        Instrument("EUR/USD", "EUR", "USD", 1e-4),
        Instrument("GBP/USD", "GBP", "USD", 1e-4),
        Instrument("USD/JPY", "USD", "JPY", 1e-2),
        Instrument("AUD/USD", "AUD", "USD", 1e-4),
        Instrument("USD/CHF", "USD", "CHF", 1e-4),
        Instrument("USD/CAD", "USD", "CAD", 1e-4),
        Instrument("NZD/USD", "NZD", "USD", 1e-4),
    )
}


def notional_usd(quantity: np.ndarray, price: np.ndarray, usd_is_quote: np.ndarray) -> np.ndarray:
    """Signed USD notional of positions of ``quantity`` base units at ``price``.

    For ``XXX/USD`` the notional is ``quantity * price``; for ``USD/XXX`` it is
    ``quantity`` (already USD). Crosses without USD are not in the default set;
    callers that add them convert first.
    """
    return np.where(usd_is_quote, quantity * price, quantity)


def pnl_usd(quantity: np.ndarray, entry: np.ndarray, price: np.ndarray, usd_is_quote: np.ndarray) -> np.ndarray:
    """Unrealized P&L in USD: ``quantity * (price - entry)`` in QUOTE, converted at ``price``."""
    pnl_quote = quantity * (price - entry)
    return np.where(usd_is_quote, pnl_quote, pnl_quote / price)
