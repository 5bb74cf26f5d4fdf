"""Operator emergency requests → cycle actions: validation, once-only execution (pure)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risklib.core import frames
from risklib.core.manual import MANUAL_ACTIONS, REQUESTS, check_manual_request, pending_manual_actions

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def requests(*rows) -> pl.DataFrame:
    """rows: (request_id, account_id, action, fraction, seconds before NOW)."""
    return pl.DataFrame(
        {
            "request_id": [r[0] for r in rows],
            "account_id": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "fraction": [r[3] for r in rows],
            "operator": ["alice"] * len(rows),
            "authority_level": [2] * len(rows),
            "reason": ["flash crash"] * len(rows),
            "requested_at": [NOW - timedelta(seconds=r[4]) for r in rows],
        },
        schema=REQUESTS,
    )


@pytest.mark.parametrize(
    ("action", "fraction", "level", "code", "text"),
    [
        ("SELL_ALL", 0.5, 3, "INVALID_REQUEST", r"action='SELL_ALL': must be one of"),
        ("REDUCE", 0.0, 3, "INVALID_REQUEST", r"fraction=0.0: REDUCE needs a fraction in \(0, 1\]"),
        ("REDUCE", 1.5, 3, "INVALID_REQUEST", r"fraction=1.5: REDUCE needs a fraction in \(0, 1\]"),
        ("CLOSE_ALL", 0.5, 3, "INVALID_REQUEST", r"fraction=0.5: CLOSE_ALL closes everything"),
        ("HALT_ALL", 0.3, 3, "INVALID_REQUEST", r"fraction=0.3: HALT_ALL cuts nothing"),
        ("RESUME", 0.0, 4, "AUTHORITY", r"authority_level=4: RESUME needs >= 5"),
        ("REDUCE", 0.5, 0, "AUTHORITY", r"authority_level=0: must be 1-5"),
    ],
)
def test_check_manual_request_refuses_with_field_and_value(action, fraction, level, code, text):
    # Act
    why = check_manual_request(action, fraction, level, "alice", "why")
    # Assert
    assert why is not None and why.code == code
    assert re.search(text, why.message)


def test_check_manual_request_needs_operator_and_reason():
    assert check_manual_request("REDUCE", 0.5, 1, " ", "why").message == "operator=' ': required"
    assert check_manual_request("REDUCE", 0.5, 1, "alice", "").message == "reason='': required"


def test_protective_actions_need_only_level_1_and_resume_level_5():
    assert all(check_manual_request(a, f, 1, "a", "r") is None
               for a, f in [("REDUCE", 0.5), ("CLOSE", 0.5), ("CLOSE_ALL", 1.0), ("HALT_ENTRIES", 0.0), ("HALT_ALL", 0.0)])
    assert check_manual_request("RESUME", 0.0, 5, "a", "r") is None


def test_pending_rows_are_actions_shaped_and_name_the_operator():
    # Arrange
    req = requests(("r1", "A1", "REDUCE", 0.5, 30), ("r2", "A2", "HALT_ALL", 0.0, 10))
    # Act
    out = pending_manual_actions(req, set(), NOW)
    # Assert
    assert out.schema == pl.Schema(frames.ACTIONS)
    assert out["idempotency_key"].to_list() == ["manual:r1", "manual:r2"]
    assert out["incident_key"].to_list() == ["manual:r1", "manual:r2"]
    assert out["fraction"].to_list() == [0.5, 0.0]
    assert out["reason"][0] == "manual REDUCE by alice (authority level 2): flash crash"
    assert out["ts"].to_list() == [NOW, NOW]


def test_executed_keys_are_left_out_and_future_requests_wait():
    # Arrange
    req = requests(("r1", "A1", "REDUCE", 0.5, 30), ("r2", "A2", "CLOSE_ALL", 1.0, 10), ("r3", "A1", "HALT_ALL", 0.0, -5))
    # Act
    out = pending_manual_actions(req, {"manual:r1"}, NOW)
    # Assert
    assert out["idempotency_key"].to_list() == ["manual:r2"]


def test_star_request_expands_per_account_and_each_account_acts_once():
    # Arrange
    req = requests(("r9", "*", "HALT_ENTRIES", 0.0, 1))
    # Act
    first = pending_manual_actions(req, set(), NOW, accounts=["A1", "A2"])
    second = pending_manual_actions(req, {"manual:r9:A1"}, NOW, accounts=["A1", "A2"])
    unexpanded = pending_manual_actions(req, set(), NOW)
    # Assert
    assert first.select("account_id", "idempotency_key").rows() == [("A1", "manual:r9:A1"), ("A2", "manual:r9:A2")]
    assert second["account_id"].to_list() == ["A2"]
    assert unexpanded.select("account_id", "idempotency_key").rows() == [("*", "manual:r9")]


def test_a_request_recorded_twice_acts_once():
    req = requests(("r1", "A1", "REDUCE", 0.5, 30), ("r1", "A1", "REDUCE", 0.5, 30))
    assert pending_manual_actions(req, set(), NOW).height == 1


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match=r"now=.*: must be timezone-aware"):
        pending_manual_actions(requests(("r1", "A1", "REDUCE", 0.5, 1)), set(), NOW.replace(tzinfo=None))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A1", "A2", "*"]), st.sampled_from(MANUAL_ACTIONS), st.integers(-20, 600)),
        min_size=0, max_size=12,
    ),
    st.data(),
)
def test_property_every_request_executes_exactly_once(rows, data):
    # Arrange: a cycle executes what is pending, then the next cycle sees those keys as executed
    req = requests(*[(f"r{i}", a, act, 1.0 if act in ("CLOSE_ALL", "REDUCE", "CLOSE") else 0.0, s)
                     for i, (a, act, s) in enumerate(rows)])
    accounts = ["A1", "A2"]
    executed: set[str] = set(data.draw(st.sets(st.sampled_from([f"manual:r{i}" for i in range(len(rows))] or ["x"]))))
    # Act
    first = pending_manual_actions(req, executed, NOW, accounts=accounts)
    second = pending_manual_actions(req, executed | set(first["idempotency_key"].to_list()), NOW, accounts=accounts)
    # Assert
    keys = first["idempotency_key"].to_list()
    assert len(keys) == len(set(keys))
    assert second.height == 0
    assert not set(first["incident_key"].to_list()) & executed
    due = {f"r{i}" for i, (_, _, s) in enumerate(rows) if s >= 0}
    assert {k.split(":")[1] for k in keys} == due - {k.removeprefix("manual:") for k in executed}
