"""Delivery through the real twilio/sendgrid clients against local fake servers and a real warehouse."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import polars as pl
import pytest

from esc_builders import T0, alerts
from risklib.adapters.notifiers import OutboxSender, load_escalation_state, record_plan
from risklib.core.escalation import plan_escalation
from tests.fakes import Behaviour
from tests.fakes.twilio import INVALID_NUMBER

pytestmark = pytest.mark.integration


def events(wh, event=None):
    df = wh.query("SELECT e.*, n.channel, n.recipient FROM notification_events e JOIN notifications n USING (notification_id) ORDER BY e.at")
    return df if event is None else df.filter(pl.col("event") == event)


def plan_and_record(wh, config, frame, now=T0):
    open_, acks = load_escalation_state(wh)
    plan = plan_escalation(now, frame, open_, acks, config)
    record_plan(wh, plan)
    return plan


def test_level_3_sends_calls_and_sms_through_the_real_clients(wh, sender, config, twilio, sendgrid):
    # Arrange
    plan_and_record(wh, config, alerts([("A1", 3)]))
    # Act
    report = sender.drain(T0)
    # Assert
    assert len(report.sent) == 4 and report.failed == []
    sms, calls = twilio.created("Messages"), twilio.created("Calls")
    assert sorted(r.form["To"][0] for r in sms) == ["+15555550101", "+15555550104"]
    assert sorted(r.form["To"][0] for r in calls) == ["+15555550101", "+15555550104"]
    twiml = calls[0].form["Twiml"][0]
    assert "<Gather" in twiml and 'numDigits="1"' in twiml and "Press 1 to acknowledge" in twiml
    assert "/webhooks/twilio/voice/gather?code=" in twiml
    assert sms[0].form["StatusCallback"][0].startswith("http://localhost:8000/webhooks/twilio/status?nid=n-")
    assert sendgrid.sent() == []
    assert set(events(wh, "sent")["provider_message_id"].str.slice(0, 2).to_list()) == {"SM", "CA"}


def test_email_carries_html_and_text_with_numbers_and_link(wh, sender, config, sendgrid):
    # Arrange
    plan_and_record(wh, config, alerts([("A1", 1)]))
    # Act
    sender.drain(T0)
    # Assert
    (req,) = sendgrid.sent()
    contents = {c["type"]: c["value"] for c in req.json["content"]}
    assert req.json["personalizations"][0]["to"][0]["email"] == "risk.manager@example.com"
    assert "A1 | drawdown | 1 | 0.12 | 0.1" in contents["text/plain"]
    assert "<td>0.12</td>" in contents["text/html"] and "/dashboard/incidents/A1:drawdown:e1" in contents["text/html"]


def test_a_drained_outbox_sends_nothing_twice(wh, sender, config, twilio):
    # Arrange
    plan_and_record(wh, config, alerts([("A1", 3)]))
    sender.drain(T0)
    n = len(twilio.requests)
    # Act
    again = sender.drain(T0 + timedelta(seconds=5))
    # Assert
    assert again.sent == [] and len(twilio.requests) == n


def test_429_with_retry_after_is_retried_no_sooner_than_asked(wh, sender, config, twilio):
    # Arrange
    plan_and_record(wh, config, alerts([("A1", 2)]))  # two SMS
    twilio.fail_status(429, times=2, retry_after="30")
    # Act
    first = sender.drain(T0)
    early = sender.drain(T0 + timedelta(seconds=29))
    late = sender.drain(T0 + timedelta(seconds=90))  # retry_at is stamped from the (loaded) wall time of the drain
    # Assert
    assert len(first.retry_scheduled) == 2 and early.sent == [] and len(late.sent) == 2
    sched = events(wh, "retry_scheduled")
    assert all((r - a).total_seconds() >= 30 for r, a in zip(sched["retry_at"], sched["at"]))
    assert len(twilio.created("Messages")) == 2


def test_permanent_error_is_not_retried_and_falls_back_to_the_next_channel(wh, notifiers, config, creds, twilio, sendgrid):
    # Arrange: the risk manager's number is invalid at the provider.
    cfg = config.model_copy(update={"teams": config.teams | {"risk": (config.teams["risk"][0].model_copy(update={"phone": INVALID_NUMBER}),)}})
    sender = OutboxSender(wh, notifiers, cfg, secrets=creds.secrets())
    plan_and_record(wh, cfg, alerts([("A1", 2)]))
    # Act
    report = sender.drain(T0)
    later = sender.drain(T0 + timedelta(hours=1))
    # Assert
    assert len(report.failed) == 1 and len(report.fallbacks) == 1
    assert [r.form["To"][0] for r in twilio.requests if r.form.get("To", [""])[0] == INVALID_NUMBER] == [INVALID_NUMBER]
    (mail,) = sendgrid.sent()
    assert mail.json["personalizations"][0]["to"][0]["email"] == "risk.manager@example.com"
    failed = events(wh, "failed")
    assert "HTTP 400 code=21211" in failed["error"][0]
    assert later.sent == [] and later.failed == []


def test_provider_outage_falls_back_and_still_delivers_when_it_recovers(wh, sender, config, twilio, sendgrid):
    # Arrange: Twilio refuses connections (down), then times out, then returns 500.
    plan_and_record(wh, config, alerts([("A1", 2)]))
    twilio.down()
    # Act
    t = T0
    for _ in range(3):
        sender.drain(t)
        t += timedelta(seconds=600)
    twilio.up()
    twilio.fail(Behaviour(delay_s=1.0), Behaviour(status=500))
    sender.drain(t)
    t += timedelta(seconds=600)
    sender.drain(t)
    # Assert: fallback emails went out during the outage, and the SMS once Twilio recovered.
    assert sorted(r.json["personalizations"][0]["to"][0]["email"] for r in sendgrid.sent()) == ["cro@example.com", "risk.manager@example.com"]
    assert sorted(r.form["To"][0] for r in twilio.created("Messages")) == ["+15555550101", "+15555550104"]
    sent_sms = events(wh, "sent").filter(pl.col("channel") == "sms")
    assert sent_sms.height == 2
    errors = " ".join(events(wh, "retry_scheduled")["error"].to_list())
    assert "ConnectionError" in errors and ("Timeout" in errors or "timed out" in errors) and "HTTP 500" in errors


def test_slow_provider_within_timeout_is_fine(wh, sender, config, twilio):
    # Arrange
    plan_and_record(wh, config, alerts([("A1", 2)]))
    twilio.fail(Behaviour(delay_s=0.2), Behaviour(delay_s=0.2))
    # Act
    report = sender.drain(T0)
    # Assert
    assert len(report.sent) == 2 and report.retry_scheduled == []


def test_crash_between_outbox_write_and_send_loses_nothing_and_duplicates_nothing(wh_path, notifiers, config, creds, twilio):
    # Arrange: the plan is written, then the process dies before any provider call.
    from risklib.warehouse import Warehouse

    with Warehouse.open(wh_path) as w1:
        plan_and_record(w1, config, alerts([("A1", 3), ("A2", 3)]))
    # Act: a new process drains, twice.
    with Warehouse.open(wh_path) as w2:
        s = OutboxSender(w2, notifiers, config, secrets=creds.secrets())
        first = s.drain(T0 + timedelta(seconds=1))
        second = s.drain(T0 + timedelta(seconds=2))
    # Assert
    assert len(first.sent) == 4 and second.sent == []
    keys = [(r.path, r.form["To"][0]) for r in twilio.requests]
    assert len(keys) == len(set(keys)) == 4


def test_crash_after_provider_call_is_reconciled_not_resent(wh_path, notifiers, config, creds, twilio):
    # Arrange: attempts recorded and the provider accepted, but the process died before "sent" was written.
    from risklib.warehouse import Warehouse

    class DiesAfterSend(OutboxSender):
        def _round(self, batch, clock, sent_keys, report):
            from risklib.adapters.notifiers._state import record_events

            record_events(self.warehouse, [{"notification_id": m.notification_id, "event": "attempt", "attempt": 1, "at": clock()}
                                           for _, m, _ in batch])
            for _, m, n in batch:
                n.send(m)
            raise SystemExit("killed")

    with Warehouse.open(wh_path) as w1:
        plan_and_record(w1, config, alerts([("A1", 2)]))
        with pytest.raises(SystemExit):
            DiesAfterSend(w1, notifiers, config).drain(T0)
    # Act: restart; the in-doubt window has passed.
    with Warehouse.open(wh_path) as w2:
        s = OutboxSender(w2, notifiers, config, secrets=creds.secrets())
        soon = s.drain(T0 + timedelta(seconds=5))
        report = s.drain(T0 + timedelta(seconds=config.retry.in_doubt_after_s + 1))
        sent = w2.query("SELECT error FROM notification_events WHERE event = 'sent'")
    # Assert
    assert soon.sent == [] and len(soon.in_flight) == 2
    assert len(report.sent) == 2
    assert len(twilio.created("Messages")) == 2  # sent once each, never again
    assert sent["error"].to_list() == ["reconciled: the provider had it after a restart"] * 2


def test_acknowledged_incident_gets_no_pending_repeat(wh, sender, config, twilio):
    # Arrange
    plan_and_record(wh, config, alerts([("A1", 2)]))
    twilio.down()
    sender.drain(T0)
    wh.append("acknowledgements", pl.DataFrame({"incident_key": ["A1:drawdown:e1"], "channel": ["api"], "operator": ["op"],
                                                "at": [T0 + timedelta(seconds=5)]}), actor="t", action="t")
    twilio.up()
    # Act
    report = sender.drain(T0 + timedelta(seconds=600))
    # Assert: the first message is still delivered (it happened before the ack was given? no: suppressed after ack)
    assert len(report.suppressed) == 2 and report.sent == []
    assert twilio.created("Messages") == []


def test_console_notifier_is_the_default_without_credentials(wh, config, tmp_path, capsys):
    # Arrange
    import json

    from risklib.adapters.notifiers import Credentials, build_notifiers

    notifiers = build_notifiers(config, Credentials(), console_path=tmp_path / "out.jsonl")
    s = OutboxSender(wh, notifiers, config)
    plan_and_record(wh, config, alerts([("A1", 3)]))
    # Act
    report = s.drain(T0)
    # Assert
    assert set(notifiers) == {"console"} and len(report.sent) == 4
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(x["channel"] for x in lines) == ["sms", "sms", "voice", "voice"]
    assert all("<Gather" in x["twiml"] for x in lines if x["channel"] == "voice")
    assert "would send voice to +15555550101" in capsys.readouterr().out


def test_run_escalation_records_and_sends_new_messages_in_one_pass(wh, sender, config, twilio):
    # Arrange
    from risklib.adapters.notifiers import run_escalation

    # Act
    plan, fast, rest = run_escalation(wh, sender, alerts([("A1", 3)]), config, T0)
    again = run_escalation(wh, sender, alerts([("A1", 3)], now=T0 + timedelta(seconds=30)), config, T0 + timedelta(seconds=30))
    # Assert
    assert len(fast.sent) == 4 and rest.sent == []
    assert again[1].sent == [] and again[2].sent == []
    assert len(twilio.created("Messages")) == 2 and len(twilio.created("Calls")) == 2
    attempts = events(wh, "attempt")
    assert attempts.height == 4 and set(attempts["attempt"].to_list()) == {1}


def test_crash_after_fast_path_transaction_before_provider_call_is_sent_once_later(wh_path, notifiers, config, creds, twilio):
    # Arrange: the plan and its attempts are written, then the process dies before calling Twilio.
    from risklib.warehouse import Warehouse

    class DiesBeforeCall(OutboxSender):
        def _call_and_record(self, batch, clock, sent_keys, report):
            raise SystemExit("killed")

    with Warehouse.open(wh_path) as w1:
        o, a = load_escalation_state(w1)
        with pytest.raises(SystemExit):
            DiesBeforeCall(w1, notifiers, config).send_plan(plan_escalation(T0, alerts([("A1", 2)]), o, a, config), T0)
    # Act
    with Warehouse.open(wh_path) as w2:
        s = OutboxSender(w2, notifiers, config, secrets=creds.secrets())
        report = s.drain(T0 + timedelta(seconds=config.retry.in_doubt_after_s + 1))
        again = s.drain(T0 + timedelta(hours=1))
    # Assert
    assert len(report.sent) == 2 and again.sent == []
    assert sorted(r.form["To"][0] for r in twilio.created("Messages")) == ["+15555550101", "+15555550104"]


def test_repeat_timer_survives_a_restart(wh_path, config):
    # Arrange: a level 2 incident notified, then the process restarts.
    from risklib.warehouse import Warehouse

    repeat = config.levels[2].repeat_interval_s
    wait = config.levels[2].ack_wait_s
    cfg = config.model_copy(update={"levels": config.levels | {2: config.levels[2].model_copy(update={"ack_wait_s": None})}})
    with Warehouse.open(wh_path) as w1:
        plan_and_record(w1, cfg, alerts([("A1", 2)]))
    # Act: new process, before and after the repeat interval.
    with Warehouse.open(wh_path) as w2:
        early = plan_and_record(w2, cfg, alerts([("A1", 2)]), now=T0 + timedelta(seconds=repeat - 1))
        due = plan_and_record(w2, cfg, alerts([("A1", 2)]), now=T0 + timedelta(seconds=repeat))
    # Assert
    assert wait is not None
    assert early.notifications.height == 0
    assert sorted(due.notifications.filter(pl.col("recipient") != "dashboard")["body"].str.slice(0, 6).to_list()) == ["REPEAT"] * 2


def test_credentials_come_from_the_environment_and_never_print():
    # Arrange
    from risklib.adapters.notifiers import load_credentials

    env = {"TWILIO_ACCOUNT_SID": "AC" + "9" * 32, "TWILIO_AUTH_TOKEN": "t0ken-value", "TWILIO_FROM_NUMBER": "+15555550199"}
    # Act
    creds = load_credentials(config_default(), env)
    # Assert
    assert creds.has_twilio and not creds.has_sendgrid
    assert "t0ken-value" not in repr(creds) and "9" * 32 not in repr(creds)
    assert creds.twilio_auth_token.get() == "t0ken-value"


def config_default():
    from risklib.core.escalation import EscalationConfig

    return EscalationConfig()


def test_provider_call_threads_are_kept_between_sends_and_let_go_on_close(wh, sender, config, twilio):
    # Arrange: two incidents paged one after the other, several messages each
    import threading

    def notify_threads():
        return {t for t in threading.enumerate() if t.name.startswith("notify")}

    plan_and_record(wh, config, alerts([("A1", 3)]))
    sender.drain(T0)
    first = notify_threads()
    plan_and_record(wh, config, alerts([("A2", 3)]), now=T0 + timedelta(seconds=1))
    # Act
    report = sender.drain(T0 + timedelta(seconds=1))
    kept = notify_threads()
    sender.close()
    # Assert
    assert len(report.sent) >= 2 and report.failed == []  # sent concurrently, on the pool
    assert first and first <= kept  # the first send's threads served the second (more only for more messages)
    assert not any(t.is_alive() for t in kept)
    plan_and_record(wh, config, alerts([("A3", 3)]), now=T0 + timedelta(seconds=2))
    again = sender.drain(T0 + timedelta(seconds=2))
    assert len(again.sent) >= 2 and again.failed == []  # a send after close starts them again
    assert notify_threads()


def test_a_held_message_is_sent_once_its_hold_runs_out_and_not_before(wh, sender, config, twilio):
    # Arrange: the outbox's messages are held for a minute
    open_, acks = load_escalation_state(wh)
    plan = plan_escalation(T0, alerts([("A1", 2)]), open_, acks, config)
    held = pl.lit(T0 + timedelta(seconds=60)).cast(plan.notifications.schema["not_before"])
    record_plan(wh, dataclasses.replace(plan, notifications=plan.notifications.with_columns(not_before=held)))
    # Act: drains before the hold (the later ones answer from the small "anything due?" query), then after it
    early = [sender.drain(T0 + timedelta(seconds=s)) for s in (0, 30, 59)]
    due = sender.drain(T0 + timedelta(seconds=60))
    after = sender.drain(T0 + timedelta(seconds=61))
    # Assert
    assert all(r.sent == [] for r in early)
    assert len(due.sent) == 2 and after.sent == []
    assert len(twilio.created("Messages")) == 2


def test_console_notifier_prints_each_message_in_one_write(tmp_path):
    # Arrange: progress lines are printed from the cycle's thread while pages go out from the dispatcher's
    from risklib.adapters.notifiers import ConsoleNotifier, OutboundMessage

    class Recording:
        def __init__(self):
            self.writes: list[str] = []

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            pass

    stream = Recording()
    console = ConsoleNotifier(None, stream=stream)
    # Act
    console.send(OutboundMessage("n-1", "email", "risk@example.com", "[RISK L4] drawdown", "A1 drawdown 16%"))
    # Assert: the header, subject and body arrive whole, so no other line can land inside them
    assert len(stream.writes) == 1
    assert stream.writes[0].splitlines()[:2] == ["--- would send email to risk@example.com [n-1]", "Subject: [RISK L4] drawdown"]
    assert stream.writes[0].endswith("\n")
