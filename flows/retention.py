"""Scheduled retention of the audit warehouse: tiers, rollups, audit checkpoints, compaction.

One thin flow; the logic lives in :func:`risklib.warehouse.run_retention`. Serve it
daily with ``python -m flows.retention`` (cron ``15 2 * * *`` UTC), or run once::

    from flows.retention import retention_flow
    retention_flow(dry_run=True)
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE


@task(cache_policy=NONE)
def apply_retention(location: str | None, now: datetime, dry_run: bool, compact: bool) -> dict:
    """Run the retention tiers once; returns the report as a dict (steps and compaction counts)."""
    from risklib.warehouse import Warehouse, run_retention

    with Warehouse.open(location, read_only=dry_run, migrate=False) as wh:
        report = run_retention(wh, now, dry_run=dry_run, compact=compact)
    return {
        "summary": report.summary(),
        "rows_affected": report.rows_removed,
        "steps": [s.__dict__ for s in report.steps],
        "compaction": report.compaction,
    }


@task(cache_policy=NONE)
def verify_audit(location: str | None) -> str:
    """Check the audit chain after retention; raises if it is broken."""
    from risklib.errors import AuditChainError
    from risklib.warehouse import Warehouse

    with Warehouse.open(location, read_only=True) as wh:
        result = wh.verify()
    if not result.ok:
        raise AuditChainError(result.summary())
    return result.summary()


@flow(name="warehouse-retention", log_prints=False)
def retention_flow(
    location: str | None = None, now: datetime | None = None, dry_run: bool = False, compact: bool = True
) -> dict:
    """Apply retention tiers as of ``now`` (default: the current UTC time) and verify the audit chain."""
    at = now or datetime.now(timezone.utc)
    report = apply_retention(location, at, dry_run, compact)
    chain = verify_audit(location)
    get_run_logger().info("%s\n%s", report["summary"], chain)
    create_markdown_artifact(
        key="warehouse-retention",
        markdown=f"```\n{report['summary']}\n{chain}\n```",
        description="Warehouse retention run",
    )
    return report | {"audit": chain}


if __name__ == "__main__":  # pragma: no cover - deployment entry point
    retention_flow.serve(name="warehouse-retention-daily", cron="15 2 * * *")
