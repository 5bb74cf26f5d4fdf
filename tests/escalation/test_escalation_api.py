"""Acknowledgement by SMS reply, key press, API and CLI; webhook signature and rota checks; secrets."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from urllib.parse import urlencode

import polars as pl
import pytest
from fastapi.testclient import TestClient
from twilio.request_validator import RequestValidator

from esc_builders import T0, alerts
from risklib.adapters.notifiers import load_escalation_state, record_plan
from risklib.api import create_app
from risklib.clock import FixedClock
from risklib.core.escalation import plan_escalation

pytestmark = pytest.mark.integration
BASE = "http://localhost:8000"
RISK_MANAGER, CRO, STRANGER = "+15555550101", "+15555550104", "+15555550999"


@pytest.fixture
def clock():
    return FixedClock(T0 + timedelta(seconds=60))


@pytest.fixture
def client(wh, config, creds, clock):
    app = create_app(warehouse=wh, config=config, clock=clock, twilio_auth_token=creds.twilio_auth_token.get(), api_token="")
    return TestClient(app, base_url=BASE)


def signed(creds, path: str, form: dict[str, str]) -> dict[str, str]:
    sig = RequestValidator(creds.twilio_auth_token.get()).compute_signature(BASE + path, form)
    return {"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}


def post_form(client, creds, path, form, *, sign=True, forge=False):
    headers = signed(creds, path, form) if sign else {"Content-Type": "application/x-www-form-urlencoded"}
    if forge:
        headers["X-Twilio-Signature"] = "AAAA" + headers["X-Twilio-Signature"][4:]
    return client.post(path, content=urlencode(form), headers=headers)


def open_incident(wh, config, rows=(("A1", 3),)):
    o, a = load_escalation_state(wh)
    plan = plan_escalation(T0, alerts(list(rows)), o, a, config)
    record_plan(wh, plan)
    return plan


def code_of(plan) -> str:
    return plan.notifications.filter(pl.col("channel") == "sms")["reply_code"][0]


def next_cycle(wh, config, at, rows=(("A1", 3),)):
    o, a = load_escalation_state(wh)
    return plan_escalation(at, alerts(list(rows), now=at), o, a, config)


def test_sms_reply_acknowledges_and_stops_the_chain(wh, client, config, creds):
    # Arrange
    plan = open_incident(wh, config, (("A1", 3), ("A2", 3)))
    code = code_of(plan)
    # Act
    r = post_form(client, creds, "/webhooks/twilio/sms", {"From": RISK_MANAGER, "Body": f"ack {code}", "To": "+15555550199"})
    later = next_cycle(wh, config, T0 + timedelta(seconds=config.levels[3].ack_wait_s * 4), (("A1", 3), ("A2", 3)))
    # Assert
    assert r.status_code == 200 and "Acknowledged 2 incident(s)" in r.text
    acks = wh.query("SELECT incident_key, channel, recipient, operator, reply_code FROM acknowledgements ORDER BY incident_key")
    assert acks.rows() == [("A1:drawdown:e1", "sms", RISK_MANAGER, "Risk Manager", code), ("A2:drawdown:e1", "sms", RISK_MANAGER, "Risk Manager", code)]
    assert later.notifications.filter(pl.col("recipient") != "dashboard").height == 0
    assert sorted(later.incident_events["status"].to_list()) == ["acknowledged", "acknowledged"]


def test_key_press_acknowledges(wh, client, config, creds):
    # Arrange
    code = code_of(open_incident(wh, config))
    path = f"/webhooks/twilio/voice/gather?code={code}&nid=n-1"
    # Act
    r = post_form(client, creds, path, {"Digits": "1", "To": CRO, "From": "+15555550199", "CallSid": "CA1"})
    # Assert
    assert r.status_code == 200 and "Acknowledged. Paging stopped" in r.text
    assert wh.query("SELECT channel, operator FROM acknowledgements").rows() == [("voice", "Chief Risk Officer")]


def test_other_key_does_not_acknowledge(wh, client, config, creds):
    code = code_of(open_incident(wh, config))
    r = post_form(client, creds, f"/webhooks/twilio/voice/gather?code={code}", {"Digits": "9", "To": CRO})
    assert r.status_code == 200 and "Not acknowledged" in r.text
    assert wh.query("SELECT count(*) AS n FROM acknowledgements")["n"][0] == 0


@pytest.mark.parametrize(("sign", "forge", "reason"), [(False, False, "missing X-Twilio-Signature"), (True, True, "bad X-Twilio-Signature")])
def test_unsigned_or_forged_webhook_is_refused_and_recorded(wh, client, config, creds, sign, forge, reason):
    # Arrange
    code = code_of(open_incident(wh, config))
    # Act
    r = post_form(client, creds, "/webhooks/twilio/sms", {"From": RISK_MANAGER, "Body": f"ACK {code}"}, sign=sign, forge=forge)
    # Assert
    assert r.status_code == 403
    assert wh.query("SELECT count(*) AS n FROM acknowledgements")["n"][0] == 0
    rej = wh.query("SELECT endpoint, reason, payload_digest FROM webhook_rejections")
    assert rej.rows()[0][:2] == ("/webhooks/twilio/sms", reason) and len(rej["payload_digest"][0]) == 64


def test_tampered_body_fails_the_signature(wh, client, config, creds):
    code = code_of(open_incident(wh, config))
    headers = signed(creds, "/webhooks/twilio/sms", {"From": STRANGER, "Body": "hello"})
    r = client.post("/webhooks/twilio/sms", content=urlencode({"From": RISK_MANAGER, "Body": f"ACK {code}"}), headers=headers)
    assert r.status_code == 403


def test_reply_from_a_number_not_on_the_rota_is_refused_and_recorded(wh, client, config, creds):
    code = code_of(open_incident(wh, config))
    r = post_form(client, creds, "/webhooks/twilio/sms", {"From": STRANGER, "Body": f"ACK {code}"})
    assert r.status_code == 403
    assert wh.query("SELECT reason FROM webhook_rejections")["reason"].to_list() == ["sender not on the rota"]


def test_replies_are_rate_limited_per_number(wh, client, config, creds):
    # Arrange
    open_incident(wh, config)
    cap = config.ack.max_replies_per_number
    # Act
    codes = [post_form(client, creds, "/webhooks/twilio/sms", {"From": CRO, "Body": "ACK 0000A"}).status_code for _ in range(cap + 1)]
    other = post_form(client, creds, "/webhooks/twilio/sms", {"From": RISK_MANAGER, "Body": "ACK 0000A"}).status_code
    # Assert
    assert codes == [200] * cap + [429] and other == 200
    assert "rate limited" in wh.query("SELECT reason FROM webhook_rejections")["reason"][0]


def test_status_callback_is_recorded(wh, client, config, creds):
    plan = open_incident(wh, config)
    nid = plan.notifications.filter(pl.col("channel") == "sms")["notification_id"][0]
    r = post_form(client, creds, f"/webhooks/twilio/status?nid={nid}", {"MessageSid": "SM123", "MessageStatus": "delivered"})
    assert r.status_code == 204
    assert wh.query("SELECT event, provider_message_id FROM notification_events WHERE notification_id = ?", [nid]).rows() == [("delivered", "SM123")]


def test_api_acknowledge_and_active_view_show_time_to_acknowledge(wh, client, config):
    # Arrange
    open_incident(wh, config)
    # Act
    r = client.post("/api/alerts/acknowledge", json={"incident_key": "A1:drawdown:e1", "operator": "alice"})
    active = client.get("/api/alerts/active").json()
    history = client.get("/api/alerts/history").json()
    # Assert
    assert r.status_code == 200 and r.json()["acknowledged"] == ["A1:drawdown:e1"]
    (row,) = active["incidents"]
    assert row["acknowledged_by"] == "alice" and row["ack_channel"] == "api" and row["time_to_ack_s"] == 60.0
    assert history["count"] == 1


def test_api_acknowledge_unknown_incident_is_404_naming_it(wh, client):
    r = client.post("/api/alerts/acknowledge", json={"incident_key": "nope", "operator": "alice"})
    assert r.status_code == 404 and r.json()["detail"] == "incident_key='nope': no open incident"


def test_api_token_is_required_when_configured(wh, config, creds, clock):
    app = create_app(warehouse=wh, config=config, clock=clock, twilio_auth_token="x", api_token="s3cret-token")
    c = TestClient(app, base_url=BASE)
    open_incident(wh, config)
    bad = c.post("/api/alerts/acknowledge", json={"incident_key": "A1:drawdown:e1", "operator": "bob"})
    good = c.post("/api/alerts/acknowledge", json={"incident_key": "A1:drawdown:e1", "operator": "bob"},
                  headers={"Authorization": "Bearer s3cret-token"})
    assert (bad.status_code, good.status_code) == (401, 200)


def test_acknowledgement_does_not_change_trading_state(wh, client, config):
    # An ack stops paging only: no override or action rows appear.
    open_incident(wh, config)
    client.post("/api/alerts/acknowledge", json={"incident_key": "A1:drawdown:e1", "operator": "alice"})
    assert wh.query("SELECT count(*) AS n FROM overrides")["n"][0] == 0
    assert wh.query("SELECT count(*) AS n FROM emergency_actions")["n"][0] == 0


def test_cli_ack_and_list(wh_path, config):
    # Arrange
    from typer.testing import CliRunner

    from risklib.cli import app
    from risklib.warehouse import Warehouse

    with Warehouse.open(wh_path) as w:
        code = code_of(open_incident(w, config))
    runner = CliRunner()
    # Act
    ack = runner.invoke(app, ["alerts", "ack", code, "--operator", "carol", "--warehouse", str(wh_path)])
    listing = runner.invoke(app, ["alerts", "list", "--warehouse", str(wh_path)])
    missing = runner.invoke(app, ["alerts", "ack", "X:y:z", "--operator", "carol", "--warehouse", str(wh_path)])
    # Assert
    assert ack.exit_code == 0 and "acknowledged A1:drawdown:e1 by carol" in ack.output
    assert "carol via console" in listing.output
    assert missing.exit_code == 2 and "incident='X:y:z': no open incident" in missing.output


def test_no_credential_appears_in_logs_errors_files_or_warehouse(wh, sender, config, creds, twilio, sendgrid, client, tmp_path, caplog):
    # Arrange: exercise failures (errors carry URLs holding the account SID), deliveries, webhooks.
    caplog.set_level(logging.DEBUG)
    twilio.fail_status(500, times=2)
    sendgrid.fail_status(503, times=1)
    plan = open_incident(wh, config, (("A1", 4),))
    report = sender.drain(T0)
    sender.drain(T0 + timedelta(hours=1))
    post_form(client, creds, "/webhooks/twilio/sms", {"From": RISK_MANAGER, "Body": f"ACK {code_of(plan)}"})
    post_form(client, creds, "/webhooks/twilio/sms", {"From": RISK_MANAGER, "Body": "ACK 1111A"}, forge=True)
    # Act: everything the product wrote anywhere.
    dumps = [caplog.text, " ".join(report.errors), repr(creds)]
    for table in ("incidents", "notifications", "notification_events", "acknowledgements", "webhook_rejections", "audit_log"):
        dumps.append(json.dumps(wh.query(f"SELECT * FROM {table}").to_dicts(), default=str))
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.suffix in (".jsonl", ".json", ".log", ".txt"):
            dumps.append(f.read_text(errors="replace"))
    blob = "\n".join(dumps)
    # Assert
    assert "HTTP 500" in blob  # the failures were recorded
    for secret in creds.secrets():
        assert secret not in blob
