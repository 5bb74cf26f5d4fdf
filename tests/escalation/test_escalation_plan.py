"""Pure escalation rules: channels per level, conversations, chains, inhibition, grouping."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from esc_builders import T0, MemoryWarehouse, acks, alerts, no_acks, no_alerts, no_open, provider_rows
from risklib.adapters.notifiers import load_escalation_state, record_plan
from risklib.core.escalation import EscalationConfig, plan_escalation
from risklib.errors import DataError

CFG = EscalationConfig()


def run_cycles(steps, config=CFG):
    """Plan a sequence of cycles against an in-memory warehouse; returns the plans."""
    wh = MemoryWarehouse()
    plans = []
    for now, alert_frame, ack_frame in steps:
        if ack_frame is not None and ack_frame.height:
            wh.append("acknowledgements", ack_frame.with_columns(pl.lit("api").alias("channel"), pl.lit("op").alias("operator")),
                      actor="t", action="t")
        open_, ack = load_escalation_state(wh)
        plan = plan_escalation(now, alert_frame, open_, ack, config)
        record_plan(wh, plan)
        plans.append(plan)
    return plans, wh


@pytest.mark.parametrize(
    ("level", "channels"),
    [(1, {"email"}), (2, {"sms"}), (3, {"voice", "sms"}), (4, {"voice", "sms", "email"}), (5, {"voice", "sms", "email"})],
)
def test_each_level_reaches_exactly_its_channels(level, channels):
    # Arrange
    frame = alerts([("A1", level)])
    # Act
    plan = plan_escalation(T0, frame, no_open(), no_acks(), CFG)
    # Assert
    assert set(provider_rows(plan)["channel"].to_list()) == channels
    dash = plan.notifications.filter(pl.col("recipient") == "dashboard")
    assert dash.height == 1 and dash["incident_key"][0] == "A1:drawdown:e1"


def test_level_5_notifies_management_and_everyone_at_once():
    # Arrange
    frame = alerts([("A1", 5)])
    # Act
    plan = plan_escalation(T0, frame, no_open(), no_acks(), CFG)
    # Assert
    teams = set(provider_rows(plan)["team"].to_list())
    assert teams == {"risk", "trading", "technical", "management"}


def test_level_2_goes_to_risk_and_senior_management_not_trading():
    # Arrange / Act
    plan = plan_escalation(T0, alerts([("A1", 2)]), no_open(), no_acks(), CFG)
    # Assert
    rows = provider_rows(plan)
    assert set(rows["team"].to_list()) == {"risk", "management"}
    assert set(rows["recipient"].to_list()) == {"+15555550101", "+15555550104"}


def test_an_incident_is_one_conversation_not_a_page_per_cycle():
    # Arrange
    steps = [(T0 + timedelta(seconds=30 * i), alerts([("A1", 3)], now=T0 + timedelta(seconds=30 * i)), None) for i in range(5)]
    # Act
    plans, _ = run_cycles(steps)
    # Assert
    assert provider_rows(plans[0]).height == 4  # 2 people x (voice, sms)
    assert [provider_rows(p).height for p in plans[1:]] == [0, 0, 0, 0]


def test_level_rise_sends_an_update_and_resolution_is_sent_once():
    # Arrange
    t1, t2, t3, t4 = (T0 + timedelta(seconds=s) for s in (0, 30, 60, 90))
    steps = [(t1, alerts([("A1", 2)]), None), (t2, alerts([("A1", 3)]), None), (t3, no_alerts(), None), (t4, no_alerts(), None)]
    # Act
    plans, _ = run_cycles(steps)
    # Assert
    kinds = [sorted({k.split(":")[0] for k in provider_rows(p)["dedup_key"].to_list()}) for p in plans]
    assert kinds == [["first"], ["update"], ["resolved"], []]
    assert plans[2].incident_events["status"].to_list() == ["resolved"]
    assert "voice" not in provider_rows(plans[2])["channel"].to_list()  # no phone call to say it is over


def test_level_falling_then_rising_back_does_not_renotify():
    # Arrange
    steps = [(T0, alerts([("A1", 3)]), None), (T0 + timedelta(seconds=30), alerts([("A1", 2)]), None),
             (T0 + timedelta(seconds=60), alerts([("A1", 3)]), None)]
    # Act
    plans, _ = run_cycles(steps)
    # Assert
    assert [provider_rows(p).height for p in plans[1:]] == [0, 0]
    assert plans[1].incident_events["level"].to_list() == [2]


def test_unacknowledged_incident_escalates_to_next_tier_after_the_wait():
    # Arrange
    wait = CFG.levels[3].ack_wait_s
    before, after = T0 + timedelta(seconds=wait - 1), T0 + timedelta(seconds=wait)
    steps = [(T0, alerts([("A1", 3)]), None), (before, alerts([("A1", 3)], now=before), None), (after, alerts([("A1", 3)], now=after), None)]
    # Act
    plans, _ = run_cycles(steps)
    # Assert
    assert provider_rows(plans[1]).height == 0
    esc = provider_rows(plans[2])
    assert set(esc["team"].to_list()) == {"trading"} and set(esc["tier"].to_list()) == {2}
    assert all(b.startswith("ESC T2") for b in esc.filter(pl.col("channel") == "sms")["body"].to_list())


def test_acknowledgement_stops_the_chain_and_repeats():
    # Arrange
    wait = CFG.levels[3].ack_wait_s
    t_ack = T0 + timedelta(seconds=10)
    steps = [
        (T0, alerts([("A1", 3)]), None),
        (T0 + timedelta(seconds=20), alerts([("A1", 3)]), acks(["A1:drawdown:e1"], t_ack)),
        (T0 + timedelta(seconds=wait * 5), alerts([("A1", 3)]), None),
    ]
    # Act
    plans, _ = run_cycles(steps)
    # Assert
    assert plans[1].incident_events["status"].to_list() == ["acknowledged"]
    assert provider_rows(plans[2]).height == 0


def test_repeat_interval_renotifies_the_notified_tiers_while_open():
    # Arrange: level 1 never escalates; use level 2 with a short repeat and no next tiers.
    cfg = CFG.model_copy(update={"levels": CFG.levels | {2: CFG.levels[2].model_copy(update={"tiers": (("risk",),), "repeat_interval_s": 60.0})}})
    steps = [(T0, alerts([("A1", 2)]), None), (T0 + timedelta(seconds=59), alerts([("A1", 2)]), None),
             (T0 + timedelta(seconds=61), alerts([("A1", 2)]), None), (T0 + timedelta(seconds=62), alerts([("A1", 2)]), None)]
    # Act
    plans, _ = run_cycles(steps, cfg)
    # Assert
    assert [provider_rows(p).height for p in plans] == [1, 0, 1, 0]
    assert provider_rows(plans[2])["body"][0].startswith("REPEAT")


def test_level_4_incident_inhibits_lower_noise_for_the_same_account_only():
    # Arrange
    frame = alerts([("A1", 4, "drawdown"), ("A1", 2, "volatility"), ("A2", 2, "volatility")])
    # Act
    plan = plan_escalation(T0, frame, no_open(), no_acks(), CFG)
    # Assert
    held = set(plan.notification_events["notification_id"].to_list())
    rows = provider_rows(plan)
    inhibited = rows.filter(pl.col("notification_id").is_in(list(held)))
    assert inhibited.height > 0
    assert set(inhibited["level"].to_list()) == {2}
    assert "A2" not in " ".join(inhibited["body"].to_list())
    assert set(plan.notification_events["event"].to_list()) == {"inhibited"}


def test_summary_counts_messages_sent_apart_from_held_ones_and_dashboard_rows():
    # Arrange: a level-4 incident holds back the same account's level-2 noise
    frame = alerts([("A1", 4, "drawdown"), ("A1", 2, "volatility"), ("A2", 2, "volatility")])
    plan = plan_escalation(T0, frame, no_open(), no_acks(), CFG)
    held = set(plan.notification_events["notification_id"].to_list())
    rows = provider_rows(plan)
    # Act
    summary = plan.summary()
    # Assert
    assert held and rows.height > len(held)
    assert summary == {
        "incident_events": plan.incident_events.height,
        "messages": rows.height - len(held),
        "inhibited": len(held),
        "dashboard_rows": plan.notifications.height - rows.height,
    }
    assert summary["dashboard_rows"] >= 3  # one per incident at least
    assert plan.n_messages == summary["messages"]


def test_an_empty_plan_summarises_to_zeros():
    # Arrange / Act
    plan = plan_escalation(T0, no_alerts(), no_open(), no_acks(), CFG)
    # Assert
    assert plan.summary() == {"incident_events": 0, "messages": 0, "inhibited": 0, "dashboard_rows": 0}


def test_market_wide_shock_of_1000_accounts_is_one_message_per_recipient_and_channel():
    # Arrange
    frame = alerts([(f"A{i:04d}", 3) for i in range(1000)])
    # Act
    plan = plan_escalation(T0, frame, no_open(), no_acks(), CFG)
    # Assert
    rows = provider_rows(plan)
    assert rows.height == 4  # (risk manager, CRO) x (voice, sms)
    assert rows.select(pl.struct("recipient", "channel").is_unique().all()).item()
    assert plan.notifications.filter(pl.col("recipient") == "dashboard").height == 1000
    sms = rows.filter(pl.col("channel") == "sms")["body"][0]
    assert "1000 accts" in sms and len(sms) <= 160


def test_outbox_rows_are_created_now_and_only_provider_messages_are_due():
    # Arrange: one single-account message and one grouped market-wide message
    frame = alerts([("A1", 4, "drawdown")] + [(f"B{i:03d}", 3, "volatility") for i in range(30)])
    # Act
    plan = plan_escalation(T0, frame, no_open(), no_acks(), CFG)
    # Assert
    rows = plan.notifications
    dashboard = rows.filter(pl.col("recipient") == "dashboard")
    provider = provider_rows(plan)
    assert provider.height > 0 and dashboard.height == 31
    assert rows["created_at"].to_list() == [T0] * rows.height
    assert provider["not_before"].to_list() == [T0] * provider.height  # due at once
    assert dashboard["not_before"].null_count() == dashboard.height  # membership rows: never sent


def test_group_gaining_a_member_notifies_only_the_newcomer():
    # Arrange
    t1 = T0 + timedelta(seconds=30)
    steps = [(T0, alerts([("A1", 3), ("A2", 3)]), None), (t1, alerts([("A1", 3), ("A2", 3), ("A3", 3)], now=t1), None)]
    # Act
    plans, _ = run_cycles(steps)
    # Assert
    second = provider_rows(plans[1])
    assert second.height == 4
    bodies = " ".join(second.filter(pl.col("channel") == "sms")["body"].to_list())
    assert "A3" in bodies and "A1" not in bodies


def test_replanning_the_same_state_gives_the_same_dedup_keys():
    # Arrange: incidents recorded as open but their messages never written (replanned later).
    from risklib.core.escalation import OPEN_INCIDENTS

    frame = alerts([("A1", 3), ("A2", 3)])
    opened = pl.DataFrame(
        [dict(incident_key=f"{a}:drawdown:e1", account_id=a, rule="drawdown", level=3, opened_at=T0, status="open",
              episode_id="e1") for a in ("A1", "A2")]
    ).with_columns([pl.lit(None).alias(c) for c in OPEN_INCIDENTS if c not in ("incident_key", "account_id", "rule", "level", "opened_at", "status", "episode_id")])
    opened = opened.select([pl.col(c).cast(t) for c, t in OPEN_INCIDENTS.items()])
    # Act
    a = plan_escalation(T0 + timedelta(seconds=1), frame, opened, no_acks(), CFG)
    b = plan_escalation(T0 + timedelta(seconds=2), frame, opened, no_acks(), CFG)
    # Assert
    assert sorted(provider_rows(a)["dedup_key"].to_list()) == sorted(provider_rows(b)["dedup_key"].to_list())


def test_naive_now_is_refused():
    # Arrange
    naive = T0.replace(tzinfo=None)
    # Act / Assert
    with pytest.raises(DataError, match=r"now=datetime.datetime\(2026, 3, 2, 9, 0\): must be timezone-aware"):
        plan_escalation(naive, no_alerts(), no_open(), no_acks(), CFG)


def test_reopened_incident_is_a_new_conversation_not_a_duplicate():
    # Arrange: same incident key fires, resolves, and fires again.
    t1, t2 = T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)
    steps = [(T0, alerts([("A1", 3)]), None), (t1, no_alerts(), None), (t2, alerts([("A1", 3)], now=t2), None)]
    # Act
    plans, _ = run_cycles(steps)
    # Assert
    first, again = provider_rows(plans[0]), provider_rows(plans[2])
    assert again.height == first.height == 4
    assert set(first["dedup_key"].to_list()).isdisjoint(again["dedup_key"].to_list())
    assert plans[2].incident_events["status"].to_list() == ["open"]


def test_a_quiet_cycle_plans_nothing_with_the_same_frame_schemas_as_a_busy_one():
    # Arrange: a busy plan shows the schemas the outbox writer expects
    busy = plan_escalation(T0, alerts([("A1", 3)]), no_open(), no_acks(), CFG)
    # Act
    quiet = plan_escalation(T0, no_alerts(), no_open(), no_acks(), CFG)
    # Assert
    for name in ("incident_events", "notifications", "notification_events"):
        q, b = getattr(quiet, name), getattr(busy, name)
        assert q.height == 0, name
        assert q.schema == b.schema, name
    assert busy.notifications.height > 0
