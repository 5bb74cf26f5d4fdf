"""`riskctl alerts`: acknowledge, list and drain the escalation outbox."""

from __future__ import annotations

from typing import Optional

import typer

alerts_app = typer.Typer(help="Incidents, acknowledgements and the notification outbox.", no_args_is_help=True)

_WAREHOUSE = typer.Option(None, "--warehouse", "-w", help="Warehouse folder or catalog URI (default: $RISK_WAREHOUSE or config).")
_CONFIG = typer.Option(None, "--config", "-c", help="TOML file with an [escalation] section (default: shipped defaults).")


def _load(config: Optional[str]):
    from risklib.config import load_escalation_config
    from risklib.errors import ConfigError

    try:
        return load_escalation_config(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _open(warehouse: Optional[str], *, read_only: bool):
    from risklib.errors import WarehouseError
    from risklib.warehouse import Warehouse

    try:
        return Warehouse.open(warehouse, read_only=read_only)
    except WarehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@alerts_app.command("ack")
def ack(
    incident: str = typer.Argument(..., help="Incident key, or a reply code such as 4821A."),
    operator: str = typer.Option(..., "--operator", "-o", help="Who acknowledges (recorded)."),
    warehouse: Optional[str] = _WAREHOUSE,
) -> None:
    """Acknowledge an incident (stops its paging; does not change any trading mode)."""
    import re

    from risklib.adapters.notifiers import incidents_for_code, known_incidents, record_ack
    from risklib.clock import SystemClock

    if not operator.strip():
        typer.echo("error: --operator='': must not be empty", err=True)
        raise typer.Exit(2)
    wh = _open(warehouse, read_only=False)
    try:
        is_code = re.fullmatch(r"[0-9]{4}[A-Za-z]", incident) is not None
        keys = incidents_for_code(wh, incident) if is_code else known_incidents(wh, [incident])
        if not keys:
            what = "reply_code" if is_code else "incident"
            typer.echo(f"error: {what}={incident!r}: no open incident", err=True)
            raise typer.Exit(2)
        at = SystemClock().now()
        record_ack(wh, keys, at=at, channel="console", operator=operator.strip(),
                   reply_code=incident.upper() if is_code else None)
    finally:
        wh.close()
    for k in keys:
        typer.echo(f"acknowledged {k} by {operator.strip()} at {at.isoformat()}")


@alerts_app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", "-a", help="History (resolved included), not only active incidents."),
    limit: int = typer.Option(50, "--limit", "-n", min=1),
    warehouse: Optional[str] = _WAREHOUSE,
) -> None:
    """Active incidents (or history) with acknowledgement and time-to-acknowledge."""
    from risklib.adapters.notifiers import incident_view

    wh = _open(warehouse, read_only=True)
    try:
        df = incident_view(wh, active=not all_, limit=limit)
    finally:
        wh.close()
    if df.height == 0:
        typer.echo("no incidents")
        return
    for r in df.iter_rows(named=True):
        tta = f"{r['time_to_ack_s']:.0f}s" if r["time_to_ack_s"] is not None else "-"
        by = f"{r['acknowledged_by']} via {r['ack_channel']}" if r["acknowledged_by"] else "unacknowledged"
        typer.echo(f"L{r['level']} {r['status']:<12} {r['incident_key']:<40} opened {r['opened_at']:%Y-%m-%d %H:%M:%S}  {by}  tta={tta}")


@alerts_app.command("drain")
def drain(
    warehouse: Optional[str] = _WAREHOUSE,
    config: Optional[str] = _CONFIG,
) -> None:
    """Send what is due in the outbox (console notifier unless provider credentials are set)."""
    from risklib.adapters.notifiers import OutboxInUse, claim_outbox, make_sender, outbox_directory
    from risklib.clock import SystemClock

    cfg = _load(config)
    wh = _open(warehouse, read_only=False)
    try:
        # a running pipeline's unlanded sends are invisible here: never drain beside it
        owner = claim_outbox(outbox_directory(wh))
    except OutboxInUse as exc:
        wh.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        report = make_sender(wh, cfg).drain(SystemClock().now())
    finally:
        owner.close()
        wh.close()
    typer.echo(" ".join(f"{k}={v}" for k, v in report.summary().items()))
    for e in report.errors:
        typer.echo(f"  {e}", err=True)


@alerts_app.command("config")
def show_config(config: Optional[str] = _CONFIG) -> None:
    """Validate and print the escalation config in force (levels, channels, tiers, timers)."""
    cfg = _load(config)
    for lvl, pol in sorted(cfg.levels.items()):
        tiers = " -> ".join("+".join(t) for t in pol.tiers)
        typer.echo(f"L{lvl} {pol.name:<13} channels={','.join(pol.channels):<28} tiers={tiers}  "
                   f"ack_wait_s={pol.ack_wait_s} repeat_s={pol.repeat_interval_s}")


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.add_typer(alerts_app, name="alerts")
