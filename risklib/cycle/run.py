"""A live simulated session: what `riskctl run` does, with progress and a closing summary."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_session(
    *,
    minutes: float | None,
    cycles: int | None,
    scenario: str,
    accounts: int,
    speed: float,
    seed: int,
    warehouse: Path | None,
    config: Path | None,
    echo: Callable[[str], None] = print,
) -> Any:
    """Build a simulated session, run the monitor flow over it, print a line per cycle and a summary."""
    # Our own progress lines replace Prefect's INFO chatter on the console; the UI keeps every log.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # --ephemeral starts a temporary API server; on a busy 2-core machine it needs more than 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.monitor import DASHBOARD_KEY, risk_monitor
    from flows.server import apply_to_temporary_server

    apply_to_temporary_server()  # batched task-run recording, no telemetry (no network here)
    from risklib.cycle.session import Session

    session = Session.build(
        config=config, scenario=scenario, accounts=accounts, seed=seed, speed=speed, warehouse=warehouse
    )
    where = session.warehouse.layout.local_root or session.warehouse.layout.catalog_uri
    echo(
        f"Session {session.session_id}: {accounts} accounts, scenario {scenario}, seed {seed}, "
        f"{'%d cycles' % cycles if cycles else '%g simulated minutes' % minutes} at {speed:g}x; "
        f"warehouse {where}"
    )
    echo(f"{'cycle':>6} {'sim time':>8} {'status':<7} {'drawdown':>8} {'VaR99':>7} {'alerts':>6} {'actions':>7} {'halted':>6} {'next':>6}  stress")

    def progress(result: Any, summary: Any, interval: float, overran: bool) -> None:
        ev = result.evaluation
        halted = ev.state.filter(ev.state["trading_mode"] != "ACTIVE").height
        dd = "n/a" if summary.drawdown != summary.drawdown else f"{summary.drawdown:.2%}"
        var = "n/a" if summary.var_99 != summary.var_99 else f"{summary.var_99:.3%}"
        echo(
            f"{result.cycle_id.rsplit('-', 1)[-1]:>6} {result.now:%H:%M:%S} {summary.status:<7} {dd:>8} {var:>7} "
            f"{ev.alerts.height:>6} {result.execution.actions.height:>7} {halted:>6} {interval:>5.0f}s  "
            f"{session.describe_stress(ev)}{'  (overran its interval)' if overran else ''}"
        )

    try:
        report = risk_monitor(
            session,
            max_cycles=cycles,
            max_sim_seconds=None if cycles else (minutes or 0) * 60,
            progress=progress,
        )
    finally:
        session.close()
    levels = ", ".join(f"L{k}: {v}" for k, v in sorted(report.alerts_by_level.items())) or "none"
    actions = ", ".join(f"{k}: {v}" for k, v in sorted(report.actions.items())) or "none"
    echo("")
    echo("Summary")
    echo(f"  cycles            {report.cycles} ({report.failed_cycles} failed, {report.overruns} overran) over {report.sim_seconds / 60:.1f} simulated minutes")
    echo(f"  alerts by level   {levels}  ({report.incidents} incidents opened)")
    echo(f"  actions           {actions}")
    echo(f"  max drawdown      {report.max_drawdown:.2%} (firm-wide)   final status {report.last_status}")
    echo(f"  dashboard         Prefect artifact '{DASHBOARD_KEY}' of flow run {report.flow_run_id}")
    echo(f"  audit history     {where}  (notebooks/, or: riskctl warehouse stats)")
    return report
