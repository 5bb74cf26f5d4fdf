"""Settings of the monitor loop: the ``[monitor]`` section of the risk config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MonitorConfig(BaseModel):
    """How the monitor runs cycles.

    The cadence itself is policy (the ladders return the next interval); these
    settings only bound what the machinery can sustain.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A cycle is eight task runs and the local Prefect server ingests ~50 task
    # runs/s on 2 cores. Cycles start at most every 0.27 s, which keeps it under
    # 30/s even when the policy asks for "continuous" cycles, so the API never
    # falls behind (503s). It bounds the rate, not the idle time: a cycle that
    # took 0.27 s or more is followed at once by the next (a fixed pause after
    # every cycle would add itself to the time a price shock waits for action).
    min_cycle_period_s: float = Field(0.27, ge=0.0)  # wall-clock seconds, start to start
    # Idle time after every cycle, on top of the period (0: none).
    min_cycle_gap_s: float = Field(0.0, ge=0.0)  # wall-clock seconds
    # After a failed cycle, retry at the fastest enhanced cadence (drawdown
    # level 1's 30 s): a failing pipeline must not fall silent for 5 minutes.
    failure_interval_s: float = Field(30.0, gt=0.0)  # simulated/market seconds
    # VaR/ES horizon of the live cycle. The spec gives VaR zones (0.1/0.2/0.4 %,
    # halt at 0.5 %) and a "total exposure > 50 % of account value" halt but no
    # horizon. Read together, one hour is the horizon on which a book inside the
    # exposure halt is green in a calm FX market and crosses the zones under
    # x3/x5 stress; a one-day horizon would put every such book in the red, a
    # one-minute horizon would never leave green. VaR over one-minute bars is
    # scaled by sqrt(horizon / bar) (i.i.d. bars).
    var_horizon_s: float = Field(3600.0, gt=0.0)
    # Volatility windows of the live cycle, in seconds (the [metrics] windows are
    # in bars of whatever data they get: daily for `riskctl metrics`). "Current"
    # is the last hour, "normal" the twelve hours before it: a 20-bar window of
    # one-minute bars reads 1.5x "elevated volatility" on noise alone.
    vol_window_s: float = Field(3600.0, gt=0.0)
    normal_vol_window_s: float = Field(43200.0, gt=0.0)
    warmup_bars: int = Field(800, ge=30)  # bars of history loaded before the first cycle
    window_bars: int = Field(800, ge=30)  # bars of returns the metrics read each cycle
    rollover_minutes: float = Field(60.0, gt=0.0)  # a monitor flow run ends after this, the next resumes
    # Orders are refused when the newest risk state is older than this (the dead
    # man's switch): three missed normal cycles of 5 minutes would be too late
    # at the 30 s enhanced cadence, so the protective reading is twice the
    # normal cadence.
    heartbeat_max_age_s: float = Field(600.0, gt=0.0)
    dashboard_rows: int = Field(15, ge=1)  # accounts/positions listed on the dashboard
    # New incidents announced one Prefect event each, per rule and cycle, worst first; the
    # rest of a rule's new incidents share one more event that lists their accounts
    # (risklib.cycle.trigger_events: a market-wide move at 10,000 accounts would otherwise
    # be 10,000 events, and the cycles after it would wait for their sending).
    trigger_events_per_rule: int = Field(50, ge=0)
    # Dashboard artifacts are published at most this often (wall-clock seconds):
    # at the continuous cadence (up to ~4 cycles/s) each publish is three API
    # writes, a quarter of the local server's work, for updates nobody can read
    # that fast. The newest cycle's dashboard always wins, and the last cycle of
    # a run is always published. 0 publishes after every cycle the API keeps up with.
    dashboard_min_interval_s: float = Field(1.0, ge=0.0)
    # The record stage writes each cycle to a local journal (durable, checked
    # against the schema) and a lander thread commits it to the warehouse behind
    # the cycle: a DuckLake commit costs 50-200 ms, more than a 100-account cycle
    # may take. False commits inside the record stage instead.
    record_behind: bool = True
    # Cycles allowed to wait for the lander before the record stage waits too:
    # at the fastest cadence (4 cycles/s) the warehouse is at most ~2 s behind.
    journal_max_backlog: int = Field(8, ge=1)
    # The landers (the cycle journal's and the escalation outbox's) commit at most
    # this often (wall-clock seconds); what is written in between lands together in
    # one transaction. A cycle's landing cost ~50 ms of CPU, part of it holding the
    # GIL: landing every cycle at the continuous cadence took that from the next
    # cycle (`bench pipeline`, 100 accounts: cycle p50 ~120 -> ~95 ms with both paced).
    # Analysts and the API's gate see a routine cycle up to about this much later;
    # a cycle that ordered actions lands at once, so a halt reaches the API's gate
    # as soon as before, and so does a large book's cycle (50,000 rows or more: its
    # landing is mostly rows, batching would save little and burst more). 0 lands
    # every cycle as soon as it is durable.
    landing_min_interval_s: float = Field(1.0, ge=0.0)
    # Routine landings and the dashboard's publishing wait for the gap between two
    # cycles, at most this long (wall-clock seconds), so their CPU does not come out
    # of a cycle (`bench pipeline`, 100 accounts: see risklib.cycle_gaps). At
    # back-to-back cycles there is no gap: they run beside the cycles after this
    # wait. A cycle's entry is durable on disk before it waits; what lands at once
    # (above) does not wait. 0: never wait.
    gap_max_hold_s: float = Field(2.0, ge=0.0)
    # Flush each journal entry to the disk before the cycle goes on, so a power
    # loss, not only a crash, loses no cycle.
    journal_fsync: bool = True
    # Level of Prefect's own per-task-run log lines ("Finished in state
    # Completed()"). Each INFO line is rendered to the console and shipped to
    # the API: ~4-8 ms per task here, half of a task run's cost, for what the
    # UI's task states already show. Warnings and errors of task runs, and every
    # flow-run line, are still logged. INFO brings the lines back.
    task_run_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
