"""Pages go out on the dispatcher's thread: a slow provider never holds back the cycle's actions.

The real Twilio client library talks to a local fake of Twilio's API whose every
answer comes late, as a provider under load answers.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.fakes` importable under any rootdir

from risklib.adapters.notifiers import Credentials, Secret, build_notifiers  # noqa: E402
from risklib.cycle import stages  # noqa: E402
from tests.fakes import FakeTwilio  # noqa: E402
from tests.fakes._server import Behaviour  # noqa: E402

SLOW_S = 3.0  # every Twilio answer arrives this late (the client waits up to retry.request_timeout_s = 10 s)


@pytest.fixture
def twilio_sessions(make_session, tmp_path):
    """Build flash-crash sessions whose SMS and calls go to a fake Twilio answering every request SLOW_S late."""
    creds = Credentials(twilio_account_sid=Secret("AC" + secrets.token_hex(16)),
                        twilio_auth_token=Secret(secrets.token_hex(16)), twilio_from_number="+15555550199")
    twilio = FakeTwilio(creds.twilio_account_sid.get(), creds.twilio_auth_token.get())
    twilio.fail(*[Behaviour(delay_s=SLOW_S) for _ in range(10_000)])
    built = []

    def build(config=None):
        session = make_session("flash-crash", seed=5, config=config)
        session.sender.notifiers = build_notifiers(session.config.escalation, creds, twilio_api_base=twilio.url,
                                                   console_path=tmp_path / "console.jsonl")
        built.append(session)
        return session, twilio

    yield build
    twilio.reset()  # answers at once from now on: what is still queued goes out before the sessions close
    for session in built:
        session.close()  # its dispatcher first: nothing may still be calling the fake when it goes down
    twilio.down()


@pytest.fixture
def twilio_session(twilio_sessions):
    return twilio_sessions()


def _cycle(session) -> tuple[stages.CycleResult, float, float]:
    """One cycle through the stage functions; returns it, when its escalate stage began and when it had acted."""
    now = session.clock.now()
    session.run_market(now)
    r = stages.CycleResult(cycle_id=session.next_cycle_id(), now=now)
    r.snapshot = stages.ingest(session, now)
    r.validation = stages.validate(session, r.snapshot, now)
    r.book = stages.compute_metrics(session, r.validation, r.snapshot)
    r.sizing = stages.size_positions(session, r.book)
    r.evaluation = stages.evaluate_triggers(session, now, r.book, r.snapshot)
    escalating = time.perf_counter()
    r.escalation = stages.escalate(session, now, r.evaluation)
    r.execution = stages.act(session, now, r.evaluation, r.snapshot, r.book.accounts)
    acted = time.perf_counter()
    stages.record(session, r, now, None)
    session.clock.advance(max(float(r.evaluation.next_interval_s), 1.0))
    return r, escalating, acted


def test_a_cycle_acts_before_a_slow_provider_has_answered_its_pages(twilio_session):
    # Arrange
    session, twilio = twilio_session
    # Act: cycles until one both pages by SMS or phone and orders an action
    for _ in range(60):
        result, escalating, acted = _cycle(session)
        handed = result.escalation["sent"]["dispatched"] + result.escalation["sent"]["sent"]
        if handed and result.execution.actions.height:
            break
    else:
        pytest.fail("the flash crash never paged and acted in the same cycle")
    session.flush()
    # Assert: every page of that cycle reached Twilio, and was answered only after the action was taken
    this_cycle = [r for r in twilio.created("Messages") + twilio.created("Calls") if r.at >= escalating]
    assert this_cycle, "the cycle's pages never reached the provider"
    first_answer = min(r.at for r in this_cycle) + SLOW_S
    assert acted < first_answer, f"the actions waited {acted - escalating:.2f}s for the provider"


def test_pages_sent_behind_the_cycle_are_recorded_once_each(twilio_session):
    # Arrange
    session, twilio = twilio_session
    # Act
    handed = 0
    for _ in range(25):
        result, _, _ = _cycle(session)
        handed += result.escalation["sent"]["dispatched"]
    session.flush()
    # Assert: each provider request is one "sent" event with the provider's id, and no page went out twice
    sids = {item["sid"] for item in twilio.messages + twilio.calls}
    events = session.warehouse.query(
        "SELECT e.provider_message_id, n.dedup_key FROM notification_events e "
        "JOIN notifications n USING (notification_id) WHERE e.event = 'sent' AND e.provider = 'twilio'"
    )
    assert handed > 0 and sids
    assert set(events["provider_message_id"].to_list()) == sids
    assert events["dedup_key"].n_unique() == events.height == len(sids)


def test_pages_waiting_longer_than_a_delivery_may_take_are_reported_on_the_dashboard(twilio_sessions, fast_config):
    # Arrange: one delivery may take 4 s (timeout, no inline retries); Twilio answers each call 3 s late,
    # and one call at a time, so a cycle that pages two people waits 6 s for the second answer
    from flows.monitor import cycle_warnings
    from risklib.core.escalation import RetryPolicy

    escalation = fast_config.escalation.model_copy(update={"retry": RetryPolicy(request_timeout_s=4.0, drain_budget_s=0.0)})
    session, _ = twilio_sessions(fast_config.model_copy(update={"escalation": escalation}))
    session.sender.max_workers = 1
    # Act: cycles (paced, as the monitor runs them) until one reports the delay, for at most 40 s
    warnings: tuple[str, ...] = ()
    deadline = time.monotonic() + 40
    while not warnings and time.monotonic() < deadline:
        result, _, _ = _cycle(session)
        warnings = tuple(w for w in cycle_warnings(result) if w.startswith("Paging is slow"))
        time.sleep(0.3)
    # Assert
    assert warnings, "no cycle reported the pages waiting for the provider"
    assert "the oldest was handed over" in warnings[0]
    waited = float(warnings[0].split("handed over ")[1].split("s ago")[0])
    assert waited >= 4.0  # more than one delivery's 4 s, printed to a tenth (4.04 reads "4.0")


def test_delivery_errors_behind_the_cycle_are_logged_on_the_escalate_task_run(prefect_api, twilio_sessions, fast_config):
    # Arrange: Twilio answers every request with a 500; no inline retries
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.monitor import risk_monitor
    from risklib.core.escalation import RetryPolicy

    escalation = fast_config.escalation.model_copy(update={"retry": RetryPolicy(request_timeout_s=4.0, drain_budget_s=0.0)})
    session, twilio = twilio_sessions(fast_config.model_copy(update={"escalation": escalation}))
    twilio.reset()
    twilio.fail(*[Behaviour(status=500) for _ in range(10_000)])
    # Act
    report = risk_monitor(session, max_cycles=12)
    # Assert: a later cycle's escalate task run carried the failed deliveries as a warning
    deadline, warnings = time.monotonic() + 30, []
    with get_client(sync_client=True) as client:
        while not warnings and time.monotonic() < deadline:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(report.flow_run_id)])),
                                    limit=200, offset=0)
            warnings = [log.message for log in logs if log.task_run_id is not None and log.level >= 30
                        and log.message.startswith("pages since the previous cycle")]
            time.sleep(0.5)
    assert warnings and "delivery error(s)" in warnings[0]
    assert int(warnings[0].split(" failed, ")[1].split(" delivery")[0]) > 0
