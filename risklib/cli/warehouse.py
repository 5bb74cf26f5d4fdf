"""`riskctl warehouse ...`: migrate, verify, stats, retention and the analysts' CLI init script."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

warehouse_app = typer.Typer(
    name="warehouse",
    help="Operate the audit warehouse (DuckLake): schema, audit chain, sizes, retention.",
    no_args_is_help=True,
)

_LOCATION = typer.Option(None, "--location", "-l", help="Warehouse folder or ducklake: URI (default $RISK_WAREHOUSE, then warehouse/data/).")
_CONFIG = typer.Option(None, "--config", "-c", help="TOML file with a [warehouse] section (default: risklib/defaults/warehouse.toml).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _open(location: Optional[str], config: Optional[Path], *, read_only: bool, migrate: bool = False):
    from risklib.errors import ConfigError, WarehouseError
    from risklib.warehouse import Warehouse, load_config

    try:
        cfg = load_config(config)
        return Warehouse.open(location, read_only=read_only, migrate=migrate, config=cfg)
    except (ConfigError, WarehouseError) as exc:
        _fail(str(exc))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)  # pragma: no cover


@warehouse_app.command("migrate")
def migrate_cmd(location: Optional[str] = _LOCATION, config: Optional[Path] = _CONFIG) -> None:
    """Create the warehouse if needed and apply pending migrations and views."""
    from risklib.errors import WarehouseError

    wh = _open(location, config, read_only=False, migrate=False)
    try:
        applied = wh.migrate()
    except WarehouseError as exc:
        _fail(str(exc))
    finally:
        wh.close()
    if applied:
        for name in applied:
            typer.echo(f"applied {name}")
    else:
        typer.echo("schema up to date")


@warehouse_app.command("verify")
def verify_cmd(location: Optional[str] = _LOCATION, config: Optional[Path] = _CONFIG) -> None:
    """Check the audit log's hash chain; exit 1 naming the first broken entry."""
    wh = _open(location, config, read_only=True)
    try:
        result = wh.verify()
    finally:
        wh.close()
    typer.echo(result.summary())
    if not result.ok:
        raise typer.Exit(1)


@warehouse_app.command("stats")
def stats_cmd(location: Optional[str] = _LOCATION, config: Optional[Path] = _CONFIG) -> None:
    """Rows and bytes per table and per retention tier."""
    from risklib.warehouse import catalog_bytes, table_stats

    wh = _open(location, config, read_only=True)
    try:
        rows = table_stats(wh)
        cat = catalog_bytes(wh)
        heartbeat = wh.last_heartbeat()
    finally:
        wh.close()
    typer.echo(f"{'table':<26} {'tier':<18} {'rows':>12} {'files':>6} {'bytes':>11}")
    for r in rows:
        typer.echo(f"{r['table']:<26} {r['tier']:<18} {r['rows']:>12,} {r['files']:>6} {_human(r['bytes']):>11}")
    typer.echo("")
    tiers: dict[str, list[int]] = {}
    for r in rows:
        t = tiers.setdefault(r["tier"], [0, 0])
        t[0] += r["rows"]
        t[1] += r["bytes"]
    typer.echo(f"{'tier':<18} {'rows':>12} {'bytes':>11}")
    for tier, (n, b) in sorted(tiers.items()):
        typer.echo(f"{tier:<18} {n:>12,} {_human(b):>11}")
    typer.echo(f"catalog (incl. inlined rows): {_human(cat)}")
    typer.echo(f"last completed cycle: {heartbeat.isoformat() if heartbeat else 'none'}")


@warehouse_app.command("retention")
def retention_cmd(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be rolled up or deleted."),
    now: Optional[str] = typer.Option(None, "--now", help="Measure tiers from this ISO-8601 time (default: current UTC time)."),
    no_compact: bool = typer.Option(False, "--no-compact", help="Skip DuckLake compaction after deletes."),
    location: Optional[str] = _LOCATION,
    config: Optional[Path] = _CONFIG,
) -> None:
    """Apply retention tiers: roll up old per-cycle metrics, delete past-tier rows, compact."""
    from risklib.errors import WarehouseError
    from risklib.warehouse import run_retention

    if now is None:
        at = datetime.now(timezone.utc)
    else:
        try:
            at = datetime.fromisoformat(now)
        except ValueError:
            _fail(f"--now={now!r}: not an ISO-8601 time")
        if at.tzinfo is None:
            _fail(f"--now={now!r}: must include a UTC offset, e.g. 2026-03-01T00:00:00+00:00")
    wh = _open(location, config, read_only=dry_run, migrate=False)
    try:
        report = run_retention(wh, at, dry_run=dry_run, compact=not no_compact)
    except WarehouseError as exc:
        _fail(str(exc), 1)
    finally:
        wh.close()
    typer.echo(report.summary())


@warehouse_app.command("cli-init")
def cli_init_cmd(
    location: Optional[str] = _LOCATION,
    config: Optional[Path] = _CONFIG,
    write: bool = typer.Option(False, "--write", help="Allow writes (default: the catalog is attached read-only)."),
) -> None:
    """Print a DuckDB CLI init script: `duckdb -init <(riskctl warehouse cli-init)`."""
    from risklib.adapters.warehouse._connect import CATALOG, extension_path, layout_for
    from risklib.errors import ConfigError, WarehouseError
    from risklib.warehouse import load_config

    try:
        layout = layout_for(location, load_config(config))
        exts = [extension_path("sqlite_scanner"), extension_path("ducklake")]
    except (ConfigError, WarehouseError) as exc:
        _fail(str(exc))
    mode = "" if write else ", READ_ONLY"
    for ext in exts:
        typer.echo(f"LOAD '{ext}';")
    typer.echo("SET TimeZone = 'UTC';")
    typer.echo(f"ATTACH '{layout.catalog_uri}' AS {CATALOG} (DATA_PATH '{layout.data_path}'{mode});")
    typer.echo(f"USE {CATALOG};")


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.add_typer(warehouse_app, name="warehouse")
