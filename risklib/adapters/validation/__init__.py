"""Input validation: Great Expectations suites for ticks, positions and balances, with quarantine.

Failing rows go to the quarantine frame (the pipeline writes it to the
warehouse) with the expectation that failed; their accounts fail closed; the
rest of the book goes on.
"""

from ._rules import EQUITY, MAX_ABS, MAX_PRICE, RULES, Rule
from ._validate import (
    FAILED_ACCOUNTS,
    GX_MODES,
    QUARANTINE,
    SnapshotValidator,
    ValidationResult,
    validate_snapshot,
)

__all__ = [
    "EQUITY",
    "FAILED_ACCOUNTS",
    "GX_MODES",
    "MAX_ABS",
    "MAX_PRICE",
    "QUARANTINE",
    "RULES",
    "Rule",
    "SnapshotValidator",
    "ValidationResult",
    "validate_snapshot",
]
