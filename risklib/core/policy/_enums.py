"""Named states of the policy: trading modes, breaker states, risk levels, actions.

All enums are ``str``-valued so they go into Polars frames as strings.
"""

from __future__ import annotations

from enum import Enum


class TradingMode(str, Enum):
    """What an account may do. Ordered from least to most restrictive.

    ============ =========== ============== ================== =======
    mode         new entries increases      reductions/closes  cancels
    ============ =========== ============== ================== =======
    ACTIVE       allowed     allowed        allowed            allowed
    REDUCE_ONLY  blocked     blocked        allowed            allowed
    HALTED       blocked     blocked        allowed            allowed
    FLATTEN      blocked     blocked        allowed (ordered)  allowed
    ============ =========== ============== ================== =======

    REDUCE_ONLY is the policy's "halt new entries" and clears by hysteresis;
    HALTED is "complete trading halt" (breaker OPEN or a halting ladder step)
    and is latched to the breaker episode; FLATTEN means the policy has ordered
    every position closed. Reducing and closing orders are never blocked.
    """

    ACTIVE = "ACTIVE"
    REDUCE_ONLY = "REDUCE_ONLY"
    HALTED = "HALTED"
    FLATTEN = "FLATTEN"

    @property
    def rank(self) -> int:
        return _MODE_RANK[self]

    @property
    def blocks(self) -> str:
        """Human description of what the mode blocks (goes into every alert)."""
        return _MODE_BLOCKS[self]


_MODE_RANK = {TradingMode.ACTIVE: 0, TradingMode.REDUCE_ONLY: 1, TradingMode.HALTED: 2, TradingMode.FLATTEN: 3}
MODES_BY_RANK = (TradingMode.ACTIVE, TradingMode.REDUCE_ONLY, TradingMode.HALTED, TradingMode.FLATTEN)
_MODE_BLOCKS = {
    TradingMode.ACTIVE: "nothing blocked",
    TradingMode.REDUCE_ONLY: "blocks new entries and increases; reductions, closes and cancels allowed",
    TradingMode.HALTED: "blocks all new risk (complete halt); reductions, closes and cancels allowed",
    TradingMode.FLATTEN: "blocks all new risk; positions are being closed; reductions, closes and cancels allowed",
}


class BreakerState(str, Enum):
    """Circuit breaker states (institutional document, "Three-State Operation")."""

    CLOSED = "CLOSED"  # normal trading
    OPEN = "OPEN"  # complete halt
    HALF_OPEN = "HALF_OPEN"  # limited probe trading for recovery testing


BREAKERS_BY_CODE = (BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN)


class RiskLevel(str, Enum):
    """Account risk level (institutional document, "Risk Level Adjustments")."""

    MINIMAL = "MINIMAL"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"
    EMERGENCY = "EMERGENCY"  # emergency mode constraints in force


RISK_LEVELS_BY_RANK = (
    RiskLevel.MINIMAL,
    RiskLevel.LOW,
    RiskLevel.MEDIUM,
    RiskLevel.HIGH,
    RiskLevel.CRITICAL,
    RiskLevel.EMERGENCY,
)


class ActionKind(str, Enum):
    """Actions the policy orders (``frames.ACTIONS.action``)."""

    NONE = "NONE"
    REDUCE = "REDUCE"
    CLOSE = "CLOSE"
    CLOSE_ALL = "CLOSE_ALL"
    HALT_ENTRIES = "HALT_ENTRIES"
    HALT_ALL = "HALT_ALL"
    RESUME = "RESUME"


class Channel(str, Enum):
    """Notification channels an alert level may use (real-time document, "Alert Levels")."""

    DASHBOARD = "dashboard"
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    MANAGEMENT = "management"


class BreakerEffect(str, Enum):
    """What a ladder step does to the circuit breaker."""

    NONE = "none"
    WARNING = "warning"
    TRIP = "trip"
