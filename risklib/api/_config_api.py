"""``/api/risk/thresholds`` and ``/api/risk/config``: the settings in force, and audited changes.

The settings in force are the config the API started with plus every change
recorded in ``threshold_changes`` (:func:`risklib.config_changes.apply_threshold_changes`,
which the pipeline also applies each cycle). A change is accepted only if the whole
config still validates with it (422 naming key and value otherwise) and the
operator's authority level allows its size (403); then it is appended with an
audit entry. Nothing is written on refusal: all changes of one request land together or not at all.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from risklib.api._deps import (
    Caller,
    authorize,
    base_config,
    clean,
    effective_config,
    effective_config_locked,
    require_token,
    rows,
)

router = APIRouter(prefix="/api/risk", tags=["config"])


class Change(BaseModel):
    """One change: dotted key (``policy.drawdown.levels[1].threshold``), new JSON value, who, why, authority."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str = Field(min_length=1, max_length=300)
    value: JsonValue
    operator: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=2000)
    # Spec "Override Authority Levels": Level 1 Risk Manager may adjust thresholds by up to 20 %.
    # Required (not defaulted) so every change states the authority it was made under.
    authority_level: int = Field(ge=1, le=5)


def _thresholds(cfg: Any) -> dict[str, Any]:
    from risklib.core.policy import RULES

    pol = cfg.policy
    ladders = {}
    for rule in RULES:
        lad = pol.ladder(rule)
        ladders[rule] = {
            "metric": lad.metric, "unit": lad.unit, "basis": lad.basis, "inclusive": lad.inclusive,
            "override_authority": lad.override_authority,
            "levels": [
                {"key": f"policy.{rule}.levels[{i}].threshold", "name": s.name, "threshold": s.threshold,
                 "alert_level": s.alert_level, "trading_mode": s.trading_mode.value, "action": s.action.value,
                 "fraction": s.fraction, "sizing_multiplier": s.sizing_multiplier}
                for i, s in enumerate(lad.levels)
            ],
        }
    return {"ladders": ladders, "gate": pol.gate.model_dump(mode="json"), "groups": pol.groups,
            "authority": {str(k): v.model_dump(mode="json") for k, v in pol.authority.items()}}


@router.get("/thresholds")
def get_thresholds(request: Request) -> dict[str, Any]:
    """Effective risk thresholds (defaults or the loaded file, plus recorded changes): every ladder, gate limits."""
    cfg, changes = effective_config(request)
    return clean({"fingerprint": cfg.fingerprint(), "changes_applied": changes.height, **_thresholds(cfg)})


@router.get("/config")
def get_config(request: Request) -> dict[str, Any]:
    """The whole effective risk configuration (every section), its fingerprint, and the change log."""
    cfg, changes = effective_config(request)
    return clean({"fingerprint": cfg.fingerprint(), "base_fingerprint": base_config(request).fingerprint(),
                  "config": cfg.model_dump(mode="json"), "changes": rows(changes)})


def _apply(request: Request, caller: Caller, body: Change | list[Change], *, thresholds_only: bool) -> dict[str, Any]:
    from risklib.config_changes import apply_changes, check_change_authority, format_key, get_value, parse_key
    from risklib.errors import AuthorityError, ConfigError

    changes = body if isinstance(body, list) else [body]
    if not changes:
        raise HTTPException(status_code=422, detail="changes: empty list")
    for c in changes:
        authorize(request, caller, c.operator, c.authority_level)
    ctx = request.app.state.ctx
    with ctx.lock:  # read, check and append under one lock: no change lands on a stale base
        request.app.state.effective_cache = None
        cfg, _ = effective_config_locked(request)
        doc = cfg.model_dump(mode="json")
        out_rows = []
        try:
            for c in changes:
                path = parse_key(c.key)
                if thresholds_only and path[0] != "policy":
                    raise ConfigError(f"key={c.key!r}: /api/risk/thresholds changes policy settings only; "
                                      "use /api/risk/config")
                out_rows.append((format_key(path), get_value(doc, c.key), c))
            new_cfg = apply_changes(cfg, [(c.key, c.value) for c in changes])
        except ConfigError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        try:
            for key, old, c in out_rows:
                check_change_authority(key, old, c.value, c.authority_level, cfg.policy)
        except AuthorityError as exc:
            raise HTTPException(status_code=403, detail=f"change refused: {exc}") from None
        now = ctx.clock.now()
        frame = pl.DataFrame(
            {
                "key": [k for k, _, _ in out_rows],
                "old_value": [json.dumps(o) for _, o, _ in out_rows],
                "new_value": [json.dumps(c.value) for _, _, c in out_rows],
                "operator": [c.operator for _, _, c in out_rows],
                "reason": [c.reason for _, _, c in out_rows],
                "at": [now] * len(out_rows),
                "authority_level": [c.authority_level for _, _, c in out_rows],
            },
            schema_overrides={"old_value": pl.String, "new_value": pl.String, "authority_level": pl.Int64},
        )
        operators = sorted({c.operator for c in changes})
        ctx.warehouse.append("threshold_changes", frame, actor=",".join(operators), action="config.change",
                             subject=",".join(k for k, _, _ in out_rows))
        request.app.state.effective_cache = None
    return clean({
        "applied": [{"key": k, "old_value": o, "new_value": c.value, "operator": c.operator,
                     "authority_level": c.authority_level} for k, o, c in out_rows],
        "at": now,
        "fingerprint": new_cfg.fingerprint(),
        "takes_effect": "the pipeline applies recorded changes at its next cycle",
    })


@router.put("/thresholds")
def put_thresholds(request: Request, body: Change | list[Change], caller: Caller = Depends(require_token)) -> dict[str, Any]:
    """Change policy thresholds (keys under ``policy.``); one change or a list, all or nothing."""
    return _apply(request, caller, body, thresholds_only=True)


@router.put("/config")
def put_config(request: Request, body: Change | list[Change], caller: Caller = Depends(require_token)) -> dict[str, Any]:
    """Change any setting of the risk config; one change or a list, all or nothing."""
    return _apply(request, caller, body, thresholds_only=False)
