"""One cycle end to end inside the running monitor flow, and shock-to-action latency.

Figures (``bench/results/pipeline.json``):

- ``cycle_100_p99_ms`` / ``cycle_10k_p99_ms``: wall time of one cycle (the eight
  stage tasks with their Prefect task runs, validation, the warehouse write;
  no provider network calls: the console notifier) for 100 accounts and for
  10,000 accounts x 20 positions, p99 over 120 and 100 cycles, at the continuous
  cadence of a live session: a cycle starts every ``policy.continuous_cadence_s``
  (1 s, the spec's real-time updates; the policy never asks for less), or at once
  when the previous one took longer. A live monitor never starts cycles faster.
  The simulated market and its strategies' trading run between cycles, as the
  monitor runs them, and are not counted. Each flow run's first cycle is left out
  of every figure and reported as ``cycle_*_first_ms``: it pays the monitor's
  start-up (the stage tasks' first runs), once per monitor run, which rolls over
  after ``monitor.rollover_minutes``. ``cycle_*_max_ms`` is the slowest of the rest.
- ``cycle_*_fastest_p99_ms``: the same over 120 and 30 cycles started every
  ``monitor.min_cycle_period_s`` (0.27 s), the fastest the monitor runs a sped-up
  simulated session; a 10,000-account cycle takes longer than that, so those run
  back to back.
- ``cycle_*_back_to_back_p99_ms``: the same over half as many cycles as at the fastest pace, run back to back
  (faster than the monitor ever starts them: ~90 task runs/s at 100 accounts, where the
  local Prefect server ingests ~50/s and takes the CPU the cycle needs to catch up).
- ``stage_*_<stage>_p99_ms``: the same cycles' p99 per stage (its task run included), and
  ``slowest_*_<stage>_ms`` the slowest cycle's stages, to see where slow cycles spent their time.
- ``baseline_*_p99_ms`` / ``baseline_*_p50_ms``: the same stage functions called directly,
  without Prefect, in the same process (100 and 10 cycles, after three warm-up cycles that
  compile the kernels and fill the caches; between cycles, the work the monitor does in the
  gap, not timed): ``prefect_ratio_*`` (flow p50 / baseline p50) is Prefect's share.
- ``shock_to_action_p99_ms``: at the continuous cadence of a live session, from the
  moment a price shock enters the feed to the moment the broker executes the resulting
  action, for every cycle that ordered an action, in several stressed sessions (flash
  crash and volatility spike, three seeds each). Each sample is the worst case for
  that cycle: the shock arrived just after the previous cycle read the feed, so it
  waited for the rest of that cycle, the wait before the next may start (cycles start
  at most every ``policy.continuous_cadence_s``), and this cycle's ingest -> act. The
  sessions themselves run at the simulated pace (cycles every 0.27 s), so the stages
  are timed under more load than a live session puts on them.
- ``record_landing_p99_ms``: from the record stage handing the cycle to the journal to the
  cycle's commit in the warehouse (what an analyst's query waits for), over the
  cycle measurements above. Routine cycles land at most every
  ``monitor.landing_min_interval_s`` (or when half the backlog waits), and wait for the
  gap after a running cycle (at most ``monitor.gap_max_hold_s``), so this is about that
  interval plus a commit.
- ``machine_polars_filter_us`` / ``machine_python_loop_ms``: how fast the machine was during the
  run (:func:`bench._harness.machine_reference`), to compare runs made on different machines.
- ``record_durable_p99_ms``: from the same hand-over to the journal entry being written and
  flushed to disk, off the cycle (what the next cycle's read of the carried state and the
  gate's new state wait for).

A real Prefect API is used: ``$PREFECT_API_URL`` if set, else a temporary local server started
as ``riskctl run`` starts one (``flows.server.start``: the same command, the same lower CPU
priority and CPUs), on a free port with its database in a temporary folder. The process runs with the
allocator settings ``riskctl`` applies (``risklib.allocator``). The monitor places its cycles as it
does in a session (``risklib.cpu_placement``: a small book's on one CPU); the direct baseline cycles run
the same way (``placed_*``: 1 if they were, 0 if not).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench._harness import machine_reference, p


def _config(positions_per_account: tuple[int, int] | None = None):
    from risklib.config import load_config
    from risklib.cycle.config import MonitorConfig

    cfg = load_config()
    update = {"monitor": MonitorConfig(min_cycle_gap_s=0.0, min_cycle_period_s=0.0)}
    if positions_per_account:
        sim = cfg.pipeline.simulator.model_copy(update={"positions_per_account": positions_per_account})
        update["pipeline"] = cfg.pipeline.model_copy(update={"simulator": sim})
    return cfg.model_copy(update=update)


def _session(root: Path, name: str, accounts: int, scenario: str = "calm", positions=None, seed: int = 1):
    from risklib.cycle.session import Session

    return Session.build(
        config=_config(positions),
        scenario=scenario,
        accounts=accounts,
        seed=seed,
        speed=1e9,
        warehouse=root / name,
        console_path=root / f"{name}.jsonl",
        notify_stream=io.StringIO(),
    )


def _direct_cycle_ms(session) -> float:
    """One cycle through the stage functions without Prefect (the baseline)."""
    from risklib.cycle.stages import run_cycle

    now = session.clock.now()
    session.run_market(now)  # as the monitor does: the simulated world runs between cycles
    t0 = time.perf_counter()
    run_cycle(session, now, session.next_cycle_id())
    ms = (time.perf_counter() - t0) * 1e3
    prepared = session.prepare_next_cycle()  # the monitor's work in the gap, not a cycle's cost
    if prepared is not None:
        prepared.result()
    session.clock.advance(300)
    return ms


def _flow_cycles_ms(session, cycles: int, period_s: float) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
    """One monitor run of ``cycles`` timed cycles after its first: the first cycle's wall time,
    then each timed cycle's, and each timed cycle's stages (task run included).

    Cycles start at most every ``period_s`` of wall time, as the monitor paces them (a live
    session's continuous cadence, a simulated session's fastest; 0: back to back). The session's simulated clock
    runs a billion times faster than the wall, so the pause is taken here rather than
    through the monitor's own pacing, which would advance simulated time by years.
    """
    from flows.monitor import risk_monitor

    out: list[float] = []
    stages: dict[str, list[float]] = {}

    def progress(result, summary, interval, overran):
        out.append(sum(result.stage_ms.values()))
        for stage, ms in result.stage_ms.items():
            stages.setdefault(stage, []).append(ms)
        time.sleep(max(0.0, period_s - out[-1] / 1e3))

    risk_monitor(session, max_cycles=cycles + 1, progress=progress)
    # the first cycle of a monitor run pays its start-up: reported on its own (see the module doc)
    return out[0], np.array(out[1:]), {k: np.array(v[1:]) for k, v in stages.items()}


@functools.cache
def _shipped_config():
    from risklib.config import load_config

    return load_config()


def _live_period_s() -> float:
    """Wall seconds from one cycle's start to the next at the continuous cadence of a live session
    (speed 1: the policy's shortest interval, or the monitor's own bound if that is longer)."""
    cfg = _shipped_config()
    return max(cfg.policy.continuous_cadence_s, cfg.monitor.min_cycle_period_s)


def _wait_ms(previous_cycle_ms: float) -> float:
    """How long a live monitor waits after a cycle of this length at the continuous cadence."""
    from risklib.cycle.session import pacing

    mon = _shipped_config().monitor
    idle_s, _ = pacing(_live_period_s(), previous_cycle_ms / 1e3, mon.min_cycle_period_s, mon.min_cycle_gap_s)
    return idle_s * 1e3


def _shock_to_action_ms(root: Path, accounts: int, cycles: int) -> np.ndarray:
    """Worst-case shock -> broker latency of every acting cycle in stressed sessions (see the module doc)."""
    from flows.monitor import risk_monitor

    out: list[float] = []
    for scenario in ("flash-crash", "vol-spike"):
        for seed in (1, 2, 3):
            session = _session(root, f"shock-{scenario}-{seed}", accounts, scenario=scenario, seed=seed)
            previous_ms: list[float] = [0.0]

            def progress(result, summary, interval, overran, previous_ms=previous_ms):
                s = result.stage_ms
                if result.execution.actions.height:
                    out.append(previous_ms[0] + _wait_ms(previous_ms[0]) + sum(v for k, v in s.items() if k != "record"))
                previous_ms[0] = sum(s.values())

            try:
                risk_monitor(session, max_sim_seconds=1800, max_cycles=cycles, progress=progress)
            finally:
                session.close()
    return np.array(out) if out else np.array([np.nan])


@contextlib.contextmanager
def _prefect_api() -> Iterator[None]:
    """``$PREFECT_API_URL`` if set, else a temporary server started the way ``riskctl run`` starts one."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import server

    with socket.socket() as probe:
        probe.bind((server.DEFAULT_HOST, 0))
        port = probe.getsockname()[1]
    previous = os.environ.get("RISK_DATA_DIR")
    with tempfile.TemporaryDirectory() as home:
        os.environ["RISK_DATA_DIR"] = home  # its database, log and pid file
        try:
            url, _ = server.start(port=port, wait_s=180)
            try:
                with temporary_settings({PREFECT_API_URL: url}):
                    try:
                        yield
                    finally:
                        _drain_prefect_workers()  # logs and events reach the server before it stops
            finally:
                server.stop()
        finally:
            if previous is None:
                os.environ.pop("RISK_DATA_DIR", None)
            else:
                os.environ["RISK_DATA_DIR"] = previous


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all()


def run() -> dict[str, float]:
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from risklib.allocator import tune_allocator

    tuned = tune_allocator()  # as `riskctl run` runs the monitor
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from risklib.cpu_placement import cycle_plan, monitor_placement

    figures: dict[str, float] = machine_reference()  # before the server starts: the machine alone
    landing: list[float] = []
    durable: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, _prefect_api(), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        root = Path(tmp)
        fastest, live = _shipped_config().monitor.min_cycle_period_s, _live_period_s()
        # (label, accounts, positions per account, cycles at the live cadence, at the fastest pace)
        for label, accounts, positions, n, n_fast in (("100", 100, None, 120, 120), ("10k", 10_000, (20, 20), 100, 30)):
            session = _session(root, f"b{label}", accounts, positions=positions)
            try:
                for _ in range(3):  # first calls compile the numeric kernels and fill caches: not a cycle's cost
                    _direct_cycle_ms(session)
                # placed as the monitor places its cycles after its first (risklib.cpu_placement)
                with monitor_placement(cycle_plan(session.broker.positions().height)) as placed:
                    base = np.array([_direct_cycle_ms(session) for _ in range(100 if accounts <= 1_000 else 10)])
                first, flow, stages = _flow_cycles_ms(session, n, live)
                _, flow_fastest, _ = _flow_cycles_ms(session, n_fast, fastest)
                _, back_to_back, _ = _flow_cycles_ms(session, n_fast // 2, 0.0)
                session.flush()
                landing.extend(session.journal.lag_ms if session.journal is not None else [])
                durable.extend(session.journal.durable_ms if session.journal is not None else [])
            finally:
                session.close()
            figures[f"cycle_{label}_p99_ms"] = round(p(flow, 99), 1)
            figures[f"cycle_{label}_p50_ms"] = round(p(flow, 50), 1)
            figures[f"cycle_{label}_max_ms"] = round(float(flow.max()), 1)
            figures[f"cycle_{label}_first_ms"] = round(first, 1)
            figures[f"cycle_{label}_fastest_p99_ms"] = round(p(flow_fastest, 99), 1)
            figures[f"cycle_{label}_fastest_max_ms"] = round(float(flow_fastest.max()), 1)
            figures[f"cycle_{label}_back_to_back_p99_ms"] = round(p(back_to_back, 99), 1)
            figures[f"baseline_{label}_p99_ms"] = round(p(base, 99), 1)
            figures[f"baseline_{label}_p50_ms"] = round(p(base, 50), 1)
            figures[f"placed_{label}"] = float(placed is not None)
            figures[f"prefect_ratio_{label}"] = round(p(flow, 50) / p(base, 50), 2)
            slowest = int(np.argmax(flow))  # what the slowest cycle spent its time in
            for stage, values in stages.items():
                figures[f"stage_{label}_{stage}_p99_ms"] = round(p(values, 99), 1)
                figures[f"slowest_{label}_{stage}_ms"] = round(float(values[slowest]), 1)
        if landing:
            figures["record_landing_p99_ms"] = round(p(np.array(landing), 99), 1)
        if durable:
            figures["record_durable_p99_ms"] = round(p(np.array(durable), 99), 1)
        shock = _shock_to_action_ms(root, 100, 40)
        figures["shock_to_action_p99_ms"] = round(p(shock, 99), 1)
        figures["shock_actions_cycles"] = float(np.isfinite(shock).sum())
    figures["allocator_tuned"] = float(tuned)
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return figures
