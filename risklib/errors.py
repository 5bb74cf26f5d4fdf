"""Every exception and warning the product raises.

Messages name the field and the value, e.g. ``max_leverage=-1.0: must be > 0``.
Data problems subclass :class:`ValueError` so callers that only know the
standard library still catch them.

Sections below belong to one area each; add new classes to your area's section.
"""

from __future__ import annotations


class RiskError(Exception):
    """Base of every error the product raises on purpose."""


class RiskWarning(UserWarning):
    """Base of every warning the product emits (recoverable data issues)."""


# --- data and schemas --------------------------------------------------------


class DataError(RiskError, ValueError):
    """Input data is unusable: NaN, non-positive price, wrong shape, unknown key."""


class SchemaError(DataError):
    """A frame lacks a column or a column has the wrong type."""


# --- metrics -------------------------------------------------------------------


class MetricsError(DataError):
    """A metric cannot be computed from the data given (e.g. history too short)."""


# --- policy, config and gate ---------------------------------------------------


class ConfigError(RiskError, ValueError):
    """The policy configuration is invalid; the message names the key and value."""


class IllegalTransitionError(RiskError):
    """A state machine (breaker, trading mode) was asked for a transition it forbids."""


class AuthorityError(RiskError, PermissionError):
    """An override asks for more than the operator's authority level allows."""


# --- warehouse -----------------------------------------------------------------


class WarehouseError(RiskError):
    """The warehouse refused an operation (schema violation, lock, migration)."""


class AuditChainError(WarehouseError):
    """The audit log's hash chain is broken; the message names the first bad entry."""


# --- escalation and delivery ---------------------------------------------------


class DeliveryError(RiskError):
    """A provider refused or failed a message."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None, in_doubt: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.in_doubt = in_doubt  # the provider may have accepted it (read timeout): reconcile before resending


class WebhookAuthError(RiskError, PermissionError):
    """An inbound webhook failed signature or rota checks."""


# --- pipeline, feeds and brokers ----------------------------------------------


class FeedError(RiskError):
    """The feed could not deliver a snapshot (disconnect, replay exhausted)."""


class BrokerError(RiskError):
    """The broker rejected or could not execute an order."""


class ReplayFileError(FeedError, DataError):
    """A replay file is unreadable or malformed; the message names file, row, column and value."""


class ValidationMismatchWarning(RiskWarning):
    """Great Expectations and the vectorized screen disagree on a rule; both verdicts are quarantined."""
