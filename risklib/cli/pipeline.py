"""`riskctl run`, `riskctl serve` and `riskctl server stop`: the pipeline's commands."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer


class Scenario(str, Enum):
    calm = "calm"
    vol_spike = "vol-spike"
    flash_crash = "flash-crash"
    correlation_breakdown = "correlation-breakdown"
    liquidity_gap = "liquidity-gap"
    feed_disconnect = "feed-disconnect"


def _ensure_api(ephemeral: bool) -> str | None:
    """Point Prefect at a server: the configured one, else a local one we start (UI), unless ephemeral."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if ephemeral:
        return None
    from flows import server

    typer.echo(f"Prefect UI: {server.ui_url()}  (starting the local server in the background; it stays up, `riskctl server stop` stops it)")
    url, started = server.start()
    typer.echo(f"Prefect API {'started' if started else 'already running'} at {url}")
    os.environ["PREFECT_API_URL"] = url
    return url


def run(
    minutes: float = typer.Option(90.0, help="Length of the session in simulated market minutes."),
    cycles: int | None = typer.Option(None, help="Run exactly this many cycles instead of --minutes."),
    scenario: Scenario = typer.Option(Scenario.flash_crash, help="Scripted market scenario."),
    accounts: int = typer.Option(200, min=1, help="Number of simulated accounts."),
    speed: float = typer.Option(60.0, min=0.1, help="Simulated seconds per wall-clock second."),
    seed: int = typer.Option(7, help="Random seed: the same seed records the same decisions."),
    warehouse: Path | None = typer.Option(None, help="Warehouse directory (default: warehouse/data or $RISK_WAREHOUSE)."),
    config: Path | None = typer.Option(None, help="Risk config TOML (default: the shipped spec values)."),
    ephemeral: bool = typer.Option(False, help="Run without the UI server (for scripts)."),
) -> None:
    """Run a live simulated trading session through the whole pipeline."""
    api = _ensure_api(ephemeral)
    from risklib.cycle.run import run_session

    report = run_session(
        minutes=None if cycles else minutes,
        cycles=cycles,
        scenario=scenario.value,
        accounts=accounts,
        speed=speed,
        seed=seed,
        warehouse=warehouse,
        config=config,
        echo=typer.echo,
    )
    if api:
        typer.echo(f"Watch and browse the runs: {api.removesuffix('/api')}  (dashboard artifact key: risk-dashboard)")
    raise typer.Exit(0 if report.failed_cycles == 0 else 1)


def serve(
    config: Path | None = typer.Option(None, help="Risk config TOML."),
) -> None:
    """Start the local Prefect server if needed and serve the scheduled deployments (monitor, retention)."""
    _ensure_api(ephemeral=False)
    from flows.deployments import serve_all

    serve_all(config=config)


server_app = typer.Typer(help="The local Prefect server.", no_args_is_help=True)


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server (UI at http://127.0.0.1:4200) unless one is running."""
    from flows import server

    url, started = server.start()
    typer.echo(f"Prefect server {'started' if started else 'already running'}: {server.ui_url()}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server started by `riskctl run` or `riskctl serve`."""
    from flows import server

    typer.echo("stopped" if server.stop() else "no server started by this project is running")


def register(app: typer.Typer) -> None:
    """Add the pipeline's commands to ``app``."""
    app.command("run")(run)
    app.command("serve")(serve)
    app.add_typer(server_app, name="server")
