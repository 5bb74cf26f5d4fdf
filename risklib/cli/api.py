"""`riskctl api`: serve the control plane (risk status, alerts, emergency controls, config, gate)."""

from __future__ import annotations

from typing import Optional

import typer


def api(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (default: this machine only)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    warehouse: Optional[str] = typer.Option(
        None, "--warehouse", "-w", help="Warehouse folder or catalog URI (default: $RISK_WAREHOUSE or config)."
    ),
    config: Optional[str] = typer.Option(
        None, "--config", "-c", help="Risk config TOML the pipeline runs with (default: shipped defaults)."
    ),
    open_writes: bool = typer.Option(
        False, "--open-writes",
        help="Allow write endpoints without a bearer token (local single-user use only). "
             "Without it, without $RISK_API_TOKEN and without operators' own tokens every write is refused.",
    ),
) -> None:
    """Serve the REST API with uvicorn until interrupted."""
    from risklib.config import load_config
    from risklib.errors import ConfigError, WarehouseError

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        from risklib.warehouse import Warehouse

        wh = Warehouse.open(warehouse, config=cfg.warehouse)
    except WarehouseError as exc:
        typer.echo(f"error: --warehouse={warehouse!r}: {exc}", err=True)
        raise typer.Exit(2) from None
    import uvicorn

    from risklib.api._control import build_app

    app = build_app(risk_config=cfg, warehouse=wh)  # token from the environment or a Secret block
    ctx = app.state.ctx
    if ctx.api_token is None and open_writes:
        ctx.api_token = ""  # explicitly open; a configured token always wins
    with_token = {name for _, name, _ in ctx.operator_tokens}
    for op in cfg.escalation.credentials.operators:
        if op.name in with_token:
            typer.echo(f"operator {op.name!r}: own token, authority level up to {op.authority_level}", err=True)
        else:
            typer.echo(f"note: operator {op.name!r}: ${op.token_env} is not set: no writes as {op.name!r}", err=True)
    if ctx.api_token is None and not ctx.operator_tokens:
        typer.echo("note: no API token configured: write endpoints refuse every request "
                   f"(set ${cfg.escalation.credentials.api_token_env} or pass --open-writes)", err=True)
    from risklib.gc_pauses import freeze_warm_heap

    freeze_warm_heap()  # no full-collection pause of the whole app in the middle of a gate check
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        wh.close()


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.command("api")(api)
