"""The broker interface, the order type strategies submit, and the report of an execution."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import polars as pl

from risklib.core import frames
from risklib.errors import BrokerError

#: Rows of the warehouse's ``broker_orders`` table. ``quantity`` and
#: ``filled_quantity`` are unsigned base units; ``side`` BUY | SELL.
BROKER_ORDERS = {
    "order_id": pl.String,
    "idempotency_key": pl.String,
    "account_id": pl.String,
    "instrument": pl.String,
    "side": pl.String,
    "quantity": pl.Float64,
    "filled_quantity": pl.Float64,
    "status": pl.String,  # FILLED | PARTIALLY_FILLED | REJECTED
    "reason": pl.String,
    "at": frames.UTC_TS,
}

#: Rows of the warehouse's ``broker_fills`` table. ``quantity`` is signed (+ bought, - sold).
BROKER_FILLS = {
    "fill_id": pl.String,
    "order_id": pl.String,
    "account_id": pl.String,
    "instrument": pl.String,
    "quantity": pl.Float64,
    "price": pl.Float64,
    "at": frames.UTC_TS,
}

#: Per-account trading mode changes ordered by HALT_ENTRIES / HALT_ALL / RESUME.
MODE_CHANGES = {
    "idempotency_key": pl.String,
    "account_id": pl.String,
    "action": pl.String,
    "mode_before": pl.String,
    "mode_after": pl.String,
    "at": frames.UTC_TS,
}

#: Actions not executed because their key was seen before (replay, retry, restart).
SKIPPED = {
    "idempotency_key": pl.String,
    "account_id": pl.String,
    "action": pl.String,
    "reason": pl.String,
}

#: Risk-order remainders the broker could not fill yet; re-submitted on the next execution.
PENDING = {
    "idempotency_key": pl.String,
    "account_id": pl.String,
    "strategy": pl.String,
    "instrument": pl.String,
    "side": pl.String,
    "quantity": pl.Float64,
    "reason": pl.String,
    "attempt": pl.Int64,
}

TRADE_ACTIONS = ("REDUCE", "CLOSE", "CLOSE_ALL")
MODE_ACTIONS = {"HALT_ENTRIES": "HALT_ENTRIES", "HALT_ALL": "HALT_ALL", "RESUME": "ACTIVE"}
MODES = ("ACTIVE", "HALT_ENTRIES", "HALT_ALL")


@dataclass(frozen=True)
class Order:
    """A strategy's order, as the pre-trade gate and the broker see it.

    Attributes
    ----------
    account_id, strategy, instrument : str
    side : str
        ``BUY`` or ``SELL``.
    quantity : float
        Base units, > 0.
    price : float | None
        Reference mid (quote currency per base unit) when the order was made.
    idempotency_key : str | None
        The broker acts once per key; generated from the other fields when None.
    """

    account_id: str
    strategy: str
    instrument: str
    side: str
    quantity: float
    price: float | None = None
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if self.side not in ("BUY", "SELL"):
            raise BrokerError(f"side={self.side!r}: must be BUY or SELL")
        if not (self.quantity > 0):
            raise BrokerError(f"quantity={self.quantity}: must be > 0")

    @property
    def signed_quantity(self) -> float:
        return self.quantity if self.side == "BUY" else -self.quantity

    @property
    def notional_usd(self) -> float | None:
        """Unsigned USD notional at ``price`` (None without a price)."""
        if self.price is None:
            return None
        from risklib.core.instruments import FX_MAJORS

        ins = FX_MAJORS.get(self.instrument)
        return self.quantity * self.price if ins is None or ins.usd_is_quote else self.quantity


@dataclass(frozen=True)
class ExecutionReport:
    """What one ``execute``/``submit`` call did; the pipeline writes it to the warehouse.

    Attributes
    ----------
    orders : pl.DataFrame
        :data:`BROKER_ORDERS`, one row per order sent (re-submissions are new orders).
    fills : pl.DataFrame
        :data:`BROKER_FILLS`.
    mode_changes : pl.DataFrame
        :data:`MODE_CHANGES`.
    skipped : pl.DataFrame
        :data:`SKIPPED`: actions whose key had been executed already.
    pending : pl.DataFrame
        :data:`PENDING`: risk-order remainders still open after this call.
    executed_keys : tuple[str, ...]
        Keys acted on in this call (persist them; reload with ``seen_keys``).
    """

    orders: pl.DataFrame
    fills: pl.DataFrame
    mode_changes: pl.DataFrame
    skipped: pl.DataFrame
    pending: pl.DataFrame
    executed_keys: tuple[str, ...] = field(default=())

    @classmethod
    def empty(cls) -> ExecutionReport:
        return cls(
            frames.empty(BROKER_ORDERS),
            frames.empty(BROKER_FILLS),
            frames.empty(MODE_CHANGES),
            frames.empty(SKIPPED),
            frames.empty(PENDING),
        )

    def summary(self) -> dict[str, float]:
        """Counts for logs and the dashboard."""
        by = self.orders.group_by("status").len() if self.orders.height else None
        counts = dict(zip(by["status"].to_list(), by["len"].to_list())) if by is not None else {}
        return {
            "orders": float(self.orders.height),
            "filled": float(counts.get("FILLED", 0)),
            "partially_filled": float(counts.get("PARTIALLY_FILLED", 0)),
            "rejected": float(counts.get("REJECTED", 0)),
            "fills": float(self.fills.height),
            "mode_changes": float(self.mode_changes.height),
            "skipped": float(self.skipped.height),
            "pending": float(self.pending.height),
        }


@runtime_checkable
class Broker(Protocol):
    """Executes risk actions and strategy orders; holds or mirrors the book."""

    def execute(self, actions: pl.DataFrame, prices: pl.DataFrame, now: datetime) -> ExecutionReport:
        """Act on :data:`frames.ACTIONS` rows once per idempotency key."""
        ...

    def submit(self, order: Order, now: datetime, prices: pl.DataFrame | None = None) -> ExecutionReport:
        """Place one strategy order."""
        ...

    def seen_keys(self, keys) -> None:
        """Register keys already acted on (reloaded after a restart)."""
        ...

    def positions(self) -> pl.DataFrame: ...

    def balances(self) -> pl.DataFrame: ...
