"""`risk-monitor`: the long-running flow that runs risk cycles back to back at the policy's cadence.

The policy returns the next interval each cycle (5 min normal … 30 s at
drawdown level 1 … continuous in extreme volatility). The monitor sleeps until
then, reports a cycle that overran its interval instead of silently skipping,
publishes the dashboard artifacts (on a background thread, so a slow API never
delays the next cycle), and emits ``risk.trigger.<rule>`` events for the new
incidents so operators can hang Prefect Automations on them. A run rolls
over after ``rollover_minutes`` so the UI stays easy to browse; the next run
reloads the risk state from the warehouse (a restart never clears a halt).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from flows.risk_cycle import escalation_warnings, risk_cycle
from risklib.cpu_placement import cycle_plan, monitor_placement
from risklib.cycle.dashboard import render_dashboard, summarise, top_risks, with_sizing
from risklib.cycle.stages import CycleResult
from risklib.cycle.trigger_events import trigger_events
from risklib.cycle_gaps import CycleGaps
from risklib.gc_pauses import freeze_warm_heap

DASHBOARD_KEY = "risk-dashboard"
POSITIONS_KEY = "position-risks"
VALIDATION_KEY = "validation-summary"
POSITION_TABLE_ROWS = 200  # the position-risk table artifact's rows, largest risk contribution first


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


def publish_artifacts(result: CycleResult, session) -> None:
    """The dashboard, the position-risk table and the validation summary, keyed so the newest replaces the last."""
    ev = result.evaluation
    book = result.book
    top = top_risks(book.positions, POSITION_TABLE_ROWS)  # once: the dashboard shows the first of these
    markdown = render_dashboard(
        now=result.now,
        cycle_id=result.cycle_id,
        metrics=book.accounts,
        state=ev.state,
        alerts=ev.alerts,
        positions=top,
        stress=session.describe_stress(ev),
        next_interval_s=ev.next_interval_s,
        var_halt=session.var_halt,
        sizing=result.sizing,
        warnings=cycle_warnings(result),
    )
    create_markdown_artifact(markdown=markdown, key=DASHBOARD_KEY, description=f"Risk dashboard, cycle {result.cycle_id}")
    create_table_artifact(
        table=with_sizing(top, result.sizing).to_dicts(),
        key=POSITIONS_KEY,
        description="Top position risks by risk contribution, with the multiplier and cap for new risk",
    )
    create_markdown_artifact(markdown=session.validation_markdown(result.validation), key=VALIDATION_KEY, description="Validation summary")


def cycle_warnings(result: CycleResult) -> tuple[str, ...]:
    """What an operator must know about the pipeline itself, from one cycle's stage results."""
    return escalation_warnings(result.escalation)


def emit_trigger_events(result: CycleResult, session) -> None:
    """The ``risk.trigger.<rule>`` events of the incidents opened this cycle (for Prefect Automations).

    Per rule, the worst ``monitor.trigger_events_per_rule`` get an event each and the rest one
    event together (see :mod:`risklib.cycle.trigger_events`).
    """
    for e in trigger_events(session.new_incidents(result.evaluation.alerts), cycle_id=result.cycle_id,
                            per_rule=session.config.monitor.trigger_events_per_rule):
        emit_event(event=e.event, resource=e.resource, payload=e.payload)


class ArtifactPublisher:
    """Publishes the dashboard artifacts on one background thread, newest cycle first.

    Three artifact writes are three API calls (tens of ms on a busy server): made
    in the loop, they would delay the next cycle, and with it the next action.
    Here the loop hands over the cycle and goes on; if the API is slower than the
    cycles, the dashboards of cycles it could not keep up with are skipped (the
    newest replaces them anyway). Publishes start at least ``min_interval_s``
    apart (``monitor.dashboard_min_interval_s``): at the continuous cadence the
    cycles in between are skipped the same way. With ``gaps`` (the session's
    :class:`~risklib.cycle_gaps.CycleGaps`) a publish waits for the gap after a
    running cycle, at most its ``max_hold_s``: rendering a 10,000-account
    dashboard takes CPU a cycle needs. Trigger events are not published
    here: every one of them counts. ``close`` publishes the last cycle handed
    over at once.
    """

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, min_interval_s: float = 0.0,
                 gaps: CycleGaps | None = None) -> None:
        self._log = log
        self._min_interval_s = min_interval_s
        self._gaps = gaps if gaps is not None else CycleGaps(max_hold_s=0.0)  # None: never waits
        self._cv = threading.Condition()
        self._pending: Callable[[], None] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self.published = 0
        self.skipped = 0

    def submit(self, publish: Callable[[], None]) -> None:
        """Hand over one cycle's publishing; it replaces a handed-over one not yet started."""
        # the caller's Prefect run context goes along, so the artifacts belong to this flow run
        ctx = contextvars.copy_context()
        job = lambda: ctx.run(publish)  # noqa: E731
        with self._cv:
            if self._pending is not None:
                self.skipped += 1
            self._pending = job
            if self._thread is None:
                self._gaps.subscribe(self._cv)  # woken when a cycle ends
                self._thread = threading.Thread(target=self._run, name="artifact-publisher", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        next_start = 0.0
        while True:
            with self._cv:
                due_since: float | None = None
                while not self._closed:
                    if self._pending is None:
                        due_since = None
                        self._cv.wait()
                        continue
                    now = time.monotonic()
                    if now < next_start:
                        self._cv.wait(next_start - now)
                        continue
                    due_since = now if due_since is None else due_since
                    hold_s = self._gaps.hold_s(due_since, now)
                    if hold_s <= 0:
                        break
                    self._cv.wait(hold_s)
                if self._pending is None:
                    return
                job, self._pending = self._pending, None
            next_start = time.monotonic() + self._min_interval_s
            try:
                job()
                self.published += 1
            except Exception as exc:  # a dashboard that did not update must not stop the monitor
                self._log.warning("dashboard artifacts not published: %s: %s", type(exc).__name__, exc)

    def close(self, timeout_s: float = 60.0) -> None:
        """Publish what is pending, then stop the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._gaps.unsubscribe(self._cv)


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
    publisher = ArtifactPublisher(log, session.config.monitor.dashboard_min_interval_s, session.gaps)
    try:
        with contextlib.ExitStack() as placed:  # the run's threads go back to every CPU when it ends
            _run_cycles(session, report, log, publisher, max_cycles, max_sim_seconds, rollover_minutes, progress,
                        started_wall, started_sim, placed)
    finally:
        publisher.close()  # the newest dashboard is published before the run ends
    report.sim_seconds = (session.clock.now() - started_sim).total_seconds()
    session.flush()  # a monitor run ends with every cycle it recorded visible in the warehouse
    return report


def _place(book_rows: int, log, placed: contextlib.ExitStack) -> None:
    """Keep a small book's cycles on the monitor's CPUs for the rest of the run (``risklib.cpu_placement``)."""
    try:
        plan = cycle_plan(book_rows)
    except ValueError as exc:  # a bad RISK_MONITOR_CPUS costs speed, never the watch
        log.warning("%s; cycles run wherever the OS puts them", exc)
        return
    placement = placed.enter_context(monitor_placement(plan))
    if placement is not None:
        log.info("cycles of this %d-row book run on CPU %s from now on, other work on CPU %s (RISK_MONITOR_CPUS=0: "
                 "no placement)", book_rows, _cpus(placement.monitor), _cpus(placement.server))


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _run_cycles(session, report: MonitorReport, log, publisher: ArtifactPublisher, max_cycles, max_sim_seconds,
                rollover_minutes, progress, started_wall, started_sim, placed: contextlib.ExitStack) -> None:
    warm = False
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
            with session.gaps.cycle():  # landings and dashboards that can wait, wait for it to end
                result = risk_cycle(session, now, cycle_id=cycle_id, flow_run_id=report.flow_run_id)
        except Exception:  # reported and recorded inside risk_cycle; keep watching
            report.failed_cycles += 1
            report.cycles += 1
            interval = session.failure_interval_s
            session.clock_sleep(interval, time.monotonic() - t0)
            continue
        report.cycles += 1
        session.prepare_next_cycle()  # in the gap, on its own thread
        emit_trigger_events(result, session)
        publisher.submit(lambda result=result: publish_artifacts(result, session))
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
        if not warm:
            # The first completed cycle loaded what every later one uses (see risklib.gc_pauses);
            # the one full collection this takes comes out of the wait for the next cycle.
            freeze_warm_heap()
            _place(result.book.positions.height, log, placed)
            warm = True
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
