"""`risk-monitor`: the long-running flow that runs risk cycles back to back at the policy's cadence.

The policy returns the next interval each cycle (5 min normal … 30 s at
drawdown level 1 … continuous in extreme volatility). The monitor sleeps until
then, reports a cycle that overran its interval instead of silently skipping,
publishes the dashboard artifacts, and emits a ``risk.trigger.<rule>`` event for
every new incident so operators can hang Prefect Automations on it. A run rolls
over after ``rollover_minutes`` so the UI stays easy to browse; the next run
reloads the risk state from the warehouse (a restart never clears a halt).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from flows.risk_cycle import risk_cycle
from risklib.cycle.dashboard import render_dashboard, summarise
from risklib.cycle.stages import CycleResult

DASHBOARD_KEY = "risk-dashboard"
POSITIONS_KEY = "position-risks"
VALIDATION_KEY = "validation-summary"


@dataclass
class MonitorReport:
    """What a monitor run did: the session summary `riskctl run` prints."""

    cycles: int = 0
    failed_cycles: int = 0
    overruns: int = 0
    alerts_by_level: dict[int, int] = field(default_factory=dict)
    incidents: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    max_drawdown: float = 0.0
    intervals_s: list[float] = field(default_factory=list)
    sim_seconds: float = 0.0
    last_status: str = "UNKNOWN"
    flow_run_id: str | None = None


def publish(result: CycleResult, session) -> None:
    """Update the keyed artifacts (latest always one click away) and emit trigger events."""
    ev = result.evaluation
    book = result.book
    markdown = render_dashboard(
        now=result.now,
        cycle_id=result.cycle_id,
        metrics=book.accounts,
        state=ev.state,
        alerts=ev.alerts,
        positions=book.positions,
        stress=session.describe_stress(ev),
        next_interval_s=ev.next_interval_s,
        var_halt=session.var_halt,
    )
    create_markdown_artifact(markdown=markdown, key=DASHBOARD_KEY, description=f"Risk dashboard, cycle {result.cycle_id}")
    top = book.positions.sort("risk_contribution", descending=True, nulls_last=True).head(200)
    create_table_artifact(
        table=top.to_dicts(),
        key=POSITIONS_KEY,
        description="Top position risks by risk contribution",
    )
    create_markdown_artifact(markdown=session.validation_markdown(result.validation), key=VALIDATION_KEY, description="Validation summary")
    for row in session.new_incidents(ev.alerts).iter_rows(named=True):
        emit_event(
            event=f"risk.trigger.{row['rule']}",
            resource={"prefect.resource.id": f"risk.incident.{row['incident_key']}", "prefect.resource.name": row["account_id"]},
            payload={k: row[k] for k in ("account_id", "rule", "level", "metric_value", "threshold", "trading_mode", "message")},
        )


@flow(name="risk-monitor", log_prints=False)
def risk_monitor(
    session=None,
    *,
    max_cycles: int | None = None,
    max_sim_seconds: float | None = None,
    rollover_minutes: float = 60.0,
    progress=None,
) -> MonitorReport:
    """Run cycles back to back until the limits are reached.

    ``session`` carries the feed, broker, warehouse and notifiers (see
    :func:`risklib.cycle.session.Session.build`); when None the served
    deployment builds one from configuration. ``progress`` is called with each
    cycle's result (the CLI prints a line per cycle).
    """
    from risklib.cycle.session import Session

    log = get_run_logger()
    session = session or Session.build()
    # Prefect's per-task INFO lines cost about half of each task run (see MonitorConfig).
    logging.getLogger("prefect.task_runs").setLevel(session.config.monitor.task_run_log_level)
    report = MonitorReport(flow_run_id=str(flow_run.id) if flow_run.id else None)
    started_wall = time.monotonic()
    started_sim = session.clock.now()
    while True:
        now = session.clock.now()
        sim_elapsed = (now - started_sim).total_seconds()
        if max_cycles is not None and report.cycles >= max_cycles:
            break
        if max_sim_seconds is not None and sim_elapsed >= max_sim_seconds:
            break
        if time.monotonic() - started_wall > rollover_minutes * 60:
            log.info("rolling over after %.0f min; the next run resumes from the warehouse", rollover_minutes)
            break
        cycle_id = session.next_cycle_id()
        session.run_market(now)  # the simulated world's own time, not the cycle's
        t0 = time.monotonic()
        try:
            result = risk_cycle(session, now, cycle_id=cycle_id, flow_run_id=report.flow_run_id)
        except Exception:  # reported and recorded inside risk_cycle; keep watching
            report.failed_cycles += 1
            report.cycles += 1
            interval = session.failure_interval_s
            session.clock_sleep(interval, time.monotonic() - t0)
            continue
        report.cycles += 1
        publish(result, session)
        ev = result.evaluation
        interval = max(float(ev.next_interval_s), session.min_interval_s)
        for level, n in ev.alerts.group_by("level").len().iter_rows():
            report.alerts_by_level[level] = report.alerts_by_level.get(level, 0) + n
        report.incidents += session.new_incident_count
        for action, n in result.execution.actions.group_by("action").len().iter_rows():
            report.actions[action] = report.actions.get(action, 0) + n
        summary = summarise(result.book.accounts, ev.state, var_halt=session.var_halt)
        if summary.drawdown == summary.drawdown:
            report.max_drawdown = max(report.max_drawdown, summary.drawdown)
        report.last_status = summary.status
        report.intervals_s.append(interval)
        elapsed_wall = time.monotonic() - t0
        overran = session.clock_sleep(interval, elapsed_wall)
        if overran:
            report.overruns += 1
            log.warning(
                "cycle %s overran its interval: took %.3fs wall for a %.1fs interval at speed %.0fx",
                cycle_id, elapsed_wall, interval, session.speed,
            )
        if progress is not None:
            progress(result, summary, interval, overran)
    report.sim_seconds = (session.clock.now() - started_sim).total_seconds()
    session.flush()  # a monitor run ends with every cycle it recorded visible in the warehouse
    return report
