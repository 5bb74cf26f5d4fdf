"""The whole control plane: the alert endpoints plus risk, emergency, config and gate routers.

:func:`build_app` is what ``riskctl api`` serves; :func:`control_routers` are the
routers it adds to :func:`risklib.api.create_app`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request

from risklib.api._deps import clean, effective_config, newest_cycle

health_router = APIRouter(prefix="/api", tags=["health"])


@health_router.get("/health")
def health(request: Request) -> dict[str, Any]:
    """Liveness of the API and of the pipeline behind it.

    ``status`` is ``ok`` when the warehouse answers and the pipeline's heartbeat is
    fresh, ``stale`` when the heartbeat is old or absent (the gate then refuses new risk),
    ``error`` when the warehouse cannot be read.
    """
    ctx = request.app.state.ctx
    try:
        cfg, _ = effective_config(request)
        with ctx.lock:
            cyc = newest_cycle(ctx.warehouse, ctx.clock.now(), cfg)
    except Exception as exc:  # noqa: BLE001 - health reports, never raises
        return {"status": "error", "api": "ok", "warehouse": f"{type(exc).__name__}: {exc}"}
    return clean({"status": "stale" if cyc.stale else "ok", "api": "ok", "warehouse": "ok", **cyc.describe()})


def control_routers() -> list[APIRouter]:
    """Every router of the control plane besides the alert endpoints ``create_app`` includes itself."""
    from risklib.api import _config_api, _emergency, _gate, _risk

    return [health_router, _risk.router, _config_api.router, _emergency.router, _emergency.override_router,
            _gate.router]


def build_app(*, risk_config: Any = None, **kwargs: Any) -> FastAPI:
    """:func:`risklib.api.create_app` with every control-plane router.

    Parameters
    ----------
    risk_config
        The :class:`~risklib.config.RiskConfig` the pipeline runs with (default: the
        shipped defaults); recorded threshold changes are applied on top of it.
    **kwargs
        Passed to ``create_app`` (warehouse, clock, api_token, ...).
    """
    from risklib.api import create_app

    routers = list(kwargs.pop("routers", ())) + control_routers()
    if risk_config is not None and "config" not in kwargs:
        kwargs["config"] = risk_config.escalation
    app = create_app(routers=routers, **kwargs)
    app.state.risk_config = risk_config
    return app
