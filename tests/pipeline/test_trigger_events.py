"""Which Prefect events a cycle's new incidents announce: one each up to a bound per rule, then one together."""

from __future__ import annotations

import json

import polars as pl
import pytest

from risklib.core import frames
from risklib.cycle.trigger_events import BATCH_ACCOUNTS_LISTED, INCIDENT_FIELDS, trigger_events


def _incidents(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    """Alert rows (account, rule, level) as the policy raises them."""
    return pl.DataFrame(
        {
            "incident_key": [f"{a}:{r}:1" for a, r, _ in rows],
            "account_id": [a for a, _, _ in rows],
            "rule": [r for _, r, _ in rows],
            "level": [lv for _, _, lv in rows],
            "metric_value": [0.05 * lv for *_, lv in rows],
            "threshold": [0.05] * len(rows),
            "trading_mode": ["ACTIVE"] * len(rows),
            "message": [f"{r} at level {lv}" for _, r, lv in rows],
            "ts": [None] * len(rows),
        },
        schema=frames.ALERTS,
    )


def test_under_the_bound_every_incident_gets_its_own_event():
    # Arrange
    new = _incidents([("A1", "drawdown", 2), ("A2", "drawdown", 3), ("A1", "var", 1)])
    # Act
    events = trigger_events(new, cycle_id="c-1", per_rule=2)
    # Assert
    assert sorted((e.event, e.resource["prefect.resource.id"]) for e in events) == [
        ("risk.trigger.drawdown", "risk.incident.A1:drawdown:1"),
        ("risk.trigger.drawdown", "risk.incident.A2:drawdown:1"),
        ("risk.trigger.var", "risk.incident.A1:var:1"),
    ]
    a2 = next(e for e in events if e.resource["prefect.resource.name"] == "A2")
    assert a2.payload == {
        "account_id": "A2", "rule": "drawdown", "level": 3, "metric_value": pytest.approx(0.15),
        "threshold": 0.05, "trading_mode": "ACTIVE", "message": "drawdown at level 3",
    }
    assert set(a2.payload) == set(INCIDENT_FIELDS)


def test_past_the_bound_the_worst_get_their_own_event_and_the_rest_share_one():
    # Arrange: 6 drawdown incidents (levels 1..3), 1 var incident
    new = _incidents([("A1", "drawdown", 1), ("A2", "drawdown", 3), ("A3", "drawdown", 2),
                      ("A4", "drawdown", 3), ("A5", "drawdown", 1), ("A6", "drawdown", 1), ("B1", "var", 4)])
    # Act
    events = trigger_events(new, cycle_id="c-7", per_rule=3)
    # Assert
    drawdown = [e for e in events if e.event == "risk.trigger.drawdown"]
    own = [e.payload["account_id"] for e in drawdown if e.resource["prefect.resource.id"].startswith("risk.incident.")]
    assert own == ["A2", "A4", "A3"]  # worst level first, then account
    (batch,) = [e for e in drawdown if e.resource["prefect.resource.id"].startswith("risk.trigger-batch.")]
    assert batch.resource == {"prefect.resource.id": "risk.trigger-batch.c-7.drawdown",
                              "prefect.resource.name": "3 more accounts"}
    assert batch.payload == {"rule": "drawdown", "level": 1, "incidents": 3, "by_level": {"1": 3},
                             "cycle_id": "c-7", "account_ids": ["A1", "A5", "A6"], "accounts_not_listed": 0}
    assert [e.payload["account_id"] for e in events if e.event == "risk.trigger.var"] == ["B1"]
    assert len(events) == 5


def test_every_new_incident_is_announced_once_whatever_the_bound():
    # Arrange
    rows = [(f"A{i:03d}", rule, 1 + i % 4) for i in range(40) for rule in ("drawdown", "var")]
    new = _incidents(rows)
    for per_rule in (0, 1, 39, 40, 41):
        # Act
        events = trigger_events(new, cycle_id="c", per_rule=per_rule)
        # Assert: each (rule, account) once, in its own event or in its rule's batch
        seen = [(e.payload["rule"], e.payload["account_id"]) for e in events if "account_id" in e.payload]
        for e in events:
            if "account_ids" in e.payload:
                seen += [(e.payload["rule"], a) for a in e.payload["account_ids"]]
                assert e.payload["incidents"] == len(e.payload["account_ids"])
                assert sum(e.payload["by_level"].values()) == e.payload["incidents"]
        assert sorted(seen) == sorted((r, a) for a, r, _ in rows)
        assert len(events) == 2 * min(per_rule, 40) + 2 * (per_rule < 40)


def test_a_batch_lists_a_bounded_number_of_accounts_and_counts_the_rest():
    # Arrange
    n = BATCH_ACCOUNTS_LISTED + 5
    new = _incidents([(f"A{i:06d}", "volatility", 2) for i in range(n)])
    # Act
    (batch,) = [e for e in trigger_events(new, cycle_id="c", per_rule=0)]
    # Assert
    assert batch.payload["incidents"] == n
    assert len(batch.payload["account_ids"]) == BATCH_ACCOUNTS_LISTED
    assert batch.payload["accounts_not_listed"] == 5
    assert len(json.dumps(batch.payload)) < 1_500_000  # the Prefect server's event size limit


def test_no_new_incidents_no_events_and_a_negative_bound_is_refused():
    assert trigger_events(_incidents([]), cycle_id="c", per_rule=5) == []
    with pytest.raises(ValueError, match="per_rule must be >= 0, got -1"):
        trigger_events(_incidents([("A", "var", 1)]), cycle_id="c", per_rule=-1)
