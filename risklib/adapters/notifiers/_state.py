"""Warehouse reads and writes of the escalation state: open incidents, acks, plans, rejections.

Every statement takes parameters; table names are fixed literals.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import polars as pl

from risklib.core import frames
from risklib.core.escalation import ACKS, NOTIFICATION_EVENTS, NOTIFICATIONS, OPEN_INCIDENTS, EscalationPlan

_OPEN_SQL = """
WITH cur AS (
    -- each incident's newest row (at the same time: resolved over acknowledged over open);
    -- arg_max costs a fraction of the equivalent row_number() window here
    SELECT unnest(arg_max(incidents, (updated_at, CASE status WHEN 'resolved' THEN 2 WHEN 'acknowledged' THEN 1 ELSE 0 END)))
    FROM incidents GROUP BY incident_key
), op AS (
    SELECT * FROM cur WHERE status <> 'resolved'
), d AS (
    SELECT n.incident_key,
           max(n.level) FILTER (WHERE n.subject IN ('first', 'update')) AS notified_level,
           max(n.tier) FILTER (WHERE n.subject <> 'resolved') AS tier,
           max(n.created_at) FILTER (WHERE n.subject IN ('first', 'update', 'escalation')) AS tier_at,
           max(n.created_at) FILTER (WHERE n.subject <> 'resolved') AS last_notified_at,
           max(n.created_at) FILTER (WHERE n.subject IN ('first', 'update')) AS level_changed_at,
           arg_max(n.reply_code, n.created_at) AS reply_code
    FROM notifications n JOIN op ON n.incident_key = op.incident_key
    WHERE n.recipient = 'dashboard' AND n.created_at >= op.opened_at
    GROUP BY n.incident_key
)
SELECT op.incident_key, op.account_id, op.rule, op.level, op.opened_at, op.status, op.episode_id,
       d.notified_level, d.tier, d.tier_at, d.last_notified_at, d.level_changed_at, d.reply_code, k.ack_at
FROM op LEFT JOIN d ON d.incident_key = op.incident_key
LEFT JOIN (SELECT incident_key, max("at") AS ack_at FROM acknowledgements GROUP BY incident_key) k
       ON k.incident_key = op.incident_key
ORDER BY op.incident_key
"""

def load_escalation_state(warehouse: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(open_incidents, acks)`` for :func:`risklib.core.escalation.plan_escalation`.

    Conversation state (notified level, tier, timers) is derived from the outbox's
    dashboard rows, so it survives restarts and needs no extra table.
    """
    df = warehouse.query(_OPEN_SQL)
    if df.height == 0:
        return frames.empty(OPEN_INCIDENTS), frames.empty(ACKS)
    open_incidents = frames.conform(df, OPEN_INCIDENTS, "open_incidents")
    acks = frames.conform(
        df.filter(pl.col("ack_at").is_not_null()).select("incident_key", pl.col("ack_at").alias("at")), ACKS, "acks"
    )
    return open_incidents, acks


def append_many(warehouse: Any, tables: Sequence[tuple[str, pl.DataFrame]], *, actor: str, action: str) -> None:
    """Append several tables in ONE transaction when the warehouse allows it, else in the order given.

    The order given is chosen so that a crash between sequential appends loses
    nothing (the next plan re-derives what is missing).
    """
    nonempty = [(t, f) for t, f in tables if f.height]
    if not nonempty:
        return
    transaction = getattr(warehouse, "_transaction", None)
    prepare_all = getattr(warehouse, "prepare_all", None)
    if transaction is not None and prepare_all is not None:
        prepared = prepare_all(dict(nonempty))  # checked together: one Polars call for all, not one each
        entry = {"actor": actor, "action": action, "subject": ",".join(prepared),
                 "detail": {"rows": {t: f.height for t, f in prepared.items()}}}
        transaction(prepared, [entry])
        return
    for table, frame in nonempty:
        warehouse.append(table, frame, actor=actor, action=action)


def record_plan(warehouse: Any, plan: EscalationPlan) -> None:
    """Write a plan (incident events, outbox rows, inhibited events) before anything is sent."""
    append_many(
        warehouse,
        [("incidents", plan.incident_events), ("notifications", plan.notifications),
         ("notification_events", plan.notification_events)],
        actor="escalation",
        action="escalation.plan",
    )


def incidents_for_code(warehouse: Any, code: str) -> list[str]:
    """Unresolved incidents a reply code speaks for (newest conversation first)."""
    df = warehouse.query(
        """
        SELECT n.incident_key, max(n.created_at) AS last_at
        FROM notifications n
        JOIN (SELECT incident_key, arg_max(status, updated_at) AS status FROM incidents GROUP BY incident_key) s
          ON s.incident_key = n.incident_key
        WHERE n.recipient = 'dashboard' AND n.reply_code = ? AND s.status <> 'resolved'
        GROUP BY n.incident_key ORDER BY last_at DESC, n.incident_key
        """,
        [code.upper()],
    )
    return df["incident_key"].to_list() if df.height else []


def known_incidents(warehouse: Any, keys: Sequence[str]) -> list[str]:
    """The subset of ``keys`` that exist and are not resolved."""
    if not keys:
        return []
    df = warehouse.query(
        "SELECT incident_key FROM incidents GROUP BY incident_key "
        "HAVING arg_max(status, updated_at) <> 'resolved' AND incident_key IN (SELECT unnest(?))",
        [list(keys)],
    )
    return sorted(df["incident_key"].to_list()) if df.height else []


def record_ack(
    warehouse: Any,
    incident_keys: Sequence[str],
    *,
    at: datetime,
    channel: str,
    operator: str,
    reply_code: str | None = None,
    recipient: str | None = None,
    source_ip: str | None = None,
) -> int:
    """Append one acknowledgement row per incident; returns the number written."""
    if not incident_keys:
        return 0
    n = len(incident_keys)
    frame = pl.DataFrame(
        {
            "incident_key": list(incident_keys),
            "reply_code": [reply_code] * n,
            "channel": [channel] * n,
            "recipient": [recipient] * n,
            "operator": [operator] * n,
            "at": [at] * n,
            "source_ip": [source_ip] * n,
        },
        schema={"incident_key": pl.String, "reply_code": pl.String, "channel": pl.String, "recipient": pl.String,
                "operator": pl.String, "at": frames.UTC_TS, "source_ip": pl.String},
    )
    warehouse.append("acknowledgements", frame, actor=operator, action="alerts.acknowledge")
    return n


def record_rejection(warehouse: Any, *, at: datetime, endpoint: str, reason: str, remote: str | None, payload: bytes) -> None:
    """Record a refused webhook: where, why, from where, and a digest of the body (the body is not kept)."""
    frame = pl.DataFrame(
        {"at": [at], "endpoint": [endpoint], "reason": [reason], "remote": [remote],
         "payload_digest": [hashlib.sha256(payload).hexdigest()]},
        schema={"at": frames.UTC_TS, "endpoint": pl.String, "reason": pl.String, "remote": pl.String,
                "payload_digest": pl.String},
    )
    warehouse.append("webhook_rejections", frame, actor="api", action="webhook.reject")


def record_events(warehouse: Any, rows: Sequence[dict]) -> None:
    """Append ``notification_events`` rows (dicts with any subset of the columns)."""
    if not rows:
        return
    full = [{c: r.get(c) for c in NOTIFICATION_EVENTS} for r in rows]
    warehouse.append("notification_events", pl.DataFrame(full, schema=NOTIFICATION_EVENTS), actor="escalation",
                     action="notification." + rows[0].get("event", "event"))


def empty_notifications() -> pl.DataFrame:
    return frames.empty(NOTIFICATIONS)


_INCIDENT_VIEW_SQL = """
WITH cur AS (
    SELECT incident_key, arg_max(account_id, updated_at) AS account_id, arg_max(rule, updated_at) AS rule,
           arg_max(level, updated_at) AS level, max(level) AS max_level, min(opened_at) AS first_opened_at,
           arg_max(opened_at, updated_at) AS opened_at, max(updated_at) AS updated_at,
           arg_max(status, updated_at) AS status, max(resolved_at) AS resolved_at
    FROM incidents GROUP BY incident_key
), k AS (
    SELECT a.incident_key, min(a."at") AS acknowledged_at, arg_min(a.operator, a."at") AS acknowledged_by,
           arg_min(a.channel, a."at") AS ack_channel
    FROM acknowledgements a JOIN cur ON cur.incident_key = a.incident_key AND a."at" >= cur.opened_at
    GROUP BY a.incident_key
)
SELECT cur.incident_key, cur.account_id, cur.rule, cur.level, cur.max_level, cur.status, cur.opened_at,
       cur.updated_at, cur.resolved_at, k.acknowledged_at, k.acknowledged_by, k.ack_channel,
       epoch(k.acknowledged_at) - epoch(cur.opened_at) AS time_to_ack_s
FROM cur LEFT JOIN k ON k.incident_key = cur.incident_key
"""


def incident_view(warehouse: Any, *, active: bool, limit: int = 100, since: datetime | None = None) -> pl.DataFrame:
    """Incidents with who acknowledged, when, through which channel, and time-to-acknowledge (seconds).

    ``active=True``: unresolved only, highest level first. Otherwise the history,
    newest first, optionally only those opened at or after ``since``.
    """
    if active:
        sql = _INCIDENT_VIEW_SQL + " WHERE cur.status <> 'resolved' ORDER BY cur.level DESC, cur.opened_at LIMIT ?"
        return warehouse.query(sql, [int(limit)])
    sql = _INCIDENT_VIEW_SQL + " WHERE cur.opened_at >= ? ORDER BY cur.updated_at DESC LIMIT ?"
    return warehouse.query(sql, [since or datetime(1970, 1, 1, tzinfo=timezone.utc), int(limit)])


#: Tables the escalation state and the outbox are derived from.
ESCALATION_TABLES = ("incidents", "notifications", "notification_events", "acknowledgements")
# What load_escalation_state reads (_OPEN_SQL): a write of notification_events alone (a send's
# outcome) leaves the open-incident state as it was.
OPEN_STATE_TABLES = ("incidents", "notifications", "acknowledgements")


class EscalationStateCache:
    """:func:`load_escalation_state`, re-read only when one of its tables was written.

    ``watch`` is a :class:`risklib.adapters.warehouse.ChangeWatch` (or anything with
    its ``changed``/``forget``). The state is plain data from the warehouse, so a
    cached copy is exactly what the query would return while no table changed;
    timers are computed from ``now`` by the planner, not stored here.
    """

    def __init__(self, watch: Any) -> None:
        self.watch = watch
        self._state: tuple[pl.DataFrame, pl.DataFrame] | None = None
        self.reloaded = True  # whether the last load() read the tables again
        self._quiet: tuple[object, datetime | None] | None = None  # (alerts key, quiet_until) of the last empty plan
        self._lock = threading.Lock()  # a prefetch on another thread and the cycle's load read once between them

    def load(self, warehouse: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
        with self._lock:
            self._read_if_changed(warehouse)
            return self._state

    def prefetch(self, warehouse: Any) -> bool:
        """Read the state again now if a write changed it, so the next :meth:`load` finds it read
        (the monitor calls this in the gap after a cycle that wrote escalation rows). Returns
        whether it read; an error is left for that next load to raise."""
        with self._lock:
            try:
                return self._read_if_changed(warehouse)
            except Exception:  # noqa: BLE001 - the cycle's own load reads again and raises it there
                return False

    def _read_if_changed(self, warehouse: Any) -> bool:
        """Re-read the state when one of its tables was written (caller holds the lock); True if it read."""
        changed = self.watch.changed("escalation.state", OPEN_STATE_TABLES)
        self.reloaded = changed or self._state is None
        if self.reloaded:
            self._quiet = None
            try:
                self._state = load_escalation_state(warehouse)
            except Exception:
                self.watch.forget("escalation.state")
                self._state = None
                raise
        return self.reloaded

    def plan(self, now: datetime, alerts: pl.DataFrame, config: Any, warehouse: Any):
        """:func:`plan_escalation` over the cached state, skipped while it would surely plan nothing.

        An empty plan depends only on the state, on which incidents fire at which
        level, and on ``now`` through the escalation and repeat timers; so while the
        state is unchanged, the same incidents fire at the same levels and no timer
        is due (``EscalationPlan.quiet_until``), the plan is empty again.
        """
        from risklib.core.escalation import plan_escalation

        open_incidents, acks = self.load(warehouse)
        key = _alerts_key(alerts)
        quiet = self._quiet
        if quiet is not None and quiet[0] == key and (quiet[1] is None or now < quiet[1]):
            return _EMPTY_PLAN()
        plan = plan_escalation(now, alerts, open_incidents, acks, config)
        self._quiet = (key, plan.quiet_until) if plan.empty else None
        return plan


def _alerts_key(alerts: pl.DataFrame) -> object:
    """What an empty plan depends on in the alerts: each incident's highest level."""
    if alerts.height == 0:
        return ()
    top = alerts.group_by("incident_key").agg(pl.col("level").max()).sort("incident_key")
    return (tuple(top["incident_key"].to_list()), tuple(top["level"].to_list()))


def _EMPTY_PLAN():
    from risklib.core.escalation import INCIDENT_EVENTS, EscalationPlan

    return EscalationPlan(frames.empty(INCIDENT_EVENTS), frames.empty(NOTIFICATIONS), frames.empty(NOTIFICATION_EVENTS))


def run_escalation(
    warehouse: Any, sender: Any, alerts: pl.DataFrame, config: Any, now: datetime, *,
    state: EscalationStateCache | None = None, dispatcher: Any = None,
):
    """The escalate stage in one call: load state, plan, record + send the new messages, drain the rest.

    ``state`` (optional) caches the open incidents between cycles that changed nothing.
    ``dispatcher`` (optional, a :class:`PageDispatcher`): the plan is recorded here and
    its messages are sent, and the outbox drained, on the dispatcher's thread.

    Returns
    -------
    tuple[EscalationPlan, DrainReport, DrainReport]
        The plan, what the fast path sent (with a dispatcher: what it recorded and
        handed over), what the drain of older messages did (with a dispatcher: what
        it delivered and drained since the previous call).
    """
    from risklib.core.escalation import plan_escalation

    if state is not None:
        plan = state.plan(now, alerts, config, warehouse)
    else:
        plan = plan_escalation(now, alerts, *load_escalation_state(warehouse), config)
    if dispatcher is None:
        fast = sender.send_plan(plan, now)
        rest = sender.drain(now)
        return plan, fast, rest
    planned = sender.record_sends(plan, now)
    dispatcher.submit(planned)
    fast = planned.report
    fast.dispatched.extend(planned.ids)
    return plan, fast, dispatcher.take_report()
