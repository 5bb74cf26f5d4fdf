"""The ``risk.trigger.<rule>`` events a cycle's new incidents announce, bounded per rule.

Every incident opened in a cycle is announced to Prefect so operators can hang
Automations on ``risk.trigger.<rule>``. A market-wide move opens one incident
per account for the same rule: at 10,000 accounts, an event each took the
monitor 1.3-1.5 s (1.0-1.1 s of CPU) to emit before the next cycle could start,
and sending them took the CPU the cycles after it needed (``bench pipeline``,
10,000 accounts: cycle p99 1.15-1.35 s with them, 0.66-0.80 s bounded).
So a rule announces its ``per_rule`` worst new incidents one event each and
the rest of them in one more event of the same name, which lists their
accounts. An Automation on ``risk.trigger.<rule>`` fires either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

#: What an incident's own event carries (the alert as the policy raised it).
INCIDENT_FIELDS = ("account_id", "rule", "level", "metric_value", "threshold", "trading_mode", "message")

#: Accounts a batch event lists at most: 10,000 ids are ~150 KB of JSON, well under the
#: Prefect server's event size limit (1.5 MB), and the warehouse's ``incidents`` has them all.
BATCH_ACCOUNTS_LISTED = 10_000


@dataclass(frozen=True)
class TriggerEvent:
    """One Prefect event: ``emit_event(event=..., resource=..., payload=...)``."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any]


def trigger_events(new_incidents: pl.DataFrame, *, cycle_id: str, per_rule: int) -> list[TriggerEvent]:
    """The events announcing ``new_incidents`` (alert rows whose incident opened this cycle).

    Per rule, worst level first (then account): the first ``per_rule`` incidents get an event
    each, resource ``risk.incident.<incident_key>``; the others, if any, one event together,
    resource ``risk.trigger-batch.<cycle_id>.<rule>``, whose payload counts them by level and
    lists their accounts (at most :data:`BATCH_ACCOUNTS_LISTED`).
    """
    if per_rule < 0:
        raise ValueError(f"per_rule must be >= 0, got {per_rule!r}")
    events: list[TriggerEvent] = []
    if new_incidents.is_empty():
        return events
    ordered = new_incidents.sort(["rule", "level", "account_id"], descending=[False, True, False])
    for (rule,), group in ordered.group_by("rule", maintain_order=True):
        own, rest = group.head(per_rule), group.slice(per_rule)
        for row in own.select("incident_key", *INCIDENT_FIELDS).iter_rows(named=True):
            events.append(TriggerEvent(
                event=f"risk.trigger.{rule}",
                resource={"prefect.resource.id": f"risk.incident.{row['incident_key']}",
                          "prefect.resource.name": row["account_id"]},
                payload={k: row[k] for k in INCIDENT_FIELDS},
            ))
        if rest.height:
            events.append(_batch_event(rule, rest, cycle_id))
    return events


def _batch_event(rule: str, rest: pl.DataFrame, cycle_id: str) -> TriggerEvent:
    levels = rest.group_by("level").len().sort("level", descending=True)
    listed = rest["account_id"].head(BATCH_ACCOUNTS_LISTED).to_list()
    return TriggerEvent(
        event=f"risk.trigger.{rule}",
        resource={"prefect.resource.id": f"risk.trigger-batch.{cycle_id}.{rule}",
                  "prefect.resource.name": f"{rest.height} more accounts"},
        payload={
            "rule": rule,
            "level": int(rest["level"].max()),  # the worst, as an incident's own event gives its level
            "incidents": rest.height,
            "by_level": {str(level): n for level, n in levels.iter_rows()},
            "cycle_id": cycle_id,
            "account_ids": listed,
            "accounts_not_listed": rest.height - len(listed),
        },
    )
