"""`risk_cycle`: one micro-batch, eight stage tasks inside the running monitor flow.

A cycle costs eight task runs (~2 ms each in the flow), never a flow run
(~0.1-1 s) and never a task per account: the local Prefect server ingests only
~50 task runs/s on 2 cores, so the monitor also starts cycles no more often
than ``monitor.min_cycle_period_s``.

Every frame-carrying argument is passed ``quote``d: Prefect would otherwise walk
it looking for upstream futures (hundreds of milliseconds for a cycle's results).

Retries only where repeating is harmless: the feed read. Acting is never
retried by Prefect; the broker's idempotency keys make a replay harmless, and a
retry could only add a second copy of what already happened.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.utilities.annotations import quote as q

from risklib.cycle import stages
from risklib.cycle.stages import CycleResult


@task(name="ingest", cache_policy=NONE, retries=2, retry_delay_seconds=[1, 2])
def ingest(session, now: datetime):
    return stages.ingest(session, now)


@task(name="validate", cache_policy=NONE)
def validate(session, snapshot, now: datetime):
    return stages.validate(session, snapshot, now)


@task(name="compute-metrics", cache_policy=NONE)
def compute_metrics(session, validation, snapshot):
    return stages.compute_metrics(session, validation, snapshot)


@task(name="size-positions", cache_policy=NONE)
def size_positions(session, book):
    return stages.size_positions(session, book)


@task(name="evaluate-triggers", cache_policy=NONE)
def evaluate_triggers(session, now: datetime, book, snapshot):
    return stages.evaluate_triggers(session, now, book, snapshot)


def escalation_warnings(summary) -> tuple[str, ...]:
    """What an operator must know about the pipeline itself from the escalate stage's summary
    (logged by its task run, shown on the dashboard)."""
    said = summary if isinstance(summary, dict) else {}
    warnings = []
    if failure := said.get("landing_failure"):
        warnings.append(f"Escalation records are not reaching the warehouse (paging goes on): {failure}")
    if delay := said.get("paging_delay"):
        warnings.append(f"Paging is slow: {delay}")
    if failure := said.get("compaction_failure"):
        warnings.append(f"Escalation housekeeping failed (paging goes on): {failure}")
    return tuple(warnings)


@task(name="escalate", cache_policy=NONE)
def escalate(session, now: datetime, evaluation):
    summary = stages.escalate(session, now, evaluation)
    for warning in escalation_warnings(summary):  # the dashboard shows the same lines
        get_run_logger().warning("%s", warning)
    said = summary if isinstance(summary, dict) else {}
    done = said.get("drain", {})
    if done.get("failed") or done.get("errors"):
        # outcomes of pages sent behind the cycle: the Prefect UI shows them here, the warehouse in full
        get_run_logger().warning(
            "pages since the previous cycle: %d failed, %d delivery error(s), %d retr(ies) scheduled, "
            "%d fallback(s); see notification_events", done.get("failed", 0), done.get("errors", 0),
            done.get("retry_scheduled", 0), done.get("fallbacks", 0),
        )
    return summary


@task(name="act", cache_policy=NONE)
def act(session, now: datetime, evaluation, snapshot, accounts):
    return stages.act(session, now, evaluation, snapshot, accounts)


@task(name="record", cache_policy=NONE)
def record(session, result: CycleResult, finished_at: datetime, flow_run_id: str | None):
    stages.record(session, result, finished_at, flow_run_id)


def risk_cycle(session, now: datetime, *, cycle_id: str, flow_run_id: str | None = None) -> CycleResult:
    """Run one cycle's eight stage tasks in order and return what it saw, decided and did.

    A stage that raises ends the cycle: the failure is recorded in ``cycle_runs``
    (no heartbeat is published for it, so the gate's dead man's switch starts
    counting) and the exception propagates to the monitor, which reports it and
    goes on with the next cycle.
    """
    result = CycleResult(cycle_id=cycle_id, now=now)
    t = t_start = time.perf_counter()

    def finished() -> datetime:
        # The cycle's own processing time, added to its (possibly simulated) start.
        return now + timedelta(seconds=time.perf_counter() - t_start)

    def lap(stage: str) -> None:
        nonlocal t
        t1 = time.perf_counter()
        result.stage_ms[stage] = round((t1 - t) * 1e3, 3)
        t = t1

    try:
        result.snapshot = ingest(q(session), now)
        lap("ingest")
        result.validation = validate(q(session), q(result.snapshot), now)
        lap("validate")
        result.book = compute_metrics(q(session), q(result.validation), q(result.snapshot))
        lap("metrics")
        result.sizing = size_positions(q(session), q(result.book))
        lap("sizing")
        result.evaluation = evaluate_triggers(q(session), now, q(result.book), q(result.snapshot))
        lap("triggers")
        result.escalation = escalate(q(session), now, q(result.evaluation))
        lap("escalate")
        result.execution = act(q(session), now, q(result.evaluation), q(result.snapshot), q(result.book.accounts))
        lap("act")
        record(q(session), q(result), finished(), flow_run_id)
        lap("record")
    except Exception as exc:
        get_run_logger().error("cycle %s failed: %s: %s", cycle_id, type(exc).__name__, exc)
        session.record_failure(result, finished(), flow_run_id, exc)
        raise
    return result
