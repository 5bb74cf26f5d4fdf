"""What operators change while the monitor runs: emergency requests, thresholds, restarts."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
import pytest

from flows.monitor import risk_monitor
from risklib.core import frames
from risklib.cycle.session import Session

pytestmark = pytest.mark.integration


def _request(session, request_id: str, account: str, action: str, fraction: float, at) -> None:
    row = pl.DataFrame(
        {
            "request_id": [request_id], "account_id": [account], "action": [action], "fraction": [fraction],
            "operator": ["alice"], "authority_level": [3], "reason": ["desk asked to cut"], "requested_at": [at],
        },
        schema_overrides={"requested_at": frames.UTC_TS},
    )
    session.warehouse.append("manual_action_requests", row, actor="alice", action="emergency.request")


def test_an_operator_request_is_executed_once_and_recorded_as_manual(prefect_api, make_session):
    # Arrange
    session = make_session("calm", accounts=6, seed=21)
    risk_monitor(session, max_cycles=1)
    account = session.broker.positions()["account_id"][0]
    before = session.broker.positions().filter(pl.col("account_id") == account)["quantity"].abs().sum()
    _request(session, "r-1", account, "CLOSE_ALL", 1.0, session.clock.now())
    # Act
    risk_monitor(session, max_cycles=3)
    # Assert
    rows = session.warehouse.query(
        "SELECT idempotency_key, account_id, action_taken, manual_override, operator_id, trigger_type "
        "FROM emergency_actions WHERE idempotency_key LIKE 'manual:%'"
    )
    assert rows.height == 1
    row = rows.row(0, named=True)
    assert row == {
        "idempotency_key": "manual:r-1", "account_id": account, "action_taken": "CLOSE_ALL",
        "manual_override": True, "operator_id": "alice", "trigger_type": "manual",
    }
    orders = session.warehouse.query("SELECT count(*) AS n FROM broker_orders WHERE idempotency_key = 'manual:r-1'")
    assert orders["n"][0] >= 1
    # the cycle's account rows say what was done to each account, and only to that one
    taken = dict(session.warehouse.query(
        "SELECT m.account_id, m.actions_taken FROM realtime_risk_metrics m "
        "JOIN emergency_actions e USING (cycle_id) WHERE e.idempotency_key = 'manual:r-1'"
    ).iter_rows())
    assert len(taken) == 6
    assert taken[account] == "CLOSE_ALL 100%"
    assert [a for a, done in taken.items() if done is not None] == [account]
    after = session.broker.positions().filter(pl.col("account_id") == account)["quantity"].abs().sum()
    assert before > 0 and after < before


def test_a_recorded_threshold_change_applies_from_the_next_cycle(prefect_api, make_session):
    # Arrange: calm books sit well inside the green VaR zone (< 0.1 %)
    session = make_session("calm", accounts=6, seed=22)
    risk_monitor(session, max_cycles=1)
    assert session.warehouse.query("SELECT count(*) AS n FROM alerts WHERE rule = 'var'")["n"][0] == 0
    change = pl.DataFrame(
        {
            "key": ["policy.var.levels[0].threshold"], "old_value": [json.dumps(0.001)], "new_value": [json.dumps(0.00001)],
            "operator": ["cro"], "reason": ["test the yellow zone"], "at": [session.clock.now()],
        },
        schema_overrides={"at": frames.UTC_TS},
    )
    session.warehouse.append("threshold_changes", change, actor="cro", action="threshold.change")
    # Act
    risk_monitor(session, max_cycles=1)
    # Assert
    assert session.config.policy.var.levels[0].threshold == pytest.approx(0.00001)
    var_alerts = session.warehouse.query("SELECT DISTINCT account_id FROM alerts WHERE rule = 'var'")
    assert var_alerts.height >= 1


def test_a_restart_resumes_the_halt_from_the_warehouse(prefect_api, make_session, tmp_path, fast_config):
    # Arrange: a crash halts the book, then the process "restarts" on the same warehouse
    wh = tmp_path / "restart-wh"
    first = make_session("flash-crash", accounts=8, seed=23, warehouse=wh)
    risk_monitor(first, max_sim_seconds=1200, max_cycles=6)
    halted = first.state.filter(pl.col("trading_mode") != "ACTIVE")["account_id"].to_list()
    episodes = dict(first.state.select("account_id", "episode_id").iter_rows())
    first.close()
    assert halted
    # Act
    second = Session.build(
        config=fast_config, scenario="calm", accounts=8, seed=23, speed=1e9, warehouse=wh,
        start=first.clock.now() + timedelta(seconds=60), resume=True,
    )
    try:
        risk_monitor(second, max_cycles=1)
        # Assert: still not ACTIVE, same episode: a restart never clears a halt
        state = second.state.filter(pl.col("account_id").is_in(halted))
        assert set(state["trading_mode"].to_list()) <= {"REDUCE_ONLY", "HALTED", "FLATTEN"}
        assert all(episodes[a] == e for a, e in state.select("account_id", "episode_id").iter_rows())
    finally:
        second.close()
