"""Brokers: the :class:`Broker` interface and the embedded :class:`PaperBroker`."""

from ._base import (
    BROKER_FILLS,
    BROKER_ORDERS,
    MODE_CHANGES,
    PENDING,
    SKIPPED,
    Broker,
    ExecutionReport,
    Order,
)
from ._paper import PaperBroker

__all__ = [
    "BROKER_FILLS",
    "BROKER_ORDERS",
    "MODE_CHANGES",
    "PENDING",
    "SKIPPED",
    "Broker",
    "ExecutionReport",
    "Order",
    "PaperBroker",
]
