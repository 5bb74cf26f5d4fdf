"""``/api/emergency`` controls and ``POST /api/alerts/override``.

Emergency controls are requests: the broker lives in the pipeline's process, so the
API records them (``manual_action_requests``, with an audit entry) and answers 202;
the running pipeline executes each once at its next cycle
(:func:`risklib.core.manual.pending_manual_actions`). Overrides are written to the
``overrides`` table after the policy's authority rules accept them; every override
expires.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Literal

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from risklib.api._deps import Caller, authorize, clean, effective_config, newest_cycle, require_token, rows
from risklib.core.manual import REQUESTS, check_manual_request, pending_manual_actions

router = APIRouter(prefix="/api/emergency", tags=["emergency"])
override_router = APIRouter(prefix="/api/alerts", tags=["alerts"])

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class _Request(BaseModel):
    """Who asks, with what authority, for which account, and why (all recorded)."""

    model_config = _FROZEN
    account_id: str = Field(min_length=1, max_length=100)  # an account, or "*" for every account
    operator: str = Field(min_length=1, max_length=100)
    authority_level: int = Field(ge=1, le=5)  # spec "Override Authority Levels": 1 Risk Manager .. 5 Board
    reason: str = Field(min_length=1, max_length=2000)


class ReduceRequest(_Request):
    fraction: float = Field(gt=0.0, le=1.0)  # share of each position to cut


class HaltRequest(_Request):
    # Default: halt everything (the protective reading of "Emergency trading halt");
    # "entries" blocks new entries and increases only.
    scope: Literal["all", "entries"] = "all"


class CloseRequest(_Request):
    fraction: float = Field(1.0, gt=0.0, le=1.0)  # 1.0 closes every position (CLOSE_ALL)


class ResumeRequest(_Request):
    pass


def _submit(request: Request, caller: Caller, body: _Request, action: str, fraction: float) -> JSONResponse:
    authorize(request, caller, body.operator, body.authority_level)
    why = check_manual_request(action, fraction, body.authority_level, body.operator, body.reason)
    if why is not None:
        raise HTTPException(status_code=403 if why.code == "AUTHORITY" else 422, detail=why.message)
    cfg, _ = effective_config(request)
    ctx = request.app.state.ctx
    request_id = uuid.uuid4().hex
    with ctx.lock:
        now = ctx.clock.now()
        row = pl.DataFrame(
            {
                "request_id": [request_id], "account_id": [body.account_id], "action": [action],
                "fraction": [float(fraction)], "operator": [body.operator], "authority_level": [body.authority_level],
                "reason": [body.reason], "requested_at": [now],
            },
            schema=REQUESTS,
        )
        ctx.warehouse.append("manual_action_requests", row, actor=body.operator, action=f"emergency.{action.lower()}",
                             subject=body.account_id)
        cyc = newest_cycle(ctx.warehouse, now, cfg)
    out: dict[str, Any] = {
        "request_id": request_id,
        "idempotency_key": f"manual:{request_id}",
        "action": action,
        "account_id": body.account_id,
        "fraction": fraction,
        "requested_at": now,
        "status": "accepted",
        "executes": "at the pipeline's next cycle, once",
        "pipeline": cyc.describe(),
    }
    if cyc.stale:
        out["warning"] = ("pipeline heartbeat is stale: the request waits until the pipeline runs again; "
                          "the pre-trade gate refuses new risk meanwhile")
    return JSONResponse(status_code=202, content=clean(out))


@router.post("/reduce-positions", status_code=202)
def reduce_positions(request: Request, body: ReduceRequest, caller: Caller = Depends(require_token)) -> JSONResponse:
    """Cut every position of the account(s) by ``fraction`` at the next cycle (action REDUCE)."""
    return _submit(request, caller, body, "REDUCE", body.fraction)


@router.post("/halt-trading", status_code=202)
def halt_trading(request: Request, body: HaltRequest, caller: Caller = Depends(require_token)) -> JSONResponse:
    """Halt trading (HALT_ALL) or new entries only (HALT_ENTRIES) at the next cycle."""
    return _submit(request, caller, body, "HALT_ALL" if body.scope == "all" else "HALT_ENTRIES", 0.0)


@router.post("/close-positions", status_code=202)
def close_positions(request: Request, body: CloseRequest, caller: Caller = Depends(require_token)) -> JSONResponse:
    """Close positions at the next cycle: all of them (CLOSE_ALL) or ``fraction`` of each (CLOSE)."""
    return _submit(request, caller, body, "CLOSE_ALL" if body.fraction == 1.0 else "CLOSE", body.fraction)


@router.post("/resume-trading", status_code=202)
def resume_trading(request: Request, body: ResumeRequest, caller: Caller = Depends(require_token)) -> JSONResponse:
    """Lift a manual halt (RESUME). It overrides protection, so it needs the highest authority level."""
    return _submit(request, caller, body, "RESUME", 0.0)


@router.get("/status")
def emergency_status(request: Request, limit: int = Query(50, ge=1, le=10_000)) -> dict[str, Any]:
    """Emergency system status: heartbeat, accounts not ACTIVE, open breakers, recent emergency
    actions, and operator requests still waiting for the pipeline."""
    cfg, _ = effective_config(request)
    ctx = request.app.state.ctx
    with ctx.lock:
        now = ctx.clock.now()
        cyc = newest_cycle(ctx.warehouse, now, cfg)
        state = (
            ctx.warehouse.query(
                "SELECT account_id, trading_mode, breaker_state, alert_level, risk_level FROM risk_state "
                "WHERE cycle_id = ? ORDER BY account_id", [cyc.cycle_id])
            if cyc.cycle_id is not None else pl.DataFrame()
        )
        actions = ctx.warehouse.query(
            'SELECT "timestamp", account_id, action_taken, fraction, trigger_type, trigger_value, manual_override, '
            "operator_id, status, reason, idempotency_key FROM emergency_actions "
            'ORDER BY "timestamp" DESC, idempotency_key LIMIT ?', [limit])
        requests = ctx.warehouse.query("SELECT * FROM manual_action_requests ORDER BY requested_at")
        executed = ctx.warehouse.query(
            "SELECT DISTINCT idempotency_key FROM emergency_actions WHERE idempotency_key LIKE ?", ["manual:%"])
    done = set(executed["idempotency_key"].to_list())
    done |= {k.rsplit(":", 1)[0] for k in done if k.count(":") >= 2}  # an expanded '*' request has started
    pending = pending_manual_actions(requests, done, now)
    not_active = state.filter(pl.col("trading_mode") != "ACTIVE") if state.height else state
    open_breakers = state.filter(pl.col("breaker_state") != "CLOSED") if state.height else state
    if cyc.stale:
        system = "STALE"
    elif state.height and (state["trading_mode"].is_in(["HALTED", "FLATTEN"]).any()
                           or state["breaker_state"].eq("OPEN").any()):
        system = "EMERGENCY"
    elif not_active.height or pending.height:
        system = "RESTRICTED"
    else:
        system = "NORMAL"
    return clean({
        "system": system,
        **cyc.describe(),
        "accounts": state.height,
        "accounts_not_active": rows(not_active),
        "breakers_not_closed": rows(open_breakers),
        "pending_requests": rows(pending),
        "recent_actions": rows(actions),
    })


# --- overrides -----------------------------------------------------------------------------------


class OverrideRequest(BaseModel):
    """A manual override with the spec's documentation requirements.

    ``duration_s`` is required by the policy (every override expires); it is optional
    here only so a missing expiry is refused by the same rule, with its reason, as 403.
    """

    model_config = _FROZEN
    rule: str = Field(min_length=1)  # a ladder name, or "breaker" with action "reset"
    action: Literal["suspend", "adjust", "reset"]
    account_id: str = Field("*", min_length=1)  # "*" = the whole book
    threshold_scale: float | None = Field(None, gt=0.0)  # adjust: thresholds x this
    duration_s: float | None = Field(None, gt=0.0)  # spec "Timeline: expected duration"
    justification: str = Field(min_length=1, max_length=4000)  # spec "Justification"
    risk_assessment: str = Field(min_length=1, max_length=4000)  # spec "Risk Assessment"
    recovery_plan: str = Field(min_length=1, max_length=4000)  # spec "Recovery Plan"
    operator: str = Field(min_length=1, max_length=100)
    authority_level: int  # checked by the policy's authority table (403 when out of range)


@override_router.post("/override", status_code=201)
def create_override(request: Request, body: OverrideRequest, caller: Caller = Depends(require_token)) -> JSONResponse:
    """Record a manual override after the policy's authority rules accept it (403 with the reason if not)."""
    from risklib.core.policy import check_override
    from risklib.errors import AuthorityError, DataError

    authorize(request, caller, body.operator, body.authority_level)
    cfg, _ = effective_config(request)
    ctx = request.app.state.ctx
    now = ctx.clock.now()
    expires = now + timedelta(seconds=body.duration_s) if body.duration_s is not None else None
    override_id = uuid.uuid4().hex
    candidate = {
        "override_id": override_id, "account_id": body.account_id, "rule": body.rule, "action": body.action,
        "threshold_scale": body.threshold_scale, "authority_level": body.authority_level,
        "operator_id": body.operator, "created_at": now, "expires_at": expires,
    }
    try:
        check_override(candidate, cfg.policy)
    except (AuthorityError, DataError) as exc:
        raise HTTPException(status_code=403, detail=f"override refused: {exc}") from None
    row = pl.DataFrame(
        {
            "override_id": [override_id],
            "account_id": [None if body.account_id == "*" else body.account_id],  # NULL = whole book (0002)
            "rule": [body.rule], "action": [body.action],
            "new_value": [None if body.threshold_scale is None else repr(float(body.threshold_scale))],
            "justification": [body.justification], "risk_assessment": [body.risk_assessment],
            "duration_s": [float(body.duration_s)], "recovery_plan": [body.recovery_plan],
            "operator": [body.operator], "authority_level": [body.authority_level],
            "created_at": [now], "expires_at": [expires],
        },
        schema_overrides={"account_id": pl.String, "new_value": pl.String},
    )
    with ctx.lock:
        ctx.warehouse.append("overrides", row, actor=body.operator, action="override.create", subject=override_id)
    return JSONResponse(status_code=201, content=clean({
        "override_id": override_id, "rule": body.rule, "action": body.action, "account_id": body.account_id,
        "threshold_scale": body.threshold_scale, "authority_level": body.authority_level,
        "role": cfg.policy.authority[body.authority_level].role, "created_at": now, "expires_at": expires,
        "operator": body.operator,
    }))
