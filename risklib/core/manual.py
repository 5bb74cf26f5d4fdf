"""Emergency actions asked for by operators (``POST /api/emergency/*``), turned into cycle actions.

The broker lives in the pipeline's process, so the API only records a request
(``manual_action_requests``); the act stage of the next cycle merges
:func:`pending_manual_actions` with the policy's actions. Each request acts once:
its idempotency key is ``manual:<request_id>`` (``manual:<request_id>:<account>``
when a ``'*'`` request is expanded over accounts), and keys already executed
(those in ``emergency_actions``) are left out.

Pure: no I/O, no clock (``now`` is a parameter).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

import polars as pl

from risklib.core import frames
from risklib.core.gate import Reason

#: The actions an operator may ask for (the ``frames.ACTIONS`` vocabulary).
MANUAL_ACTIONS = ("REDUCE", "CLOSE", "CLOSE_ALL", "HALT_ENTRIES", "HALT_ALL", "RESUME")
#: Actions that cut positions and so need a fraction in (0, 1].
CUT_ACTIONS = ("REDUCE", "CLOSE", "CLOSE_ALL")
#: Lowest authority level (spec "Override Authority Levels", 1-5) that may ask for each action.
#: Protective actions (cut, close, halt) make the book safer, so every level may order them: the
#: spec requires "Emergency system availability: 100%" and names authority only for overriding
#: protection. RESUME lifts a halt, i.e. overrides protection: it needs the highest level (5).
MIN_AUTHORITY: dict[str, int] = {
    "REDUCE": 1, "CLOSE": 1, "CLOSE_ALL": 1, "HALT_ENTRIES": 1, "HALT_ALL": 1, "RESUME": 5,
}
#: Columns of a ``manual_action_requests`` row.
REQUESTS = {
    "request_id": pl.String,
    "account_id": pl.String,  # an account, or "*" for every account
    "action": pl.String,
    "fraction": pl.Float64,
    "operator": pl.String,
    "authority_level": pl.Int64,
    "reason": pl.String,
    "requested_at": frames.UTC_TS,
}


def check_manual_request(
    action: str, fraction: float, authority_level: int, operator: str, reason: str
) -> Reason | None:
    """Refuse a malformed or out-of-authority emergency request.

    Parameters
    ----------
    action
        One of :data:`MANUAL_ACTIONS`.
    fraction
        Share of each position to cut, in (0, 1] for cut actions (1.0 for ``CLOSE_ALL``);
        0 for halts and ``RESUME``.
    authority_level
        1 (Risk Manager) … 5 (Board).
    operator, reason
        Who asks and why; both required (recorded in the audit).

    Returns
    -------
    Reason | None
        ``INVALID_REQUEST`` or ``AUTHORITY`` with a message naming field and value, or None.
    """
    if action not in MANUAL_ACTIONS:
        return Reason("INVALID_REQUEST", f"action={action!r}: must be one of {list(MANUAL_ACTIONS)}")
    if not operator or not operator.strip():
        return Reason("INVALID_REQUEST", f"operator={operator!r}: required")
    if not reason or not reason.strip():
        return Reason("INVALID_REQUEST", f"reason={reason!r}: required")
    if not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        return Reason("INVALID_REQUEST", f"fraction={fraction!r}: must be a number")
    if action in CUT_ACTIONS:
        if not 0.0 < fraction <= 1.0:
            return Reason("INVALID_REQUEST", f"fraction={fraction!r}: {action} needs a fraction in (0, 1]")
        if action == "CLOSE_ALL" and fraction != 1.0:
            return Reason("INVALID_REQUEST", f"fraction={fraction!r}: CLOSE_ALL closes everything, fraction must be 1.0")
    elif fraction != 0.0:
        return Reason("INVALID_REQUEST", f"fraction={fraction!r}: {action} cuts nothing, fraction must be 0")
    if not isinstance(authority_level, int) or not 1 <= authority_level <= 5:
        return Reason("AUTHORITY", f"authority_level={authority_level!r}: must be 1-5")
    need = MIN_AUTHORITY[action]
    if authority_level < need:
        return Reason("AUTHORITY", f"authority_level={authority_level}: {action} needs >= {need}")
    return None


def pending_manual_actions(
    requests: pl.DataFrame,
    executed_keys: set[str] | Iterable[str],
    now: datetime,
    *,
    accounts: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Operator requests not executed yet, as ``frames.ACTIONS`` rows for the act stage.

    Parameters
    ----------
    requests
        ``manual_action_requests`` rows (:data:`REQUESTS` columns; extra columns ignored).
    executed_keys
        Idempotency keys already acted on (``emergency_actions.idempotency_key``).
    now
        Evaluation time (timezone-aware); requests stamped after it are left for later,
        and the rows' ``ts`` is ``now``.
    accounts
        The book's accounts. When given, a ``'*'`` request becomes one row per account
        (key ``manual:<request_id>:<account>``); otherwise it stays one row with
        ``account_id='*'`` (key ``manual:<request_id>``) for the act stage to expand.

    Returns
    -------
    pl.DataFrame
        ``frames.ACTIONS``: ``idempotency_key`` and ``incident_key`` ``manual:<request_id>[...]``,
        ``reason`` naming the operator, authority and why; oldest request first. Rows whose
        key is in ``executed_keys`` (or whose request key is) are left out, so each request acts once.
    """
    if now.tzinfo is None:
        raise ValueError(f"now={now!r}: must be timezone-aware")
    if requests.height == 0:
        return frames.empty(frames.ACTIONS)
    executed = executed_keys if isinstance(executed_keys, (set, frozenset)) else set(executed_keys)
    req = frames.conform(requests, REQUESTS, "manual_action_requests")
    # Requests acted on in full (their own key executed) go first, one look-up each: the executed
    # keys grow by one per account with every request for all accounts, and become a column only
    # while some request is still pending.
    left = [f"manual:{rid}" not in executed for rid in req["request_id"].to_list()]
    req = req.filter(pl.Series(left, dtype=pl.Boolean))
    if req.height == 0:
        return frames.empty(frames.ACTIONS)
    done = pl.Series("k", list(executed), dtype=pl.String)
    base = (
        req.filter(pl.col("requested_at") <= frames.utc_lit(now))
        .unique("request_id", keep="first", maintain_order=True)  # a request recorded twice acts once
        .with_columns(
            (pl.lit("manual:") + pl.col("request_id")).alias("incident_key"),
            pl.concat_str(
                [
                    pl.lit("manual "), pl.col("action"), pl.lit(" by "), pl.col("operator"),
                    pl.lit(" (authority level "), pl.col("authority_level").cast(pl.String), pl.lit("): "),
                    pl.col("reason"),
                ]
            ).alias("reason"),
        )
    )
    if accounts is not None:
        book = pl.DataFrame({"_acct": list(accounts)}, schema={"_acct": pl.String})
        star = base.filter(pl.col("account_id") == "*").join(book, how="cross").with_columns(
            pl.col("_acct").alias("account_id"),
            (pl.col("incident_key") + pl.lit(":") + pl.col("_acct")).alias("idempotency_key"),
        ).drop("_acct")
        one = base.filter(pl.col("account_id") != "*").with_columns(pl.col("incident_key").alias("idempotency_key"))
        out = pl.concat([one.select(star.columns), star]) if star.height else one
    else:
        out = base.with_columns(pl.col("incident_key").alias("idempotency_key"))
    out = (
        out.filter(~pl.col("idempotency_key").is_in(done.implode()))
        .sort("requested_at", "request_id", maintain_order=True)
        .with_columns(frames.utc_lit(now).alias("ts"))
    )
    return frames.conform(out, frames.ACTIONS, "manual actions")
