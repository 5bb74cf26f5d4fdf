"""Scheduled deployments, served from one process: `riskctl serve`.

- ``risk-monitor/continuous``: the monitor, started every hour; each run rolls
  over after an hour and the next resumes from the warehouse's risk state.
- ``warehouse-retention/daily``: retention tiers, rollups and compaction at 02:15 UTC.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prefect import flow, serve

from flows.monitor import risk_monitor
from flows.retention import retention_flow


@flow(name="risk-monitor-service", log_prints=False)
def monitor_service(
    scenario: str = "calm", accounts: int = 200, seed: int = 7, speed: float = 1.0, config: str | None = None
) -> dict:
    """The served monitor: builds a session that resumes from the warehouse and runs for one rollover period."""
    from risklib.cycle.session import Session

    session = Session.build(config=config, scenario=scenario, accounts=accounts, seed=seed, speed=speed, resume=True)
    try:
        report = risk_monitor(session, rollover_minutes=session.config.monitor.rollover_minutes)
    finally:
        session.close()
    return {"cycles": report.cycles, "failed": report.failed_cycles, "overruns": report.overruns}


def _start_monitor_now(wait_s: float = 120.0) -> None:
    """Ask for a monitor run as soon as the served deployment exists."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            run_deployment("risk-monitor-service/continuous", timeout=0)
            return
        except ObjectNotFound:  # not registered yet
            time.sleep(2)


def serve_all(config: Path | None = None) -> None:
    """Register and run the product's deployments until interrupted."""
    from datetime import datetime, timedelta, timezone

    from prefect.schedules import Interval

    params = {"config": str(config)} if config else {}
    hourly = Interval(3600, anchor_date=datetime.now(timezone.utc) + timedelta(hours=1))
    # Monitoring starts when the service does: one run now, then the hourly schedule.
    threading.Thread(target=_start_monitor_now, name="start-monitor", daemon=True).start()
    serve(
        monitor_service.to_deployment(name="continuous", schedules=[hourly], parameters=params, tags=["risk"], paused=False),
        retention_flow.to_deployment(name="daily", cron="15 2 * * *", tags=["risk", "warehouse"], paused=False),
        pause_on_shutdown=False,  # a restarted service must not find its schedules paused
    )
