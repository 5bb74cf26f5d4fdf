"""Retention tiers, rollups (accounts per minute, positions per hour), audit checkpoints and DuckLake compaction.

Everything takes ``now`` as a parameter (the scheduled flow passes the clock's time),
so a run is reproducible. Deletes, rollups and checkpoints are audit entries written
in the same transaction as the change they describe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from risklib.adapters.warehouse import _connect
from risklib.adapters.warehouse._audit import CHECKPOINT_ACTION
from risklib.adapters.warehouse._config import RetentionConfig
from risklib.errors import WarehouseError

#: table -> (tier, time column). The tier names the RetentionConfig field `<tier>_days`.
TIERS: dict[str, tuple[str, str]] = {
    "realtime_risk_metrics": ("risk_metrics", "timestamp"),
    "position_risk_metrics": ("risk_metrics", "timestamp"),
    "realtime_risk_metrics_1m": ("risk_metrics", "minute"),
    "position_risk_metrics_1h": ("risk_metrics", "hour"),
    "risk_state": ("risk_metrics", "ts"),
    "cycle_runs": ("risk_metrics", "started_at"),
    "correlation_snapshots": ("risk_metrics", "ts"),
    "market_quotes": ("risk_metrics", "ts"),
    "alerts": ("alerts", "ts"),
    "incidents": ("alerts", "updated_at"),
    "notifications": ("alerts", "created_at"),
    "notification_events": ("alerts", "at"),
    "acknowledgements": ("alerts", "at"),
    "webhook_rejections": ("alerts", "at"),
    "gate_denials": ("alerts", "ts"),  # refused orders: decisions, kept like the alert history
    "emergency_actions": ("emergency_actions", "timestamp"),
    "broker_orders": ("emergency_actions", "at"),
    "broker_fills": ("emergency_actions", "at"),
    "overrides": ("emergency_actions", "created_at"),
    "threshold_changes": ("emergency_actions", "at"),
    "manual_action_requests": ("emergency_actions", "requested_at"),
    # The "why" of every decision, including those behind emergency actions: kept as long
    # as the actions it explains (the more protective of the two tiers it could follow).
    "rules_fired": ("emergency_actions", "ts"),
    "quarantine": ("quarantine", "at"),
    "audit_log": ("audit", "at"),
}

# Rollups: fine table -> (rollup table, cutoff key in `cutoffs()`, INSERT ... SELECT with ? = cutoff).
# Accounts are folded per minute (100 accounts: small). Positions per hour: at a cycle
# every 5 minutes a per-minute position row folds a single cycle and was larger than the
# fine row it replaced (bench: 4.4 vs 3.3 GB/day for 200,000 positions).
_ROLLUPS: dict[str, tuple[str, str, str]] = {
    "realtime_risk_metrics": (
        "realtime_risk_metrics_1m",
        "rollup",
        """
        INSERT INTO realtime_risk_metrics_1m BY NAME
        SELECT date_trunc('minute', "timestamp") AS minute, CAST(min("timestamp") AS DATE) AS "day", account_id, count(*)::INTEGER AS n_cycles,
               min(portfolio_drawdown) AS drawdown_min, max(portfolio_drawdown) AS drawdown_max,
               arg_max(portfolio_drawdown, "timestamp") AS drawdown_last,
               max(portfolio_var_95) AS var_95_max, arg_max(portfolio_var_95, "timestamp") AS var_95_last,
               max(portfolio_var_99) AS var_99_max, arg_max(portfolio_var_99, "timestamp") AS var_99_last,
               max(daily_loss) AS daily_loss_max,
               count(*) FILTER (WHERE daily_loss > portfolio_var_95)::INTEGER AS var_95_breaches,
               count(*) FILTER (WHERE daily_loss > portfolio_var_99)::INTEGER AS var_99_breaches,
               max(risk_score) AS risk_score_max, max(alert_level) AS alert_level_max,
               min(equity_usd) AS equity_usd_min, max(equity_usd) AS equity_usd_max,
               arg_max(equity_usd, "timestamp") AS equity_usd_last,
               max(leverage) AS leverage_max, arg_max(leverage, "timestamp") AS leverage_last
        FROM realtime_risk_metrics WHERE "timestamp" < ? GROUP BY minute, account_id
        """,
    ),
    "position_risk_metrics": (
        "position_risk_metrics_1h",
        "rollup_hour",
        """
        INSERT INTO position_risk_metrics_1h BY NAME
        SELECT date_trunc('hour', "timestamp") AS "hour", CAST(min("timestamp") AS DATE) AS "day", account_id, currency_pair, strategy_name,
               count(*)::INTEGER AS n_cycles,
               arg_max(position_size, "timestamp") AS position_size_last,
               min(notional_usd) AS notional_usd_min, max(notional_usd) AS notional_usd_max,
               arg_max(notional_usd, "timestamp") AS notional_usd_last,
               min(unrealized_pnl) AS unrealized_pnl_min, max(unrealized_pnl) AS unrealized_pnl_max,
               arg_max(unrealized_pnl, "timestamp") AS unrealized_pnl_last,
               max(position_var_95) AS position_var_95_max, arg_max(position_var_95, "timestamp") AS position_var_95_last,
               max(risk_contribution) AS risk_contribution_max, arg_max(risk_contribution, "timestamp") AS risk_contribution_last
        FROM position_risk_metrics WHERE "timestamp" < ? GROUP BY "hour", account_id, currency_pair, strategy_name
        """,
    ),
}


@dataclass(frozen=True)
class RetentionStep:
    """One change retention makes (or would make).

    Attributes
    ----------
    kind
        ``"rollup"`` (fold fine rows into per-minute or per-hour rows, then remove them), ``"delete"``
        (rows past their tier) or ``"audit_checkpoint"`` (old audit entries behind a checkpoint).
    table, tier
        Table changed and its tier.
    cutoff
        Rows strictly older than this (UTC) are affected.
    rows
        Rows affected (removed, for rollup the fine rows folded).
    """

    kind: str
    table: str
    tier: str
    cutoff: datetime
    rows: int


@dataclass
class RetentionReport:
    """What a retention run did (or, with ``dry_run``, would do)."""

    now: datetime
    dry_run: bool
    steps: list[RetentionStep] = field(default_factory=list)
    compaction: dict[str, int] = field(default_factory=dict)

    @property
    def rows_removed(self) -> int:
        return sum(s.rows for s in self.steps)

    def summary(self) -> str:
        verb = "would" if self.dry_run else "did"
        lines = [f"retention at {self.now.isoformat()} ({'dry run' if self.dry_run else 'applied'}):"]
        if not self.steps:
            lines.append("  nothing past its tier")
        for s in self.steps:
            lines.append(f"  {s.kind:<16} {s.table:<26} tier={s.tier:<17} before {s.cutoff.isoformat()}  {verb} affect {s.rows} rows")
        for k, v in self.compaction.items():
            lines.append(f"  compaction {k}: {v}")
        return "\n".join(lines)


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def cutoffs(config: RetentionConfig, now: datetime) -> dict[str, datetime]:
    """Per-tier cutoff times: rows strictly older are past their tier (``audit`` absent when kept forever)."""
    if now.tzinfo is None:
        raise WarehouseError(f"now={now!r}: must be timezone-aware")
    now = now.astimezone(timezone.utc)
    out = {
        "risk_metrics": now - timedelta(days=config.risk_metrics_days),
        "alerts": now - timedelta(days=config.alerts_days),
        "emergency_actions": now - timedelta(days=config.emergency_actions_days),
        "quarantine": now - timedelta(days=config.quarantine_days),
        # Aligned to the rollup's period so a minute (accounts) or an hour (positions) is
        # never split between two rollup runs.
        "rollup": _floor_minute(now - timedelta(days=config.rollup_after_days)),
        "rollup_hour": _floor_hour(now - timedelta(days=config.rollup_after_days)),
    }
    if config.audit_days:
        out["audit"] = now - timedelta(days=config.audit_days)
    return out


def _count(wh, table: str, column: str, cutoff: datetime) -> int:
    # table and column come from TIERS (a fixed allowlist), the cutoff is a parameter.
    return int(wh.con.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" < ?', [cutoff]).fetchone()[0])


def run_retention(wh, now: datetime, *, dry_run: bool = False, compact: bool = True) -> RetentionReport:
    """Apply the retention tiers to ``wh`` as of ``now``.

    Order: roll up per-cycle metrics older than ``rollup_after_days`` into
    ``realtime_risk_metrics_1m`` (per minute) and ``position_risk_metrics_1h`` (per hour)
    (then remove them), delete rows past each tier, remove audit entries past
    ``audit_days`` (when set) behind a checkpoint, then compact the lake.

    Each step runs in one transaction with its audit entry, under the writer lock
    (so the pipeline's writes interleave between steps, never inside them).

    Parameters
    ----------
    wh
        A writable :class:`~risklib.warehouse.Warehouse`.
    now
        Time the tiers are measured from (timezone-aware).
    dry_run
        Count only; change nothing (no audit entry either).
    compact
        Run DuckLake maintenance (flush inlined rows, merge files, expire snapshots,
        delete unreferenced files) after the deletes, as configured.
    """
    cfg = wh.config.retention
    cuts = cutoffs(cfg, now)
    report = RetentionReport(now=now, dry_run=dry_run)

    for fine, (rollup_table, cut_key, sql) in _ROLLUPS.items():
        cut = cuts[cut_key]
        n = _count(wh, fine, "timestamp", cut)
        if n == 0:
            continue
        step = RetentionStep("rollup", fine, "risk_metrics", cut, n)
        report.steps.append(step)
        if dry_run:
            continue
        _in_transaction(
            wh,
            [(sql, [cut]), (f'DELETE FROM "{fine}" WHERE "timestamp" < ?', [cut])],
            {"actor": "retention", "action": "retention.rollup", "subject": fine, "at": now,
             "detail": {"into": rollup_table, "cutoff": cut.isoformat(), "rows": n,
                        "rollup_after_days": cfg.rollup_after_days}},
        )

    for table, (tier, column) in TIERS.items():
        if tier == "audit" or tier not in cuts:
            continue
        if dry_run and any(st.kind == "rollup" and st.table == table for st in report.steps):
            continue  # the rollup step already accounts for these fine rows
        n = _count(wh, table, column, cuts[tier])
        if n == 0:
            continue
        report.steps.append(RetentionStep("delete", table, tier, cuts[tier], n))
        if dry_run:
            continue
        days = getattr(cfg, f"{tier}_days")
        _in_transaction(
            wh,
            [(f'DELETE FROM "{table}" WHERE "{column}" < ?', [cuts[tier]])],
            {"actor": "retention", "action": "retention.delete", "subject": table, "at": now,
             "detail": {"tier": tier, "days": days, "cutoff": cuts[tier].isoformat(), "rows": n}},
        )

    if "audit" in cuts:
        step = _audit_checkpoint(wh, now, cuts["audit"], dry_run=dry_run)
        if step is not None:
            report.steps.append(step)

    if compact and not dry_run:
        report.compaction = compact_lake(wh, now)
    return report


def _in_transaction(wh, statements: list[tuple[str, list]], entry: dict) -> None:
    with _connect.writer_lock(wh.layout.lock_file, wh.config.writer_lock_timeout_s):
        wh.con.execute("BEGIN")
        try:
            for sql, params in statements:
                wh.con.execute(sql, params)
            wh._append_audit([entry])
            wh._commit()
        except BaseException:
            wh._rollback()
            raise


def _audit_checkpoint(wh, now: datetime, cutoff: datetime, *, dry_run: bool) -> RetentionStep | None:
    """Remove the oldest audit entries (a contiguous prefix older than ``cutoff``) behind a checkpoint."""
    row = wh.con.execute(
        'SELECT max(seq), count(*) FROM audit_log WHERE seq <= (SELECT max(seq) FROM audit_log WHERE "at" < ?)',
        [cutoff],
    ).fetchone()
    through, n = row
    if through is None or n == 0:
        return None
    step = RetentionStep("audit_checkpoint", "audit_log", "audit", cutoff, int(n))
    if dry_run:
        return step
    with _connect.writer_lock(wh.layout.lock_file, wh.config.writer_lock_timeout_s):
        wh.con.execute("BEGIN")
        try:
            last_hash = wh.con.execute("SELECT hash FROM audit_log WHERE seq = ?", [through]).fetchone()[0]
            # The checkpoint is chained first (it vouches for what follows), then the prefix goes.
            wh._append_audit([
                {"actor": "retention", "action": CHECKPOINT_ACTION, "subject": "audit_log", "at": now,
                 "detail": {"removed_through_seq": int(through), "removed_through_hash": last_hash,
                            "rows": int(n), "cutoff": cutoff.isoformat()}}
            ])
            wh.con.execute("DELETE FROM audit_log WHERE seq <= ?", [through])
            wh._commit()
        except BaseException:
            wh._rollback()
            raise
    return step


def compact_lake(wh, now: datetime) -> dict[str, int]:
    """DuckLake maintenance as configured; returns counts per operation.

    Each call takes the writer lock, so the pipeline waits at most for one call.
    """
    cfg = wh.config.compaction
    out: dict[str, int] = {}
    cat = _connect.CATALOG

    def call(name: str, sql: str, params: list) -> None:
        with _connect.writer_lock(wh.layout.lock_file, wh.config.writer_lock_timeout_s):
            try:
                out[name] = len(wh.con.execute(sql, params).fetchall())
            except Exception as exc:  # noqa: BLE001 - maintenance is best effort, reported
                out[name] = -1
                wh.compaction_errors = getattr(wh, "compaction_errors", []) + [f"{name}: {exc}"]

    if cfg.flush_inlined:
        call("flush_inlined_data", "CALL ducklake_flush_inlined_data(?)", [cat])
    if cfg.merge_adjacent_files:
        call("merge_adjacent_files", "CALL ducklake_merge_adjacent_files(?)", [cat])
        call("rewrite_data_files", "CALL ducklake_rewrite_data_files(?)", [cat])
    call(
        "expire_snapshots",
        "CALL ducklake_expire_snapshots(?, older_than => ?)",
        [cat, now - timedelta(days=cfg.expire_snapshots_older_than_days)],
    )
    call(
        "cleanup_old_files",
        "CALL ducklake_cleanup_old_files(?, older_than => ?)",
        [cat, now - timedelta(days=cfg.cleanup_files_older_than_days)],
    )
    return out


# --- stats ---------------------------------------------------------------------


def table_stats(wh) -> list[dict]:
    """Rows and bytes per table with its tier.

    ``bytes`` counts Parquet data and delete files; rows still inlined in the catalog
    are counted in ``rows`` but their bytes are in the catalog file (see :func:`catalog_bytes`).
    """
    info = {
        r[0]: (int(r[1]), int(r[2]), int(r[3]))
        for r in wh.con.execute(
            "SELECT table_name, file_count, file_size_bytes, delete_file_size_bytes FROM ducklake_table_info(?)",
            [_connect.CATALOG],
        ).fetchall()
    }
    out = []
    for table in wh.tables():
        rows = int(wh.con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # name from the catalog
        files, data_b, del_b = info.get(table, (0, 0, 0))
        tier = TIERS.get(table, ("-", ""))[0]
        out.append({"table": table, "tier": tier, "rows": rows, "files": files, "bytes": data_b + del_b})
    return out


def catalog_bytes(wh) -> int:
    """Size of the local SQLite catalog (with its WAL), 0 for a remote catalog."""
    f = wh.layout.sqlite_file
    if f is None:
        return 0
    return sum(os.path.getsize(p) for p in (f, Path(str(f) + "-wal")) if os.path.exists(p))
