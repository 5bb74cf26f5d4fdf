"""A monitoring session: the feed, broker, warehouse and notifiers, chosen in one place.

The stage functions (:mod:`risklib.cycle.stages`) only see a :class:`Session`.
:meth:`Session.build` picks the embedded defaults (the simulated market and its
paper broker, the DuckLake warehouse, the console notifier unless Twilio and
SendGrid credentials are configured); tests and the file-replay command pass
their own parts to the constructor.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from risklib.config import RiskConfig, load_config
from risklib.core import frames
from risklib.cycle.stages import CycleResult
from risklib.cycle.window import ReturnsWindow
from risklib.cycle_gaps import CycleGaps

log = logging.getLogger(__name__)

#: Simulated sessions start here unless told otherwise, so the same seed gives the same session.
SIM_START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
#: How long flush() waits for pages handed to the dispatcher (several provider timeouts and retry budgets).
FLUSH_PAGES_TIMEOUT_S = 120.0


class SimClock:
    """Simulated market time that moves ``speed`` times faster than the wall clock.

    The session advances it by each cycle's interval (:meth:`Session.clock_sleep`)
    and sleeps the wall-clock share the cycle itself did not use.
    """

    def __init__(self, start: datetime, speed: float) -> None:
        self._now = start
        self.speed = speed

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


class Session:
    """Everything a cycle needs, and the state carried from one cycle to the next."""

    def __init__(
        self,
        *,
        config: RiskConfig,
        feed: Any,
        broker: Any,
        warehouse: Any,
        sender: Any,
        clock: SimClock,
        session_id: str | None = None,
        notifiers: dict | None = None,
        state: pl.DataFrame | None = None,
        journal: Any = None,
        outbox: Any = None,
        gaps: CycleGaps | None = None,
    ) -> None:
        from risklib.adapters.validation import SnapshotValidator

        self.config = config
        self.feed = feed
        self.broker = broker
        self.warehouse = warehouse
        self.journal = journal  # write-behind of cycle records (CycleJournal), or None: commit in the cycle
        # The escalation tables' live rows with a local journal (LocalOutbox), or None: the sender
        # reads and writes the warehouse itself.
        self.outbox = outbox
        # The monitor marks its cycles here; the landers and the dashboard publisher hold back for them.
        self.gaps = gaps if gaps is not None else CycleGaps(config.monitor.gap_max_hold_s)
        self.sender = sender
        self.clock = clock
        self.speed = clock.speed
        self.notifiers = notifiers or {}
        self.session_id = session_id or uuid.uuid4().hex[:8]
        self.instruments: tuple[str, ...] = tuple(feed.instruments)
        mon = config.monitor
        self.window = ReturnsWindow(self.instruments, capacity=mon.window_bars + 1)
        self.window.extend(feed.warmup(mon.warmup_bars))
        base = self.window.returns()
        # Baselines for the stress detectors: the warm-up history is "normal".
        self._return_sigma = base.std(axis=0, ddof=1) if base.shape[0] > 2 else None
        self._normal_corr = np.corrcoef(base, rowvar=False) if base.shape[0] > 2 else None
        self._normal_spread: np.ndarray | None = None
        self._previous_regime: tuple[str, ...] | None = None
        self.validator = SnapshotValidator(
            self.instruments,
            config.pipeline.staleness_s,
            future_tolerance_s=config.pipeline.validation.future_tolerance_s,
            # The vectorized screen checks every rule on every row each cycle; the GX
            # suites run (and decide what is quarantined) whenever it suspects a row.
            # Running GX on clean frames too ("always") costs ~2 s a cycle on 2 cores.
            gx_mode="on_suspect",
        )
        self.base_config = config  # what the session started with; recorded threshold changes apply on top
        self._changes_seen = 0
        self._manual_done: set[str] = set()
        self._manual_operator: dict[str, tuple[str, int]] = {}
        self._state: pl.DataFrame | None = state
        self._gate_state: Any = None
        # A recorded cycle's state and gate state, waiting for its journal entry to be durable.
        self._pending: tuple[Future, pl.DataFrame, Future] | None = None
        self._pending_error: BaseException | None = None
        self._settle_lock = threading.Lock()
        self._cycle_no = 0
        self._gate_pool: ThreadPoolExecutor | None = None
        self._prep_pool: ThreadPoolExecutor | None = None  # prepare_next_cycle's worker
        # why the escalation mirror could not be compacted in the last gap (shown until one succeeds)
        self.compaction_failure: str | None = None
        self._known_incidents: set[str] = set()
        self.new_incident_count = 0
        self.var_halt = _var_halt(config)
        # "continuous" cadence is bounded by the machinery (see MonitorConfig.min_cycle_period_s)
        self.min_interval_s = max(mon.min_cycle_period_s, mon.min_cycle_gap_s) * self.speed
        self.failure_interval_s = mon.failure_interval_s
        self._bar_s = getattr(getattr(feed, "config", None), "bar_s", 60.0)
        self.metrics_config = self._metrics_config(config)
        from risklib.adapters.notifiers import EscalationStateCache, PageDispatcher
        from risklib.cycle.shared_tables import SharedTables

        self.shared = SharedTables(warehouse)  # overrides, threshold changes, operator requests
        self.watch = self.shared.watch

        esc_watch = outbox.watch if outbox is not None else self.watch
        self._escalation_state = EscalationStateCache(esc_watch)
        if getattr(sender, "watch", False) is None:
            sender.watch = esc_watch  # the outbox skips its pending query while nothing changed
        # Provider calls behind the cycle, so the act stage never waits for a page (see PageDispatcher).
        # Only over the local outbox: the warehouse connection itself serves one thread.
        self.dispatcher = PageDispatcher(sender) if outbox is not None else None

    def _metrics_config(self, config: RiskConfig) -> Any:
        """The [metrics] settings with the live cycle's windows and horizon in this feed's bars."""
        mon = config.monitor
        bar_s = self._bar_s
        # Metrics annualise per bar: one year of this feed's bars.
        return config.metrics.model_copy(
            update={
                "periods_per_year": int(round(config.pipeline.simulator.trading_minutes_per_year * 60 / bar_s)),
                "var_horizon_bars": max(1, round(mon.var_horizon_s / bar_s)),
                "vol_window_bars": max(2, round(mon.vol_window_s / bar_s)),
                "normal_vol_window_bars": max(2, round(mon.normal_vol_window_s / bar_s)),
                # RiskMetrics EWMA covariance: a spike shows in VaR within a few bars, not a window later
                "parametric_cov": "ewma",
            }
        )

    # --- construction -----------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        config: RiskConfig | str | Path | None = None,
        scenario: str = "calm",
        accounts: int | None = None,
        seed: int = 7,
        speed: float = 1.0,
        warehouse: str | Path | None = None,
        start: datetime | None = None,
        resume: bool = False,
        console_path: str | Path | None = None,
        notify_stream: Any = None,
    ) -> Session:
        """The embedded defaults: simulated market + paper broker, DuckLake warehouse, console notifier.

        ``resume`` reloads the newest risk state per account from the warehouse
        (a restart never clears a halt); a fresh simulated session starts from a
        new book and so from no state.
        """
        from risklib.adapters.feeds import SimulatedFeed
        from risklib.adapters.notifiers import build_notifiers, load_credentials
        from risklib.adapters.notifiers import make_sender
        from risklib.adapters.warehouse import Warehouse

        cfg = config if isinstance(config, RiskConfig) else load_config(config)
        start = start or SIM_START
        sim = cfg.pipeline.simulator
        # The simulated book is sized on the VaR horizon the metrics measure.
        sim = sim.model_copy(update={"var_horizon_bars": max(1, round(cfg.monitor.var_horizon_s / sim.bar_s))})
        clock = SimClock(start, speed)
        holder: dict[str, Session] = {}

        def gate(order: Any) -> Any:
            return holder["session"].gate_check(order)

        feed = SimulatedFeed(
            sim,
            scenario=scenario,
            seed=seed,
            start=start,
            accounts=accounts,
            gate=gate,
            broker_config=cfg.pipeline.broker,
        )
        wh = Warehouse.open(warehouse, config=cfg.warehouse, clock=clock)
        gaps = CycleGaps(cfg.monitor.gap_max_hold_s)
        journal = None
        if cfg.monitor.record_behind:
            from risklib.adapters.warehouse import CycleJournal

            # Opening it lands whatever an earlier run left in the journal, before any state is read.
            journal = CycleJournal(wh, max_backlog=cfg.monitor.journal_max_backlog, fsync=cfg.monitor.journal_fsync,
                                   min_interval_s=cfg.monitor.landing_min_interval_s, gaps=gaps)
        outbox = None
        if cfg.monitor.record_behind:
            from risklib.adapters.notifiers import LocalOutbox

            # Opening it lands what an earlier run left in its journal, then loads the live escalation state.
            outbox = LocalOutbox(wh, fsync=cfg.monitor.journal_fsync, min_interval_s=cfg.monitor.landing_min_interval_s,
                                 gaps=gaps)
        creds = load_credentials(cfg.escalation)
        notifiers = build_notifiers(cfg.escalation, creds, console_path=console_path)
        if notify_stream is not None and "console" in notifiers:
            notifiers["console"].stream = notify_stream  # where the console notifier shows what it would send
        sender = make_sender(outbox if outbox is not None else wh, cfg.escalation, notifiers)
        state = restore_state(wh) if resume else None
        session = cls(
            config=cfg,
            feed=feed,
            broker=feed.broker,
            warehouse=wh,
            sender=sender,
            clock=clock,
            session_id=f"s{seed}-{uuid.uuid4().hex[:6]}",
            notifiers=notifiers,
            state=state,
            journal=journal,
            outbox=outbox,
            gaps=gaps,
        )
        if resume:
            keys = wh.query("SELECT DISTINCT idempotency_key FROM emergency_actions")["idempotency_key"].to_list()
            session.broker.seen_keys(keys)
            session._manual_done = {k for k in keys if k.startswith("manual:")}
        holder["session"] = session
        return session

    def flush(self) -> None:
        """Wait until every recorded cycle and escalation write is committed to the warehouse (readers see it)."""
        try:
            self._settle()
        except Exception as exc:  # noqa: BLE001 - reported by the cycle that relies on it; here only waited for
            log.error("the last recorded cycle did not become durable: %s: %s", type(exc).__name__, exc)
        if self.dispatcher is not None and not self.dispatcher.wait_idle(FLUSH_PAGES_TIMEOUT_S):
            # the pages handed over are sent and their outcomes written, unless the providers hang
            log.error("pages still waiting for the providers after %.0f s: %d queued", FLUSH_PAGES_TIMEOUT_S,
                      self.dispatcher.waiting)
        if self.outbox is not None:
            self.outbox.flush()
        if self.journal is not None:
            self.journal.flush()

    def close(self) -> None:
        for pool in (self._gate_pool, self._prep_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._gate_pool = self._prep_pool = None
        if self.dispatcher is not None:
            self.dispatcher.close()
        close_sender = getattr(self.sender, "close", None)
        if close_sender is not None:
            close_sender()
        if self.outbox is not None:
            self.outbox.close()
        if self.journal is not None:
            self.journal.close()
        self.warehouse.close()

    # --- carried state ------------------------------------------------------------

    @property
    def state(self) -> pl.DataFrame | None:
        """The risk state carried from the last durably recorded cycle (waits for the newest to be durable).

        Raises the error of a recorded cycle whose journal entry could not be flushed to the disk
        (once): its decisions were never relied on, and the cycle that would build on them fails.
        """
        self._settle()
        return self._state

    @property
    def gate_state(self) -> Any:
        """The gate state of the last durably recorded cycle; never waits (an order is checked at once,
        against the newest state already durable)."""
        self._settle(wait=False)
        return self._gate_state

    def _settle(self, *, wait: bool = True) -> None:
        """Put the pending cycle's state and gate state in force once its journal entry is durable."""
        pending = self._pending
        if pending is not None:
            durable, state, gate = pending
            if wait:
                futures_wait((durable, gate))  # outside the lock: a gate check never waits for the disk
            elif not (durable.done() and gate.done()):
                return
            with self._settle_lock:
                if self._pending is pending:
                    self._pending = None
                    try:
                        durable.result()
                        gate_state = gate.result()
                    except BaseException as exc:  # noqa: BLE001 - kept for the caller that relies on it
                        self._pending_error = exc
                    else:
                        self._state, self._gate_state = state, gate_state
        if wait and self._pending_error is not None:
            with self._settle_lock:
                error, self._pending_error = self._pending_error, None
            if error is not None:
                raise error

    def next_cycle_id(self) -> str:
        self._cycle_no += 1
        return f"{self.session_id}-{self._cycle_no:06d}"

    def run_market(self, now: datetime) -> None:
        """Let a simulated world (prices, the strategies' orders through the gate) run up to ``now``.

        Called by the monitor between cycles: in a live deployment the market and
        the trading code run on their own, and the cycle only reads the feed.
        A feed without an ``advance`` (file replay, a real feed) has nothing to do.
        """
        advance = getattr(self.feed, "advance", None)
        if advance is not None:
            advance(now)

    def peaks(self) -> pl.DataFrame | None:
        """High-water marks carried from the previous evaluation.

        Taken from the newest recorded cycle without waiting for its journal entry to be
        durable, so the entry is written while this cycle computes its metrics (~0.4 s
        for a 10,000-account cycle that acted on every account). The wait comes at the
        next read of :attr:`state` (the sizing stage's), before any decision: a cycle
        whose predecessor never became durable still fails there.
        """
        pending = self._pending
        state = pending[1] if pending is not None else self._state
        if state is None or state.height == 0:
            return None
        return state[["account_id", "peak_equity_usd"]].drop_nulls()

    def market_inputs(self, now: datetime, book: Any, snapshot: Any) -> Any:
        """Market-wide inputs of the stress detectors and the feed rule."""
        from risklib.core.policy import MarketInputs

        ticks = snapshot.ticks
        mids = dict(zip(ticks["instrument"].to_list(), ticks["mid"].to_list())) if ticks.height else {}
        spreads = (
            dict(zip(ticks["instrument"].to_list(), (ticks["ask"] - ticks["bid"]).to_list())) if ticks.height else {}
        )
        mid_arr = np.array([mids.get(i) if mids.get(i) is not None else np.nan for i in self.instruments], dtype=float)
        spread = np.array([spreads.get(i) if spreads.get(i) is not None else np.nan for i in self.instruments], dtype=float)
        quote_missing = ~np.isfinite(mid_arr) | ~np.isfinite(spread)
        rel_spread = spread / mid_arr
        if self._normal_spread is None and np.isfinite(rel_spread).all():
            self._normal_spread = rel_spread  # the first full set of quotes is the baseline
        spread_ratio = rel_spread / self._normal_spread if self._normal_spread is not None else None
        regime = None
        returns = self.window.returns()
        recent = returns[-30:] if returns.shape[0] else None
        if returns.shape[0] >= 2:
            from risklib.core.metrics import classify_regime
            from risklib.errors import MetricsError

            mc = self.metrics_config
            try:
                labels = classify_regime(
                    returns.T,
                    np.asarray(book.instrument_vol_ratio, dtype=float),
                    window=min(mc.regime_window_bars, returns.shape[0]),
                    periods_per_year=mc.periods_per_year,
                    sideways_sharpe=mc.regime_sideways_sharpe,
                    high_vol_ratio=mc.regime_high_vol_ratio,
                )
                regime = tuple(str(x) for x in labels)
            except MetricsError:  # history too short: the regime-shift detector stays silent
                regime = None
        inputs = MarketInputs(
            instruments=self.instruments,
            vol_ratio=np.asarray(book.instrument_vol_ratio, dtype=float),
            spread_ratio=spread_ratio,
            quote_missing=quote_missing,
            correlation=np.asarray(book.correlation, dtype=float),
            normal_correlation=self._normal_corr,
            returns=recent,
            return_sigma=self._return_sigma,
            regime=regime,
            previous_regime=self._previous_regime,
            events=None,
            feed_silent_s=snapshot.silence_s,
        )
        self._previous_regime = regime
        return inputs

    def active_overrides(self, now: datetime) -> pl.DataFrame | None:
        """Manual overrides in force at ``now`` (they always expire)."""
        # The table keeps the operator's request as written (new_value is text);
        # the policy reads an "adjust" as a scale factor on the rule's thresholds.
        rows = self.shared.read(
            "overrides",
            "SELECT override_id, coalesce(account_id, '*') AS account_id, rule, action, "
            "TRY_CAST(new_value AS DOUBLE) AS threshold_scale, authority_level, "
            "operator AS operator_id, created_at, expires_at FROM overrides",
        )
        at = frames.utc_lit(now)
        rows = rows.filter((pl.col("expires_at") > at) & (pl.col("created_at") <= at)) if rows.height else rows
        if rows.height == 0:
            return None
        return frames.conform(rows, frames.OVERRIDES, "overrides")

    def refresh_config(self, now: datetime) -> None:
        """Apply threshold changes recorded (through the API) up to ``now``; a change that no longer validates is refused."""
        from risklib.config_changes import apply_threshold_changes
        from risklib.errors import ConfigError

        changes = self.shared.read("threshold_changes", 'SELECT "key", new_value, "at" FROM threshold_changes ORDER BY "at"')
        changes = changes.filter(pl.col("at") <= frames.utc_lit(now)) if changes.height else changes
        if changes.height == self._changes_seen:
            return
        try:
            config = apply_threshold_changes(self.base_config, changes)
        except ConfigError as exc:  # keep the config in force rather than guess
            self.warehouse.audit("pipeline", "config.change_refused", None, {"error": str(exc)}, at=now)
            self._changes_seen = changes.height
            return
        self.config = config
        self.metrics_config = self._metrics_config(config)
        self.var_halt = _var_halt(config)
        self._changes_seen = changes.height
        self.warehouse.audit(
            "pipeline", "config.applied", None, {"changes": changes.height, "fingerprint": config.fingerprint()}, at=now
        )

    def manual_actions(self, now: datetime, accounts: list[str]) -> pl.DataFrame:
        """Operators' emergency requests (POST /api/emergency/*) not executed yet, as ACTIONS rows."""
        from risklib.core.manual import pending_manual_actions

        requests = self.shared.read("manual_action_requests", "SELECT * FROM manual_action_requests")
        requests = requests.filter(pl.col("requested_at") <= frames.utc_lit(now)) if requests.height else requests
        if requests.height == 0:
            return frames.empty(frames.ACTIONS)
        for r in requests.iter_rows(named=True):
            self._manual_operator[f"manual:{r['request_id']}"] = (r["operator"], r["authority_level"])
        pending = pending_manual_actions(requests, self._manual_done, now, accounts=accounts)
        self._manual_done |= set(pending["idempotency_key"].to_list()) | set(pending["incident_key"].to_list())
        return pending

    # --- the pre-trade gate used by the simulated strategies ------------------------

    def gate_check(self, order: Any) -> Any:
        """Check a strategy order against the newest risk state; no state yet means no new risk."""
        from risklib.core.gate import Decision, Order, Reason, check_and_record

        now = self.clock.now()
        gate_order = Order(
            account_id=order.account_id,
            strategy=order.strategy,
            instrument=order.instrument,
            side=order.side,
            quantity=float(order.quantity),
            price=order.price,
            ts=now,
        )
        if self.gate_state is None:
            return Decision(False, 0.0, (Reason("NO_RISK_STATE", "no risk evaluation has run yet"),))
        return check_and_record(gate_order, self.gate_state, now=now)

    def _build_gate(self, now: datetime, result: CycleResult) -> Callable[[], Any]:
        """The gate state of a cycle's results, as a call that reads nothing mutable: the broker's modes
        and positions are taken now, so the build may run on another thread. Every query is left to
        that call: here they waited for the CPU behind the journal's write of the same cycle."""
        from risklib.core.gate import GateState

        ticks, state = result.snapshot.ticks, result.evaluation.state
        modes = self.broker.modes()
        halted = {a for a, m in modes.items() if m == "HALT_ALL"}
        entries = {a for a, m in modes.items() if m == "HALT_ENTRIES"}
        positions, accounts, policy = self.broker.positions(), result.book.accounts, self.config.policy

        def build() -> Any:
            gate_state = state
            # an operator's halt executed at the broker binds the gate too, whatever the policy says
            if halted or entries:
                gate_state = state.with_columns(
                    pl.when(pl.col("account_id").is_in(list(halted)))
                    .then(pl.lit("HALTED"))
                    .when(pl.col("account_id").is_in(list(entries)) & (pl.col("trading_mode") == "ACTIVE"))
                    .then(pl.lit("REDUCE_ONLY"))
                    .otherwise(pl.col("trading_mode"))
                    .alias("trading_mode")
                )
            prices = ticks[["instrument", "mid"]].drop_nulls()
            return GateState.from_frames(now, gate_state, accounts, positions, prices, policy)

        return build

    # --- escalation -------------------------------------------------------------------

    def escalate(self, now: datetime, alerts: pl.DataFrame) -> Any:
        """Plan per incident, write the plan to the outbox, then send what is due (on the dispatcher, if any)."""
        from risklib.adapters.notifiers import run_escalation

        # The plan and its send attempts are durable (one transaction, or one fsync'd journal entry
        # of the local outbox) before any provider call.
        store = self.warehouse
        if self.outbox is not None:
            self.outbox.refresh(self.watch)  # acknowledgements and delivery callbacks other processes wrote
            store = self.outbox
        plan, fast, rest = run_escalation(
            store, self.sender, alerts, self.config.escalation, now, state=self._escalation_state,
            dispatcher=self.dispatcher,
        )
        events = plan.incident_events
        opened = events.filter(pl.col("status") == "open")["incident_key"].unique().to_list() if events.height else []
        self.new_incident_count = len(set(opened) - self._known_incidents)
        self._known_incidents |= set(opened)
        self._new_incident_keys = set(opened)
        summary = {"plan": plan.summary(), "sent": fast.summary(), "drain": rest.summary()}
        if self.dispatcher is not None:
            summary["pages_waiting"] = self.dispatcher.waiting  # handed over, not yet with a provider
            behind, retry = self.dispatcher.behind_s(), self.config.escalation.retry
            if behind > retry.request_timeout_s + retry.drain_budget_s:  # longer than one delivery may take
                summary["paging_delay"] = (f"pages are waiting for the providers: the oldest was handed over "
                                           f"{behind:.1f}s ago ({summary['pages_waiting']} more queued)")
        if self.outbox is not None and self.outbox.failure is not None:
            # paging goes on from the local journal, but the warehouse misses these rows until it lands them
            summary["landing_failure"] = self.outbox.failure
        if self.compaction_failure is not None:
            summary["compaction_failure"] = self.compaction_failure
        return summary

    def prepare_next_cycle(self) -> Future | None:
        """Start, on a background thread, the escalation mirror's housekeeping and what the next
        cycle would otherwise read first. The monitor calls it once a cycle has ended, so both
        run in the gap before the next; a next cycle that starts sooner waits for the mirror's
        lock rather than doing the work twice.

        - Compaction, once the mirror has outgrown its bound: ~250 ms at 10,000 accounts after a
          market-wide event, which was the record stage's largest cost in the cycle after it.
        - The open incidents, when this cycle's escalation rows changed them (~10 ms at 100
          accounts, a third of such a cycle's escalate stage).

        The future's result is whether the state was read again.
        """
        if self.outbox is None:
            return None  # the warehouse's own connection serves the cycle's thread only
        if self._prep_pool is None:
            self._prep_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cycle-prep")
        return self._prep_pool.submit(self._prepare_escalation, self.outbox)

    def _prepare_escalation(self, outbox: Any) -> bool:
        try:
            if outbox.compact_if_due():
                self.compaction_failure = None
        except Exception as exc:  # noqa: BLE001 - the mirror is left as it was and stays due: the next gap tries again
            log.exception("compacting the escalation mirror failed; it is tried again after the next cycle")
            # the escalate stage reports it (Prefect log, dashboard): a mirror that keeps growing slows every plan
            self.compaction_failure = (f"the escalation mirror could not be compacted ({type(exc).__name__}: {exc}); "
                                       "it is tried again after each cycle")
        return self._escalation_state.prefetch(outbox)

    def new_incidents(self, alerts: pl.DataFrame) -> pl.DataFrame:
        """Alerts whose incident opened this cycle (announced as Prefect events: risklib.cycle.trigger_events)."""
        keys = getattr(self, "_new_incident_keys", set())
        return alerts.filter(pl.col("incident_key").is_in(list(keys))).unique("incident_key", keep="first")

    # --- recording ----------------------------------------------------------------------

    def record(self, result: CycleResult, finished_at: datetime, flow_run_id: str | None) -> None:
        """One cycle's records in one warehouse transaction; its cycle_runs row is the heartbeat."""
        from risklib.adapters.warehouse import CycleRecords

        ev = result.evaluation
        book = result.book
        now = result.now
        ts = frames.utc_lit(now)  # the rows' time stamp, built once
        state = ev.state
        # the policy's bookkeeping columns go with the state; the warehouse keeps them as state_json
        state_rows = state
        acted = result.execution
        # the account rows in one Polars call (frames.collect), not five; the book's row order is
        # kept, so its account groups can be put back as they are
        accounts = book.accounts.lazy().join(
            state.lazy().select("account_id", "alert_level", "trading_mode"), on="account_id", how="left",
            maintain_order="left",
        )
        if acted.actions.height:
            accounts = accounts.join(
                acted.actions.lazy().group_by("account_id").agg(
                    pl.concat_str([pl.col("action"), pl.lit(" "), (pl.col("fraction") * 100).round(0).cast(pl.Int64).cast(pl.String), pl.lit("%")])
                    .str.join(", ")
                    .alias("actions_taken")
                ),
                on="account_id", how="left", maintain_order="left",
            )
        else:  # most cycles act on nothing
            accounts = accounts.with_columns(pl.lit(None, pl.String).alias("actions_taken"))
        metrics_rows = frames.collect(
            accounts.with_columns(
                ts.alias("ts"),
                pl.col("risk_score").round(0).cast(pl.Int32, strict=False),
            )
            .drop("account_group", strict=False)
            .with_columns(book.accounts["account_group"])
        )
        positions_rows = book.positions.with_columns(ts.alias("ts"))
        execution = acted.report
        emergency = _emergency_rows(acted.actions, ev.rules_fired, execution, now, self._manual_operator)
        validation = result.validation
        quarantine = validation.quarantine.with_columns(ts.alias("at")) if validation.quarantine.height else None
        activity = self.feed.take_activity() if hasattr(self.feed, "take_activity") else None
        orders = [f for f in (execution.orders, activity.orders if activity else None) if f is not None and f.height]
        fills = [f for f in (execution.fills, activity.fills if activity else None) if f is not None and f.height]
        tables: dict[str, pl.DataFrame] = {
            "realtime_risk_metrics": metrics_rows,
            "position_risk_metrics": positions_rows,
            "risk_state": state_rows,
            "alerts": ev.alerts,
        }
        if emergency is not None:
            tables["emergency_actions"] = emergency
        if quarantine is not None:
            tables["quarantine"] = quarantine
        if orders:
            tables["broker_orders"] = pl.concat(orders, how="diagonal_relaxed")
        if fills:
            tables["broker_fills"] = pl.concat(fills, how="diagonal_relaxed")
        if ev.rules_fired.height:
            tables["rules_fired"] = ev.rules_fired
        if book.correlation is not None and len(book.instruments) > 1:
            from risklib.core.metrics import correlation_rows

            tables["correlation_snapshots"] = correlation_rows(book.instruments, book.correlation, now)
        if activity is not None and activity.denials.height:
            tables["gate_denials"] = activity.denials
        if validation.ticks.height:
            tables["market_quotes"] = validation.ticks  # what the book was priced with; the HTTP gate's prices
        self._settle()  # the previous cycle's, in order; raises if it did not become durable
        write = self.journal.submit if self.journal is not None else self.warehouse.write_cycle
        durable = write(
            CycleRecords(
                cycle_id=result.cycle_id,
                flow_run_id=flow_run_id,
                started_at=now,
                finished_at=finished_at,
                status="completed",
                stage_ms=dict(result.stage_ms),
                tables=tables,
                audit=[
                    {
                        "actor": "policy",
                        "action": "cycle.decisions",
                        "subject": result.cycle_id,
                        "at": now,
                        "detail": {
                            "alerts": ev.alerts.height,
                            "actions": acted.actions["idempotency_key"].to_list(),
                            "quarantined": validation.quarantine.height,
                            "stress": ev.stress.primary_stress,
                            "next_interval_s": ev.next_interval_s,
                        },
                    }
                ],
                n_accounts=book.accounts.height,
                next_interval_s=float(ev.next_interval_s),
            )
        )
        # The gate's new state is built after the hand-over, beside the journal's write: it takes effect
        # only once the cycle is durable, which that write decides. Built during this stage, its ~15 ms
        # of Polars and NumPy work came out of the stage's own CPU (a small book's cycle keeps one).
        gate = self._gate_builder().submit(self._build_gate(now, result))
        # Carried to the next cycle, and in force at the gate, only once the cycle is durable: at once
        # for a direct warehouse write; for the journal, when its thread has flushed the entry (the
        # next cycle's first reader of the state waits for that; the gate keeps the previous state
        # until then, never waiting).
        if durable is None:
            durable = Future()
            durable.set_result(None)
        with self._settle_lock:
            self._pending = (durable, state, gate)

    def _gate_builder(self) -> ThreadPoolExecutor:
        if self._gate_pool is None:
            self._gate_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gate-build")
        return self._gate_pool

    def record_failure(self, result: CycleResult, finished_at: datetime, flow_run_id: str | None, exc: BaseException) -> None:
        """A failed cycle is recorded (no heartbeat): the gate's dead man's switch starts counting."""
        from risklib.adapters.warehouse import CycleRecords
        from risklib.errors import WarehouseError

        try:
            self.warehouse.write_cycle(
                CycleRecords(
                    cycle_id=result.cycle_id,
                    flow_run_id=flow_run_id,
                    started_at=result.now,
                    finished_at=finished_at,
                    status="failed",
                    stage_ms=dict(result.stage_ms),
                    error=f"{type(exc).__name__}: {exc}"[:2000],
                )
            )
        except WarehouseError:
            pass  # write_cycle already recorded the failure itself

    # --- reporting ----------------------------------------------------------------------

    def describe_stress(self, evaluation: Any) -> str:
        s = evaluation.stress
        if s.stress_level == 0:
            return "none"
        return f"level {s.stress_level}: {s.primary_stress} → {s.recommended_action} (confidence {s.confidence:.0%})"

    def validation_markdown(self, validation: Any) -> str:
        """The validation summary artifact: rows, passes and failures per suite and expectation."""
        lines = ["# Validation summary", "", validation.summary_markdown()]
        q = validation.quarantine
        lines += ["", f"Quarantined rows: **{q.height}**; accounts failing closed: **{validation.failed_accounts.height}**"]
        if q.height:
            lines += ["", "| Source | Row | Rule | Detail |", "|---|---|---|---|"]
            for r in q.head(20).iter_rows(named=True):
                lines.append(f"| {r['source']} | {r['row_key']} | {r['rule']} | {r['detail']} |")
        return "\n".join(lines) + "\n"

    def clock_sleep(self, interval_s: float, elapsed_wall_s: float) -> bool:
        """Advance simulated time by ``interval_s`` and sleep its unused wall-clock share.

        Returns True when the cycle overran the interval (took longer in wall
        time than the interval allows at this speed).
        """
        mon = self.config.monitor
        idle, overran = pacing(interval_s / self.speed, elapsed_wall_s, mon.min_cycle_period_s, mon.min_cycle_gap_s)
        self.clock.advance(interval_s)
        time.sleep(idle)
        return overran


def pacing(budget_s: float, elapsed_s: float, period_s: float, gap_s: float) -> tuple[float, bool]:
    """Wall seconds to wait after a cycle, and whether it overran its interval.

    ``budget_s`` is the policy's interval in wall time; cycles start at most every
    ``period_s`` (the machinery's bound) and are followed by at least ``gap_s`` of
    idle. A cycle overran when it took longer than a budget the machinery allows.
    """
    idle = max(budget_s - elapsed_s, period_s - elapsed_s, gap_s, 0.0)
    return idle, elapsed_s > budget_s and budget_s > max(period_s, gap_s)


def _var_halt(config: RiskConfig) -> float:
    """The VaR level that halts new trading (spec: 0.5%), read from the policy's VaR ladder."""
    ladder = getattr(config.policy, "var", None)
    levels = getattr(ladder, "levels", ()) if ladder is not None else ()
    thresholds = [getattr(s, "threshold", None) for s in levels]
    thresholds = [t for t in thresholds if t is not None]
    return max(thresholds) if thresholds else 0.005


def _emergency_rows(
    actions: pl.DataFrame, rules: pl.DataFrame, execution: Any, now: datetime, operators: dict[str, tuple[str, int]]
) -> pl.DataFrame | None:
    """The spec's emergency_actions rows: one per action ordered this cycle, with what the broker did.

    Operator requests (keys ``manual:<request id>``) carry ``manual_override`` and the operator.
    """
    if actions.height == 0:
        return None
    trig = (
        rules.filter(pl.col("incident_key").is_not_null())
        .group_by("incident_key")
        .agg(pl.col("rule").first().alias("trigger_type"), pl.col("metric_value").first().alias("trigger_value"))
        if rules.height
        else pl.DataFrame(schema={"incident_key": pl.String, "trigger_type": pl.String, "trigger_value": pl.Float64})
    )
    affected = (
        execution.orders.group_by("idempotency_key").agg(
            pl.concat_str([pl.col("instrument"), pl.lit(":"), pl.col("side"), pl.lit(":"), pl.col("filled_quantity").cast(pl.String)])
            .str.join(",")
            .alias("positions_affected"),
            pl.col("status").first().alias("status"),
        )
        if execution is not None and execution.orders.height
        else pl.DataFrame(schema={"idempotency_key": pl.String, "positions_affected": pl.String, "status": pl.String})
    )
    return (
        actions.join(trig, on="incident_key", how="left")
        .join(affected, on="idempotency_key", how="left")
        .with_columns(
            pl.col("status").fill_null("executed"),
            pl.col("incident_key").str.starts_with("manual:").fill_null(False).alias("manual_override"),
            pl.col("incident_key")
            .replace_strict({k: v[0] for k, v in operators.items()}, default=None, return_dtype=pl.String)
            .alias("operator_id"),
        )
        .with_columns(
            pl.when(pl.col("manual_override")).then(pl.lit("manual")).otherwise(pl.col("trigger_type")).alias("trigger_type")
        )
    )


def restore_state(warehouse: Any) -> pl.DataFrame | None:
    """The newest risk state per account, bookkeeping columns unpacked from ``state_json``."""
    latest = warehouse.latest_risk_state()
    if latest.height == 0:
        return None
    core = latest.select(list(frames.RISK_STATE_CORE)).with_columns(pl.col("peak_equity_usd").cast(pl.Float64))
    if "state_json" in latest.columns and latest["state_json"].null_count() < latest.height:
        extra = pl.DataFrame([json.loads(s) if s else {} for s in latest["state_json"].to_list()])
        if extra.width:
            core = pl.concat([core, extra], how="horizontal")
    return core
