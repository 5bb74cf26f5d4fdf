"""``/api/alerts``: active incidents, history, acknowledgement."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from risklib.adapters.notifiers import incident_view, incidents_for_code, known_incidents, record_ack
from risklib.api._deps import match_token

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


class AckRequest(BaseModel):
    """Acknowledge by incident key or by the reply code a message carried."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    operator: str = Field(min_length=1, max_length=100)
    incident_key: str | None = None
    reply_code: str | None = Field(None, pattern=r"^[0-9]{4}[A-Za-z]$")

    @model_validator(mode="after")
    def _one_of(self) -> AckRequest:
        if (self.incident_key is None) == (self.reply_code is None):
            raise ValueError("give exactly one of incident_key or reply_code")
        return self


def _rows(frame) -> list[dict[str, Any]]:
    out = []
    for r in frame.to_dicts():
        out.append({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()})
    return out


@router.get("/active")
def active(request: Request, limit: int = Query(500, ge=1, le=10_000)) -> dict[str, Any]:
    """Unresolved incidents, highest level first, with acknowledgement and time-to-acknowledge (s)."""
    ctx = request.app.state.ctx
    with ctx.lock:
        df = incident_view(ctx.warehouse, active=True, limit=limit)
    return {"count": df.height, "incidents": _rows(df)}


@router.get("/history")
def history(
    request: Request, limit: int = Query(100, ge=1, le=10_000), since: datetime | None = None
) -> dict[str, Any]:
    """Incidents newest first (resolved included) with who acknowledged, when, how, and time-to-acknowledge (s)."""
    ctx = request.app.state.ctx
    with ctx.lock:
        df = incident_view(ctx.warehouse, active=False, limit=limit, since=since)
    return {"count": df.height, "incidents": _rows(df)}


@router.post("/acknowledge")
def acknowledge(request: Request, body: AckRequest, authorization: str | None = Header(None)) -> dict[str, Any]:
    """Record an acknowledgement (channel ``api``). It stops the paging; it never changes a trading mode."""
    ctx = request.app.state.ctx
    # with any token configured, the shared one or an operator's own is needed
    if (ctx.api_token or ctx.operator_tokens) and match_token(ctx, authorization) is None:
        raise HTTPException(status_code=401, detail="authorization: missing or wrong bearer token")
    with ctx.lock:
        if body.reply_code:
            keys = incidents_for_code(ctx.warehouse, body.reply_code)
            what = f"reply_code={body.reply_code.upper()!r}"
        else:
            keys = known_incidents(ctx.warehouse, [body.incident_key])
            what = f"incident_key={body.incident_key!r}"
        if not keys:
            raise HTTPException(status_code=404, detail=f"{what}: no open incident")
        at = ctx.clock.now()
        record_ack(ctx.warehouse, keys, at=at, channel="api", operator=body.operator,
                   reply_code=body.reply_code.upper() if body.reply_code else None,
                   source_ip=request.client.host if request.client else None)
    return {"acknowledged": keys, "operator": body.operator, "at": at.isoformat(), "channel": "api"}
