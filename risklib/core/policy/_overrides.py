"""Manual overrides: who may suspend or adjust which rule, and their effect on one evaluation.

Overrides are few; they are applied as per-rule account masks and threshold scales.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.policy._config import RULES, PolicyConfig
from risklib.errors import AuthorityError, DataError

_EPS = 1e-9


def check_override(override: dict, config: PolicyConfig) -> None:
    """Refuse an override beyond the authority the spec gives its level.

    Parameters
    ----------
    override
        A row of ``frames.OVERRIDES`` as a dict.
    config
        Policy (its ``authority`` table and each rule's ``override_authority``).

    Raises
    ------
    AuthorityError
        Naming the field and value that exceed the authority.
    DataError
        For a malformed override (unknown rule or action, no expiry).
    """
    rule, action = override.get("rule"), override.get("action")
    level = override.get("authority_level")
    created, expires = override.get("created_at"), override.get("expires_at")
    if expires is None:
        raise DataError("expires_at=None: every override must expire")
    if created is None:
        raise DataError("created_at=None: needed to check the override's duration")
    if level is None or level not in config.authority:
        raise AuthorityError(f"authority_level={level!r}: must be 1-5")
    duration = (expires - created).total_seconds()
    if duration <= 0:
        raise DataError(f"expires_at={expires}: must be after created_at={created}")
    auth = config.authority[level]
    if action == "reset":
        if rule != "breaker":
            raise DataError(f"rule={rule!r}: action 'reset' applies to rule 'breaker' only")
        if level < config.breaker.reset_authority:
            raise AuthorityError(
                f"authority_level={level}: breaker reset needs >= {config.breaker.reset_authority}"
            )
        return
    if rule not in RULES:
        raise DataError(f"rule={rule!r}: unknown; known: {list(RULES)} or 'breaker'")
    need = config.ladder(rule).override_authority
    if level < need:
        raise AuthorityError(f"authority_level={level}: rule {rule!r} needs >= {need}")
    if action == "suspend":
        if auth.suspend_max_s <= 0:
            raise AuthorityError(f"authority_level={level} ({auth.role}): may not suspend a rule")
        if duration > auth.suspend_max_s:
            raise AuthorityError(
                f"expires_at={expires}: suspension of {duration:g}s exceeds {auth.suspend_max_s:g}s for "
                f"authority_level={level} ({auth.role})"
            )
    elif action == "adjust":
        scale = override.get("threshold_scale")
        if scale is None or not math.isfinite(scale) or scale <= 0:
            raise DataError(f"threshold_scale={scale!r}: must be > 0")
        if abs(scale - 1.0) > auth.max_threshold_change + _EPS:
            raise AuthorityError(
                f"threshold_scale={scale:g}: change {abs(scale - 1):.0%} exceeds {auth.max_threshold_change:.0%} for "
                f"authority_level={level} ({auth.role})"
            )
        if duration > auth.adjust_max_s:
            raise AuthorityError(f"expires_at={expires}: adjustment of {duration:g}s exceeds {auth.adjust_max_s:g}s")
    else:
        raise DataError(f"action={action!r}: must be 'suspend', 'adjust' or 'reset'")


def apply_overrides(now, overrides, acct: pl.Series, cfg, n):
    """Masks of suspended rules, threshold scales, manual resets, and audit rows of rejected overrides."""
    suspended = {r: np.zeros(n, bool) for r in RULES}
    scale: dict[str, np.ndarray | None] = {r: None for r in RULES}
    reset = np.zeros(n, bool)
    rejected: list[dict] = []
    if overrides is None or overrides.height == 0:
        return suspended, scale, reset, rejected
    ov = frames.conform(overrides, frames.OVERRIDES, "overrides")
    for row in ov.iter_rows(named=True):  # overrides are few: loop over them, not accounts
        if row["created_at"] is not None and now < row["created_at"]:
            continue
        if row["expires_at"] is not None and now >= row["expires_at"]:
            continue  # expired: no effect
        who = row["account_id"]
        mask = np.ones(n, bool) if who == "*" else (acct == who).to_numpy()
        try:
            check_override(row, cfg)
        except (AuthorityError, DataError) as exc:
            rejected.append({"account_id": who, "rule": row["rule"], "why": str(exc), "id": row["override_id"]})
            continue
        if row["action"] == "reset":
            reset |= mask
        elif row["action"] == "suspend":
            suspended[row["rule"]] |= mask
        else:
            cur = scale[row["rule"]] if scale[row["rule"]] is not None else np.ones(n)
            scale[row["rule"]] = np.where(mask, cur * row["threshold_scale"], cur)
    return suspended, scale, reset, rejected
