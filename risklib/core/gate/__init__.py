"""The pre-trade gate: ``check(order, state) -> Decision(approved, quantity, reasons)`` and a batch form.

Pure: no I/O, no clock (time comes from the order or ``now``).
"""

from risklib.core.gate._check import (
    BatchDecision,
    OrderBatch,
    check,
    check_and_record,
    check_batch,
    record,
)
from risklib.core.gate._state import REASON_BITS, Decision, GateState, Order, Reason, decode_reasons

__all__ = [
    "BatchDecision", "OrderBatch", "check", "check_and_record", "check_batch", "record", "REASON_BITS",
    "Decision", "GateState", "Order", "Reason", "decode_reasons",
]
