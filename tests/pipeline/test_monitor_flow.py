"""The monitor flow against a real Prefect API and a real DuckLake warehouse."""

from __future__ import annotations

import gc
import os
import time
from datetime import timedelta
from uuid import UUID

import polars as pl
import pytest

from flows.monitor import DASHBOARD_KEY, POSITIONS_KEY, VALIDATION_KEY, risk_monitor
from risklib.cycle.dashboard import _usd
from risklib.cycle.session import SIM_START

pytestmark = pytest.mark.integration

STAGES = {"ingest", "validate", "compute-metrics", "size-positions", "evaluate-triggers", "escalate", "act", "record"}


_FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _task_runs(flow_run_id: str, expected: int, timeout_s: float = 60.0):
    """The flow run's task runs once the server has all ``expected`` of them in a final state.

    Task-run states reach the server as events, after the flow returns; on a busy
    machine the first read can come before they are ingested.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            settled = len(runs) >= expected and all(
                r.state_type is not None and r.state_type.value in _FINAL for r in runs
            )
            if settled or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def _artifact(key: str) -> dict | None:
    """The newest artifact with ``key``, read from the API over HTTP."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    r = httpx.post(
        f"{PREFECT_API_URL.value()}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "UPDATED_DESC", "limit": 1},
        timeout=30,
    )
    r.raise_for_status()
    found = r.json()
    return found[0] if found else None


def _collect(results):
    def progress(result, summary, interval, overran):
        results.append((result, summary, interval))

    return progress


def test_cycle_task_runs_complete_with_stage_names(prefect_api, make_session):
    # Arrange
    session = make_session("calm")
    # Act
    report = risk_monitor(session, max_cycles=2)
    # Assert
    runs = _task_runs(report.flow_run_id, 2 * len(STAGES))
    names = [r.name.rsplit("-", 1)[0] for r in runs]
    assert report.cycles == 2 and report.failed_cycles == 0
    assert set(names) == STAGES
    assert len(runs) == 2 * len(STAGES)
    assert {r.state_type.value for r in runs} == {"COMPLETED"}


def test_monitor_freezes_the_warm_heap_after_its_first_cycle(prefect_api, make_session):
    # Arrange: nothing frozen yet in this process
    session = make_session("calm")
    gc.unfreeze()
    frozen_at: list[int] = []
    # Act
    risk_monitor(session, max_cycles=2, progress=lambda *_: frozen_at.append(gc.get_freeze_count()))
    # Assert: the session and everything the first cycle loaded are out of full collections' reach
    assert frozen_at[0] > 10_000
    assert not any(o is session for o in gc.get_objects())


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs a CPU to spare; this machine has one")
def test_monitor_keeps_a_small_books_cycles_on_its_cpu_after_the_first_and_lets_go_at_the_end(
        prefect_api, make_session, monkeypatch):
    # Arrange
    monkeypatch.setenv("RISK_MONITOR_CPUS", "1")
    session = make_session("calm")
    everywhere = os.sched_getaffinity(0)
    seen: list[set[int]] = []
    # Act: each cycle's callback runs on the monitor's own thread, after the cycle
    risk_monitor(session, max_cycles=3, progress=lambda *_: seen.append(os.sched_getaffinity(0)))
    after = os.sched_getaffinity(0)
    # Assert
    assert seen == [{max(everywhere)}] * 3  # placed once the first cycle showed the book's size
    assert after == everywhere


@pytest.mark.parametrize(("cpus", "small_book_rows"), [("0", 50_000), ("1", 10), ("many", 50_000)],
                         ids=["told", "big-book", "bad-setting-costs-speed-not-the-watch"])
def test_monitor_leaves_placement_to_the_os_when_told_or_for_a_big_book_or_a_bad_setting(
        prefect_api, make_session, monkeypatch, cpus, small_book_rows):
    # Arrange: the calm session's book has more than 10 position rows
    monkeypatch.setenv("RISK_MONITOR_CPUS", cpus)
    monkeypatch.setattr("risklib.cpu_placement.SMALL_BOOK_ROWS", small_book_rows)
    session = make_session("calm")
    everywhere = os.sched_getaffinity(0)
    seen: list[set[int]] = []
    # Act
    risk_monitor(session, max_cycles=2, progress=lambda *_: seen.append(os.sched_getaffinity(0)))
    # Assert
    assert seen == [everywhere] * 2


def test_dashboard_artifact_holds_the_warehouse_numbers(prefect_api, make_session):
    # Arrange
    session = make_session("calm", seed=11)
    # Act
    risk_monitor(session, max_cycles=2)
    # Assert
    last = session.warehouse.query("SELECT cycle_id FROM cycle_runs ORDER BY finished_at DESC LIMIT 1")["cycle_id"][0]
    row = session.warehouse.query(
        "SELECT sum(equity_usd) FILTER (WHERE valid) AS equity, count(*) AS accounts, "
        "sum(n_positions) FILTER (WHERE valid) AS positions FROM realtime_risk_metrics WHERE cycle_id = ?",
        [last],
    ).row(0, named=True)
    dashboard = _artifact(DASHBOARD_KEY)
    assert dashboard is not None
    md = dashboard["data"]
    assert f"cycle `{last}`" in md
    assert f"| Equity | {_usd(float(row['equity']))} |" in md
    assert f"| Current positions | {int(row['positions'])} |" in md
    assert f"| Accounts (invalid: fail closed) | {row['accounts']} (" in md
    assert "not reaching the warehouse" not in md  # a healthy pipeline shows no such warning
    assert "Validation summary" in _artifact(VALIDATION_KEY)["data"]


def test_position_table_artifact_carries_the_cycles_sizing(prefect_api, make_session):
    # Arrange
    session = make_session("calm", seed=11)
    results: list = []
    # Act
    risk_monitor(session, max_cycles=2, progress=_collect(results))
    # Assert: each listed position has the multiplier and cap the size-positions stage gave it
    import json

    table = json.loads(_artifact(POSITIONS_KEY)["data"])
    sizing = results[-1][0].sizing
    assert table and sizing.height
    by_key = {(r["account_id"], r["instrument"], r["strategy"]): r for r in sizing.iter_rows(named=True)}
    for row in table:
        sized = by_key[(row["account_id"], row["instrument"], row["strategy"])]
        assert row["sizing_multiplier"] == pytest.approx(sized["sizing_multiplier"])
        assert row["max_position_usd"] == pytest.approx(sized["max_position_usd"])
    dashboard = _artifact(DASHBOARD_KEY)["data"]
    assert "| Sizing | Max new position |" in dashboard
    top = table[0]  # the dashboard lists the same top positions first
    assert f"| {top['sizing_multiplier'] * 100:.0f}% | ${top['max_position_usd']:,.0f} |" in dashboard


def test_flash_crash_fires_alerts_actions_and_faster_cadence(prefect_api, make_session):
    # Arrange
    session = make_session("flash-crash", accounts=30, seed=5)
    results: list = []
    crash_at = SIM_START + timedelta(seconds=600)
    # Act
    risk_monitor(session, max_sim_seconds=1500, max_cycles=8, progress=_collect(results))
    # Assert
    before = [r for r in results if r[0].now < crash_at]
    after = [r for r in results if r[0].now >= crash_at]
    assert before and after
    assert all(r[0].execution.actions.height == 0 for r in before)
    assert all(r[2] == 300 for r in before[1:])  # normal 5-minute cadence once warmed up
    fired = pl.concat([r[0].evaluation.alerts for r in after])
    assert fired.height > 0 and fired["level"].max() >= 3
    actions = pl.concat([r[0].execution.actions for r in after])
    assert actions.height > 0
    assert min(r[2] for r in after) <= 30  # cadence tightens under stress
    recorded = session.warehouse.query("SELECT count(*) AS n FROM emergency_actions")["n"][0]
    assert recorded == actions.height


def test_bad_batch_is_quarantined_and_the_rest_get_metrics(prefect_api, make_session):
    # Arrange
    session = make_session("bad-data", accounts=12, seed=9)
    # Act
    report = risk_monitor(session, max_cycles=1)
    # Assert
    assert report.failed_cycles == 0
    q = session.warehouse.query("SELECT source, rule, detail FROM quarantine")
    assert q.height > 0
    assert {"ticks", "positions"} <= set(q["source"].to_list())
    m = session.warehouse.query("SELECT account_id, valid, invalid_reason, portfolio_var_99 FROM realtime_risk_metrics")
    good = m.filter(pl.col("valid"))
    bad = m.filter(~pl.col("valid"))
    assert bad.height >= 1 and good.height >= 1
    assert good["portfolio_var_99"].null_count() == 0
    assert bad["invalid_reason"].null_count() == 0 and all(bad["invalid_reason"].str.len_chars() > 0)
    modes = session.warehouse.query("SELECT account_id, trading_mode FROM risk_state")
    blocked = modes.filter(pl.col("account_id").is_in(bad["account_id"].to_list()))
    assert set(blocked["trading_mode"].to_list()) <= {"REDUCE_ONLY", "HALTED", "FLATTEN"}
    # the quotes recorded for the gate are the validated ones: one per instrument, priced
    quotes = session.warehouse.query("SELECT instrument, mid FROM market_quotes")
    assert quotes.height >= 1 and quotes["instrument"].n_unique() == quotes.height
    assert set(quotes["instrument"].to_list()) <= set(session.instruments)
    assert quotes.filter(pl.col("mid").is_nan() | (pl.col("mid") <= 0)).height == 0


def _task_run_info_lines(flow_run_id: str, wait_for_some: bool, timeout_s: float = 30.0) -> list[str]:
    """INFO (and below) log lines of the flow run's task runs, as the API holds them.

    Logs reach the API in batches after the flow returns: when lines are expected,
    poll until they arrive; when none are, wait for the flow run's own lines as the
    sign that the batch carrying them was shipped.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])), limit=200, offset=0)
            task_info = [log.message for log in logs if log.task_run_id is not None and log.level < 30]
            flow_lines = [log for log in logs if log.task_run_id is None]
            done = bool(task_info) if wait_for_some else bool(flow_lines)
            if done or time.monotonic() > deadline:
                return task_info
            time.sleep(0.5)


def test_task_run_info_lines_are_off_by_default_and_can_be_turned_on(prefect_api, make_session, fast_config):
    # Arrange
    quiet = make_session("calm")
    loud_config = fast_config.model_copy(
        update={"monitor": fast_config.monitor.model_copy(update={"task_run_log_level": "INFO"})})
    loud = make_session("calm", config=loud_config)
    # Act
    quiet_run = risk_monitor(quiet, max_cycles=1)
    loud_run = risk_monitor(loud, max_cycles=1)
    # Assert
    assert _task_run_info_lines(quiet_run.flow_run_id, wait_for_some=False) == []
    assert any("Finished in state" in m for m in _task_run_info_lines(loud_run.flow_run_id, wait_for_some=True))


def test_escalation_rows_that_cannot_land_are_kept_and_reported_while_paging_goes_on(prefect_api, make_session):
    # Arrange: the outbox's warehouse connection is gone, so nothing it wrote can land
    session = make_session("flash-crash", seed=5)
    session.outbox.retries = 1
    session.outbox._lander.close()
    summaries = []

    def progress(result, summary, interval, overran):
        summaries.append(result.escalation)

    # Act
    for _ in range(4):
        risk_monitor(session, max_cycles=6, progress=progress)
        if any("landing_failure" in s for s in summaries):
            break
    # Assert
    reported = [s["landing_failure"] for s in summaries if "landing_failure" in s]
    assert reported and "could not be landed" in reported[-1]
    kept = list((session.outbox.directory / "failed").iterdir())
    assert kept and any(p.name in reported[-1] for p in kept)
    assert sum(s["sent"]["sent"] + s["drain"]["sent"] for s in summaries) > 0  # pages still went out
    dashboard = _artifact(DASHBOARD_KEY)["data"]
    assert "Escalation records are not reaching the warehouse" in dashboard and "could not be landed" in dashboard


def test_routine_cycles_land_in_the_gaps_between_cycles(prefect_api, make_session):
    # Arrange: a pause after every cycle, as the monitor's pacing leaves at the continuous cadence;
    # each landing notes whether a cycle was running when it started
    session = make_session("calm")
    real = session.journal._land_items
    during_a_cycle: list[bool] = []

    def land(items):
        during_a_cycle.append(session.gaps.in_cycle)
        real(items)

    session.journal._land_items = land
    read_feed = session.feed.snapshot
    feed_read_in_a_cycle: list[bool] = []

    def snapshot(now):
        feed_read_in_a_cycle.append(session.gaps.in_cycle)
        return read_feed(now)

    session.feed.snapshot = snapshot
    # Act
    report = risk_monitor(session, max_cycles=4, progress=lambda *_: time.sleep(0.4))
    # Assert: the stages ran inside a marked cycle; routine cycles only (a cycle that acted would
    # land at once), every landing between cycles, and every cycle in the warehouse
    assert report.cycles == 4 and report.actions == {}
    assert feed_read_in_a_cycle == [True] * 4
    assert during_a_cycle and not any(during_a_cycle)
    assert not session.gaps.in_cycle
    landed = session.warehouse.query("SELECT count(*) AS n FROM cycle_runs WHERE status = 'completed'")["n"][0]
    assert landed == 4


def test_after_each_cycle_the_open_incidents_it_changed_are_read_again_in_the_gap(prefect_api, make_session):
    # Arrange: a flash crash opens incidents; each prefetch notes whether a cycle was running and if it read
    session = make_session("flash-crash", accounts=30, seed=5)
    cache = session._escalation_state
    real = cache.prefetch
    prefetches: list[tuple[bool, bool]] = []

    def prefetch(store):
        in_cycle = session.gaps.in_cycle
        prefetches.append((in_cycle, real(store)))
        return prefetches[-1][1]

    cache.prefetch = prefetch
    # Act
    report = risk_monitor(session, max_sim_seconds=1500, max_cycles=8, progress=lambda *_: time.sleep(0.2))
    deadline = time.monotonic() + 30
    while len(prefetches) < report.cycles and time.monotonic() < deadline:  # the last one runs on its thread
        time.sleep(0.05)
    # Assert: one prefetch per cycle, none while a cycle ran, and the cycles that opened incidents had
    # their state read again there
    assert report.incidents > 0
    assert len(prefetches) == report.cycles == 8
    assert not any(in_cycle for in_cycle, _ in prefetches)
    assert any(read for _, read in prefetches)


def _trigger_events(flow_run_id: str, expected: int, timeout_s: float = 60.0) -> list:
    """The ``risk.trigger.*`` events the API holds for a flow run, once it has ``expected`` of them."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter
    from prefect.events.worker import EventsWorker
    from prefect.types._datetime import now

    EventsWorker.drain_all()  # sent behind the flow
    flt = EventFilter(
        occurred=EventOccurredFilter(since=now("UTC") - timedelta(hours=1), until=now("UTC") + timedelta(hours=1)),
        event=EventNameFilter(prefix=["risk.trigger."]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(filter=flt, limit=50)  # the API pages by 50 at most
            found = list(page.events)
            while page.next_page is not None:
                page = client.read_events_page(page.next_page)
                found += page.events
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def test_new_incidents_reach_the_api_as_trigger_events_bounded_per_rule(prefect_api, make_session, fast_config):
    # Arrange: at most 2 events of their own per rule and cycle, so a flash crash over 30 accounts batches
    config = fast_config.model_copy(
        update={"monitor": fast_config.monitor.model_copy(update={"trigger_events_per_rule": 2})})
    session = make_session("flash-crash", accounts=30, seed=5, config=config)
    opened: list[tuple[str, str, str]] = []  # (cycle, rule, account) of every incident opened

    def progress(result, summary, interval, overran):
        new = session.new_incidents(result.evaluation.alerts)
        opened.extend((result.cycle_id, r, a) for r, a in new.select("rule", "account_id").iter_rows())

    # Act
    report = risk_monitor(session, max_sim_seconds=1500, max_cycles=8, progress=progress)
    # Assert: every opened incident announced once, on its own or in its rule's batch of that cycle
    per_cycle_rule = {(c, r) for c, r, _ in opened}
    batched = {k for k in per_cycle_rule if sum(1 for c, r, _ in opened if (c, r) == k) > 2}
    assert batched, "the crash should open more than two incidents of one rule in a cycle"
    expected = sum(min(2, sum(1 for c, r, _ in opened if (c, r) == k)) for k in per_cycle_rule) + len(batched)
    events = _trigger_events(report.flow_run_id, expected)
    assert len(events) == expected
    announced = []
    for e in events:
        rule = e.event.removeprefix("risk.trigger.")
        if e.resource.id.startswith("risk.trigger-batch."):
            cycle = e.payload["cycle_id"]
            assert e.resource.id == f"risk.trigger-batch.{cycle}.{rule}"
            announced += [(cycle, rule, a) for a in e.payload["account_ids"]]
        else:
            assert e.resource.id.startswith("risk.incident.") and e.payload["rule"] == rule
            announced.append((None, rule, e.payload["account_id"]))
    assert sorted((r, a) for _, r, a in announced) == sorted((r, a) for _, r, a in opened)
    assert {(c, r) for c, r, _ in announced if c is not None} == batched
