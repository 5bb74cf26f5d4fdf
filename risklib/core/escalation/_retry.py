"""Retry timing (pure)."""

from __future__ import annotations

from risklib.core.escalation._config import RetryPolicy
from risklib.core.escalation._format import short_hash


def backoff_s(attempt: int, policy: RetryPolicy, *, key: str = "", retry_after_s: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` after ``attempt`` failures.

    Exponential (``base_s * 2**(attempt-1)``, capped at ``max_backoff_s``) with a
    deterministic jitter of ``+-jitter`` derived from ``key``. A provider's
    ``Retry-After`` is honoured: the wait is never shorter than it (clamped to
    ``max_retry_after_s``).
    """
    if attempt < 1:
        raise ValueError(f"attempt={attempt}: must be >= 1")
    base = min(policy.base_s * 2 ** (attempt - 1), policy.max_backoff_s)
    frac = int(short_hash(key, attempt, n=8), 16) / 0xFFFFFFFF  # in [0, 1]
    wait = base * (1.0 + policy.jitter * (2.0 * frac - 1.0))
    if retry_after_s is not None and retry_after_s > 0:
        wait = max(wait, min(retry_after_s, policy.max_retry_after_s))
    return wait
