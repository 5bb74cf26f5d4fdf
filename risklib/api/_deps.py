"""What the risk, emergency, config and gate endpoints share: auth, config in force, newest cycle."""

from __future__ import annotations

import hmac
import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import polars as pl
from fastapi import Header, HTTPException, Request

#: Warehouse columns back to the producers' (frames.ACCOUNT_METRICS) names.
METRIC_NAMES = {
    "portfolio_drawdown": "drawdown",
    "portfolio_var_95": "var_95",
    "portfolio_var_99": "var_99",
    "volatility_regime": "regime",
}


@dataclass(frozen=True)
class Caller:
    """Who a write endpoint's token says is calling."""

    operator: str | None = None  # an operator's own token: their name; the shared token or an open API: None
    authority_level: int | None = None  # the highest level that operator holds


def match_token(ctx: Any, authorization: str | None) -> Caller | None:
    """The caller a bearer token names: an operator, the shared token (``Caller()``), or None (no match)."""
    given = (authorization or "").removeprefix("Bearer ").strip().encode()
    for token, name, level in ctx.operator_tokens:
        if hmac.compare_digest(given, token.encode()):
            return Caller(name, level)
    if ctx.api_token and hmac.compare_digest(given, ctx.api_token.encode()):
        return Caller()
    return None


def require_token(request: Request, authorization: str | None = Header(None)) -> Caller:
    """Bearer-token check for every write endpoint of the control plane; returns the caller.

    Stricter than the acknowledgement endpoint (an ack only stops paging; these
    endpoints cut positions, halt trading, change thresholds). An operator's own
    token (``[escalation.credentials] operators``) names the caller. Otherwise,
    with a shared token configured the header must match; with ``api_token=""``
    (explicitly open, for a local single-user API and tests) anyone may write;
    with NO token configured (``None``: none given and none in the environment or
    Secret blocks) every write is refused. Fail closed.
    """
    ctx = request.app.state.ctx
    caller = match_token(ctx, authorization)
    if caller is not None:
        return caller
    if ctx.api_token is None and not ctx.operator_tokens:
        raise HTTPException(status_code=401, detail="api_token: none configured; write endpoints are refused "
                                                    "(set RISK_API_TOKEN or a Secret block)")
    if ctx.api_token == "":
        return Caller()
    raise HTTPException(status_code=401, detail="authorization: missing or wrong bearer token")


def authorize(request: Request, caller: Caller, operator: str, authority_level: int) -> None:
    """The stated operator and authority level must be the token's (403 otherwise).

    With operators configured, a write that states an authority level needs an
    operator's own token: a shared token could claim any level.
    """
    if caller.operator is None:
        if request.app.state.ctx.operator_tokens:
            raise HTTPException(status_code=403, detail="authorization: this write states an authority level; "
                                                        "it needs the operator's own token, not the shared one")
        return
    if operator != caller.operator:
        raise HTTPException(status_code=403, detail=f"operator={operator!r}: the token is {caller.operator!r}'s")
    if authority_level > (caller.authority_level or 0):
        raise HTTPException(status_code=403, detail=f"authority_level={authority_level}: above "
                                                    f"{caller.operator!r}'s level {caller.authority_level}")


def base_config(request: Request) -> Any:
    """The config the API started with (``app.state.risk_config``; default the shipped defaults)."""
    cfg = getattr(request.app.state, "risk_config", None)
    if cfg is None:
        from risklib.config import load_config

        cfg = request.app.state.risk_config = load_config()
    return cfg


def threshold_change_rows(wh: Any) -> pl.DataFrame:
    """Every recorded threshold change, oldest first (caller holds the lock)."""
    return wh.query('SELECT "key", old_value, new_value, operator, reason, "at", authority_level '
                    'FROM threshold_changes ORDER BY "at", "key"')


def effective_config(request: Request) -> tuple[Any, pl.DataFrame]:
    """The config in force: the base config plus every recorded change; and the changes."""
    from risklib.config_changes import apply_threshold_changes

    ctx = request.app.state.ctx
    with ctx.lock:
        changes = threshold_change_rows(ctx.warehouse)
    cache = getattr(request.app.state, "effective_cache", None)
    sig = (changes.height, str(changes["at"].max()) if changes.height else "")
    if cache is not None and cache[0] == sig:
        return cache[1], changes
    cfg = apply_threshold_changes(base_config(request), changes)
    request.app.state.effective_cache = (sig, cfg)
    return cfg, changes


def effective_config_locked(request: Request) -> tuple[Any, pl.DataFrame]:
    """:func:`effective_config` for a caller already holding the warehouse lock (no cache)."""
    from risklib.config_changes import apply_threshold_changes

    changes = threshold_change_rows(request.app.state.ctx.warehouse)
    return apply_threshold_changes(base_config(request), changes), changes


@dataclass(frozen=True)
class Cycle:
    """The newest completed cycle and how old the pipeline's heartbeat is at the API's ``now``."""

    cycle_id: str | None
    finished_at: datetime | None
    next_interval_s: float | None
    now: datetime
    heartbeat_age_s: float | None  # None: no cycle ever completed
    max_age_s: float

    @property
    def stale(self) -> bool:
        """True without any completed cycle, or when the heartbeat is older than allowed."""
        return self.heartbeat_age_s is None or not self.heartbeat_age_s <= self.max_age_s

    def describe(self) -> dict[str, Any]:
        return {
            "cycle_id": self.cycle_id,
            "as_of": self.finished_at,
            "now": self.now,
            "heartbeat_age_s": self.heartbeat_age_s,
            "max_heartbeat_age_s": self.max_age_s,
            "stale": self.stale,
        }


def max_heartbeat_age_s(config: Any, next_interval_s: float | None) -> float:
    """The oldest heartbeat still read as alive (s): the smallest of the monitor's and the gate's limits.

    The gate's cadence rule (``factor * next interval + grace``) tightens it when the
    policy asked for fast cycles; the smallest bound is the protective reading.
    """
    g = config.policy.gate
    bound = min(config.monitor.heartbeat_max_age_s, g.max_state_age_s)
    if next_interval_s is not None and math.isfinite(next_interval_s):
        bound = min(bound, g.cadence_age_factor * next_interval_s + g.cadence_age_grace_s)
    return float(bound)


def newest_cycle(wh: Any, now: datetime, config: Any) -> Cycle:
    """The newest completed cycle (caller holds the lock)."""
    row = wh.query(
        "SELECT cycle_id, finished_at, next_interval_s FROM cycle_runs WHERE status = ? "
        "ORDER BY finished_at DESC, cycle_id DESC LIMIT 1",
        ["completed"],
    )
    if row.height == 0:
        return Cycle(None, None, None, now, None, max_heartbeat_age_s(config, None))
    finished = row["finished_at"][0]
    nxt = row["next_interval_s"][0]
    return Cycle(row["cycle_id"][0], finished, nxt, now, (now - finished).total_seconds(),
                 max_heartbeat_age_s(config, nxt))


def no_cycle() -> HTTPException:
    return HTTPException(status_code=503, detail="status=NO_DATA: no completed cycle in the warehouse yet; "
                                                 "the pipeline has not published any risk state")


def clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, datetimes ISO strings, nested containers walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-safe records."""
    return clean(frame.to_dicts())


def unpack_state(state: pl.DataFrame) -> pl.DataFrame:
    """``risk_state`` rows with the policy's bookkeeping (``state_json``) unpacked into columns."""
    if state.height == 0 or "state_json" not in state.columns or state["state_json"].null_count() == state.height:
        return state.drop("state_json", strict=False)
    extra = pl.DataFrame([json.loads(s) if s else {} for s in state["state_json"].to_list()])
    extra = extra.drop([c for c in extra.columns if c in state.columns])
    return pl.concat([state.drop("state_json"), extra], how="horizontal") if extra.width else state.drop("state_json")
