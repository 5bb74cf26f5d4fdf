"""Emergency requests, overrides and threshold changes: validated, audited, refused with reasons."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from api_builders import AUTH, TOKEN, make_client

from risklib.core.manual import pending_manual_actions

pytestmark = pytest.mark.integration

REDUCE = {"account_id": "A1", "fraction": 0.5, "operator": "alice", "authority_level": 1, "reason": "flash crash"}
OVERRIDE = {
    "rule": "var", "action": "adjust", "threshold_scale": 1.1, "duration_s": 3600.0,
    "justification": "known data gap in VaR history", "risk_assessment": "exposure 2 % of limit",
    "recovery_plan": "revert when history refills", "operator": "alice", "authority_level": 1,
}


def count(wh, table: str) -> int:
    return int(wh.query(f"SELECT count(*) AS n FROM {table}")["n"][0])  # table names are literals of this file


def executed_keys(wh) -> set[str]:
    return set(wh.query("SELECT idempotency_key FROM emergency_actions")["idempotency_key"].to_list())


# --- emergency requests -------------------------------------------------------------------------


def test_reduce_request_becomes_one_action_exactly_once(wh, client, clock):
    # Arrange / Act
    r = client.post("/api/emergency/reduce-positions", json=REDUCE)
    body = r.json()
    requests = wh.query("SELECT * FROM manual_action_requests")
    first = pending_manual_actions(requests, executed_keys(wh), clock.now())
    # the pipeline executes it and records emergency_actions under the key
    wh.append("emergency_actions", first.with_columns().rename({"action": "action_taken", "ts": "timestamp"})
              .with_columns(manual_override=True, operator_id=first["reason"].str.extract(r"by (\w+)")),
              actor="pipeline", action="act")
    second = pending_manual_actions(requests, executed_keys(wh), clock.now())
    # Assert
    assert r.status_code == 202 and body["status"] == "accepted" and body["action"] == "REDUCE"
    assert requests.select("request_id", "account_id", "action", "fraction", "operator", "authority_level").rows() == [
        (body["request_id"], "A1", "REDUCE", 0.5, "alice", 1)]
    assert first.select("idempotency_key", "account_id", "action", "fraction").rows() == [
        (f"manual:{body['request_id']}", "A1", "REDUCE", 0.5)]
    assert "by alice (authority level 1): flash crash" in first["reason"][0]
    assert second.height == 0
    audit = wh.query("SELECT actor, action, subject FROM audit_log WHERE action = 'emergency.reduce'").rows()
    assert audit == [("alice", "emergency.reduce", "A1")]


@pytest.mark.parametrize(
    ("path", "extra", "action", "fraction"),
    [
        ("/api/emergency/halt-trading", {}, "HALT_ALL", 0.0),
        ("/api/emergency/halt-trading", {"scope": "entries"}, "HALT_ENTRIES", 0.0),
        ("/api/emergency/close-positions", {}, "CLOSE_ALL", 1.0),
        ("/api/emergency/close-positions", {"fraction": 0.5}, "CLOSE", 0.5),
    ],
)
def test_halt_and_close_record_their_action(wh, client, path, extra, action, fraction):
    body = {"account_id": "*", "operator": "bob", "authority_level": 2, "reason": "desk instruction", **extra}
    r = client.post(path, json=body)
    assert r.status_code == 202
    assert wh.query("SELECT account_id, action, fraction FROM manual_action_requests").rows() == [("*", action, fraction)]


def test_emergency_status_lists_pending_requests_until_executed(wh, client):
    rid = client.post("/api/emergency/halt-trading",
                      json={"account_id": "A2", "operator": "alice", "authority_level": 1, "reason": "r"}).json()["request_id"]
    pending = client.get("/api/emergency/status").json()
    assert pending["system"] == "RESTRICTED"
    assert [p["idempotency_key"] for p in pending["pending_requests"]] == [f"manual:{rid}"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({**REDUCE, "fraction": 0.0}, 422, None),
        ({**REDUCE, "fraction": 1.2}, 422, None),
        ({**REDUCE, "operator": ""}, 422, None),
        ({k: v for k, v in REDUCE.items() if k != "reason"}, 422, None),
    ],
)
def test_bad_emergency_requests_are_refused_and_nothing_written(wh, client, body, status, detail):
    r = client.post("/api/emergency/reduce-positions", json=body)
    assert r.status_code == status
    assert count(wh, "manual_action_requests") == 0


def test_resume_needs_the_highest_authority(wh, client):
    low = client.post("/api/emergency/resume-trading", json={"account_id": "A1", "operator": "cro", "authority_level": 4,
                                                               "reason": "risk assessment complete"})
    top = client.post("/api/emergency/resume-trading", json={"account_id": "A1", "operator": "board", "authority_level": 5,
                                                               "reason": "risk assessment complete"})
    assert (low.status_code, low.json()["detail"]) == (403, "authority_level=4: RESUME needs >= 5")
    assert top.status_code == 202
    assert wh.query("SELECT action, operator FROM manual_action_requests").rows() == [("RESUME", "board")]


def test_request_while_pipeline_is_stale_is_accepted_with_a_warning(client, clock):
    clock.advance(3600)
    body = client.post("/api/emergency/close-positions", json={**REDUCE, "fraction": 1.0}).json()
    assert body["pipeline"]["stale"] is True and body["warning"].startswith("pipeline heartbeat is stale")


# --- authorization ----------------------------------------------------------------------------


WRITES = [
    ("post", "/api/emergency/reduce-positions", REDUCE),
    ("post", "/api/emergency/halt-trading", {k: v for k, v in REDUCE.items() if k != "fraction"}),
    ("post", "/api/emergency/close-positions", REDUCE),
    ("post", "/api/alerts/override", OVERRIDE),
    ("put", "/api/risk/thresholds", {"key": "policy.var.levels[0].threshold", "value": 0.0011, "operator": "a",
                                     "reason": "r", "authority_level": 1}),
    ("put", "/api/risk/config", {"key": "policy.var.levels[0].threshold", "value": 0.0011, "operator": "a",
                                 "reason": "r", "authority_level": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_need_the_token_when_one_is_configured(wh, clock, method, path, body):
    c = make_client(wh, clock, token=TOKEN)
    none = getattr(c, method)(path, json=body)
    wrong = getattr(c, method)(path, json=body, headers={"Authorization": "Bearer nope"})
    good = getattr(c, method)(path, json=body, headers=AUTH)
    assert (none.status_code, wrong.status_code) == (401, 401)
    assert none.json()["detail"] == "authorization: missing or wrong bearer token"
    assert good.status_code in (200, 201, 202)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_are_refused_when_no_token_is_configured(wh, clock, method, path, body):
    # Arrange: no token given and none in the environment: fail closed
    from risklib.api._control import build_app
    from fastapi.testclient import TestClient

    app = build_app(warehouse=wh, clock=clock, twilio_auth_token="x", api_token="unused")
    app.state.ctx.api_token = None  # as create_app leaves it when neither the environment nor a Secret block holds one
    # Act
    r = getattr(TestClient(app), method)(path, json=body)
    # Assert
    assert r.status_code == 401 and r.json()["detail"].startswith("api_token: none configured")
    assert count(wh, "manual_action_requests") + count(wh, "overrides") + count(wh, "threshold_changes") == 0


# --- overrides ------------------------------------------------------------------------------------


def test_override_within_authority_is_recorded_and_expires(wh, client, clock):
    # Act
    r = client.post("/api/alerts/override", json=OVERRIDE)
    # Assert
    assert r.status_code == 201
    row = wh.query("SELECT account_id, rule, action, new_value, duration_s, operator, authority_level, created_at, "
                   "expires_at, justification FROM overrides").to_dicts()
    assert len(row) == 1
    o = row[0]
    assert (o["account_id"], o["rule"], o["action"], float(o["new_value"]), o["authority_level"]) == (None, "var", "adjust", 1.1, 1)
    assert o["created_at"] == clock.now() and o["expires_at"] == clock.now() + timedelta(seconds=3600)
    assert wh.query("SELECT actor, action FROM audit_log WHERE action = 'override.create'").rows() == [("alice", "override.create")]


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"rule": "drawdown"}, "override refused: authority_level=1: rule 'drawdown' needs >= 4"),
        ({"threshold_scale": 1.5}, "override refused: threshold_scale=1.5: change 50% exceeds 20% for authority_level=1 (Risk Manager)"),
        ({"duration_s": None}, "override refused: expires_at=None: every override must expire"),
        ({"action": "suspend", "threshold_scale": None}, "override refused: authority_level=1 (Risk Manager): may not suspend a rule"),
        ({"action": "suspend", "threshold_scale": None, "authority_level": 2, "duration_s": 600.0},
         "override refused: expires_at=2026-03-02 09:10:10+00:00: suspension of 600s exceeds 300s for authority_level=2 (Head of Trading)"),
        ({"authority_level": 9}, "override refused: authority_level=9: must be 1-5"),
    ],
)
def test_override_beyond_authority_or_without_expiry_is_403_and_not_written(wh, client, change, detail):
    r = client.post("/api/alerts/override", json={**OVERRIDE, **change})
    assert (r.status_code, r.json()["detail"]) == (403, detail)
    assert count(wh, "overrides") == 0


def test_override_without_documentation_is_422(wh, client):
    r = client.post("/api/alerts/override", json={k: v for k, v in OVERRIDE.items() if k != "recovery_plan"})
    assert r.status_code == 422 and count(wh, "overrides") == 0


# --- thresholds and config ---------------------------------------------------------------------


def test_bad_threshold_is_422_naming_key_and_value_and_nothing_written(wh, client):
    # Act
    r = client.put("/api/risk/thresholds", json={"key": "policy.var.levels[0].threshold", "value": 15,
                                                 "operator": "alice", "reason": "typo", "authority_level": 5})
    # Assert
    assert r.status_code == 422
    assert r.json()["detail"] == "policy.var.levels[0].threshold=15: must be a fraction in (0, 1); did you mean 0.15?"
    assert count(wh, "threshold_changes") == 0


def test_a_list_of_changes_lands_all_or_nothing(wh, client):
    r = client.put("/api/risk/thresholds", json=[
        {"key": "policy.var.levels[0].threshold", "value": 0.0011, "operator": "a", "reason": "r", "authority_level": 1},
        {"key": "policy.nope", "value": 1, "operator": "a", "reason": "r", "authority_level": 1},
    ])
    assert r.status_code == 422 and r.json()["detail"].startswith("key='policy.nope': unknown setting 'nope'")
    assert count(wh, "threshold_changes") == 0


def test_change_beyond_authority_is_403(wh, client):
    r = client.put("/api/risk/thresholds", json={"key": "policy.drawdown.levels[4].threshold", "value": 0.16,
                                                 "operator": "alice", "reason": "r", "authority_level": 1})
    assert r.status_code == 200  # 0.15 -> 0.16 is a 6.7 % change: within Level 1's 20 %
    r = client.put("/api/risk/thresholds", json={"key": "policy.drawdown.levels[4].threshold", "value": 0.30,
                                                 "operator": "alice", "reason": "r", "authority_level": 1})
    assert r.status_code == 403 and "exceeds 20% for authority_level=1 (Risk Manager)" in r.json()["detail"]
    assert count(wh, "threshold_changes") == 1


def test_accepted_change_is_recorded_audited_and_in_force(wh, client, clock):
    # Act
    r = client.put("/api/risk/thresholds", json={"key": "policy.var.levels.0.threshold", "value": 0.0012,
                                                 "operator": "alice", "reason": "new model", "authority_level": 1})
    t = client.get("/api/risk/thresholds").json()
    cfg = client.get("/api/risk/config").json()
    # Assert
    assert r.status_code == 200
    rows = wh.query('SELECT "key", old_value, new_value, operator, reason, "at", authority_level FROM threshold_changes').rows()
    assert rows == [("policy.var.levels[0].threshold", "0.001", "0.0012", "alice", "new model", clock.now(), 1)]
    assert t["ladders"]["var"]["levels"][0]["threshold"] == 0.0012 and t["changes_applied"] == 1
    assert cfg["config"]["policy"]["var"]["levels"][0]["threshold"] == 0.0012
    assert cfg["fingerprint"] == r.json()["fingerprint"] != cfg["base_fingerprint"]
    audit = wh.query("SELECT actor, action, subject FROM audit_log WHERE action = 'config.change'").rows()
    assert audit == [("alice", "config.change", "policy.var.levels[0].threshold")]


def test_thresholds_endpoint_changes_policy_only(wh, client):
    r = client.put("/api/risk/thresholds", json={"key": "monitor.heartbeat_max_age_s", "value": 300.0,
                                                 "operator": "a", "reason": "r", "authority_level": 1})
    ok = client.put("/api/risk/config", json={"key": "monitor.heartbeat_max_age_s", "value": 500.0,
                                              "operator": "a", "reason": "r", "authority_level": 1})
    assert r.status_code == 422 and "changes policy settings only" in r.json()["detail"]
    assert ok.status_code == 200
    assert client.get("/api/health").json()["max_heartbeat_age_s"] == 500.0
    assert json.loads(wh.query("SELECT new_value FROM threshold_changes")["new_value"][0]) == 500.0


def test_override_written_by_the_api_is_what_the_pipeline_reads(wh, client, clock):
    # Arrange
    from types import SimpleNamespace

    from risklib.config import load_config
    from risklib.core.policy import check_override
    from risklib.cycle.session import Session
    from risklib.cycle.shared_tables import SharedTables

    oid = client.post("/api/alerts/override", json=OVERRIDE).json()["override_id"]
    # Act: the pipeline's own reader, at a time inside and after the override's life
    reader = SimpleNamespace(warehouse=wh, shared=SharedTables(wh))
    live = Session.active_overrides(reader, clock.now() + timedelta(seconds=60))
    gone = Session.active_overrides(reader, clock.now() + timedelta(seconds=3601))
    # Assert
    assert live.select("override_id", "account_id", "rule", "action", "threshold_scale", "operator_id").rows() == [
        (oid, "*", "var", "adjust", 1.1, "alice")]
    check_override(live.to_dicts()[0], load_config().policy)  # the policy accepts it as recorded
    assert gone is None


# --- operators with their own tokens -------------------------------------------------------------


@pytest.fixture
def operators_client(wh, clock, monkeypatch):
    """Operators alice (level 1) and carol (level 3) with tokens of their own, beside the shared TOKEN."""
    from fastapi.testclient import TestClient

    from risklib.api._control import build_app
    from risklib.config import load_config
    from risklib.core.escalation._config import OperatorToken

    monkeypatch.setenv("RISK_TOKEN_ALICE", "alice-token-1")
    monkeypatch.setenv("RISK_TOKEN_CAROL", "carol-token-3")
    cfg = load_config()
    creds = cfg.escalation.credentials.model_copy(update={"operators": (
        OperatorToken(name="alice", authority_level=1, token_env="RISK_TOKEN_ALICE"),
        OperatorToken(name="carol", authority_level=3, token_env="RISK_TOKEN_CAROL"),
        OperatorToken(name="dave", authority_level=5, token_env="RISK_TOKEN_DAVE_UNSET"),
    )})
    cfg = cfg.model_copy(update={"escalation": cfg.escalation.model_copy(update={"credentials": creds})})
    app = build_app(risk_config=cfg, warehouse=wh, clock=clock, twilio_auth_token="x", api_token=TOKEN)
    return TestClient(app)


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_operators_token_names_the_operator_and_bounds_the_authority(wh, operators_client):
    # Act
    own = operators_client.post("/api/emergency/reduce-positions", json=REDUCE, headers=_as("alice-token-1"))
    above = operators_client.post("/api/emergency/reduce-positions", json={**REDUCE, "authority_level": 3},
                                  headers=_as("alice-token-1"))
    posing = operators_client.post("/api/emergency/reduce-positions",
                                   json={**REDUCE, "operator": "carol", "authority_level": 3},
                                   headers=_as("alice-token-1"))
    carol = operators_client.post("/api/emergency/reduce-positions",
                                  json={**REDUCE, "operator": "carol", "authority_level": 3},
                                  headers=_as("carol-token-3"))
    # Assert: only what each token's operator may do was written
    assert own.status_code == 202 and carol.status_code == 202
    assert above.status_code == 403 and above.json()["detail"] == "authority_level=3: above 'alice''s level 1"
    assert posing.status_code == 403 and posing.json()["detail"] == "operator='carol': the token is 'alice''s"
    assert wh.query("SELECT operator, authority_level FROM manual_action_requests ORDER BY operator").rows() == [
        ("alice", 1), ("carol", 3)]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_with_operators_configured_the_shared_token_carries_no_authority(wh, operators_client, method, path, body):
    # Arrange: the body names alice at level 1, which her own token allows
    body = {**body, "operator": "alice", "authority_level": 1}
    call = getattr(operators_client, method)
    # Act
    shared = call(path, json=body, headers=AUTH)
    unset = call(path, json=body, headers=_as(""))  # dave's variable is unset: an empty token matches nobody
    own = call(path, json=body, headers=_as("alice-token-1"))
    # Assert
    assert shared.status_code == 403 and "needs the operator's own token" in shared.json()["detail"]
    assert unset.status_code == 401
    assert own.status_code in (200, 201, 202)


def test_an_operators_token_also_acknowledges(operators_client):
    ack = {"incident_key": "nope:drawdown:e1", "operator": "alice"}
    none = operators_client.post("/api/alerts/acknowledge", json=ack)
    own = operators_client.post("/api/alerts/acknowledge", json=ack, headers=_as("carol-token-3"))
    assert none.status_code == 401
    assert own.status_code == 404  # past the token check: no such open incident
