"""App factory: alert endpoints, Twilio webhooks, shared warehouse access."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from risklib.clock import Clock, SystemClock
from risklib.config import load_escalation_config
from risklib.core.escalation import EscalationConfig


class AppContext:
    """What every endpoint shares: warehouse (serialised by a lock), config, clock, secrets."""

    def __init__(self, warehouse: Any, config: EscalationConfig, clock: Clock, twilio_auth_token: str | None,
                 api_token: str | None, operator_tokens: tuple[tuple[str, str, int], ...] = ()) -> None:
        self.warehouse = warehouse
        self.config = config
        self.clock = clock
        self.twilio_auth_token = twilio_auth_token
        self.api_token = api_token
        self.operator_tokens = operator_tokens  # (token, operator name, authority level)
        self.lock = threading.Lock()  # one DuckDB connection: one statement at a time
        self.replies: dict[str, list[float]] = {}  # phone -> reply times (epoch s), for rate limiting
        self.replies_lock = threading.Lock()


def create_app(
    *,
    warehouse: Any | None = None,
    warehouse_factory: Callable[[], Any] | None = None,
    config: EscalationConfig | None = None,
    clock: Clock | None = None,
    twilio_auth_token: str | None = None,
    api_token: str | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the API.

    Parameters
    ----------
    warehouse, warehouse_factory
        A writer :class:`risklib.warehouse.Warehouse`, or a callable opening one
        (default: ``Warehouse.open()`` at the configured location).
    config
        Escalation config (rota, ack policy, public base URL for signature checks).
    clock
        Time source for acknowledgements and rejections (tests pass a fixed one).
    twilio_auth_token, api_token
        Default: from the environment / Prefect Secret blocks (``config.credentials``).
        Without a Twilio token every webhook is refused (fail closed).
    routers
        Further routers to include (other areas' endpoints).
    """
    from risklib.adapters.notifiers import load_credentials
    from risklib.api import _alerts, _webhooks

    cfg = config or load_escalation_config()
    if warehouse is None:
        if warehouse_factory is None:
            from risklib.warehouse import Warehouse

            warehouse_factory = Warehouse.open
        warehouse = warehouse_factory()
    creds = load_credentials(cfg) if cfg.credentials.operators or twilio_auth_token is None or api_token is None else None
    if creds is not None:
        if twilio_auth_token is None and creds.twilio_auth_token:
            twilio_auth_token = creds.twilio_auth_token.get()
        if api_token is None and creds.api_token:
            api_token = creds.api_token.get()
    operator_tokens = tuple((t.get(), name, level) for t, name, level in creds.operator_tokens) if creds else ()
    app = FastAPI(title="Risk pipeline control plane", version="0.1.0")
    app.state.ctx = AppContext(warehouse, cfg, clock or SystemClock(), twilio_auth_token, api_token, operator_tokens)
    app.include_router(_alerts.router)
    app.include_router(_webhooks.router)
    for r in routers:
        app.include_router(r)
    return app
