"""One plain function per cycle stage. The monitor flow wraps each as a Prefect task.

ingest → validate → metrics → sizing → triggers → escalate → act → record

Each stage takes the session (the adapters, chosen in one place) and the
previous stages' outputs, and returns frames. Time is passed in as ``now``.
Failing closed happens here: accounts whose inputs were quarantined are marked
invalid before the metrics reach the policy, and the policy blocks their new
entries and raises a "data" alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from risklib.core import frames

if TYPE_CHECKING:
    from risklib.cycle.session import Session


@dataclass
class CycleResult:
    """What one cycle saw, decided and did; the record stage writes it and the flow reports it."""

    cycle_id: str
    now: datetime
    snapshot: Any = None
    validation: Any = None
    book: Any = None
    sizing: pl.DataFrame | None = None
    evaluation: Any = None
    escalation: Any = None
    execution: Any = None
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def next_interval_s(self) -> float:
        return float(self.evaluation.next_interval_s) if self.evaluation is not None else 0.0


def ingest(session: Session, now: datetime) -> Any:
    """Pick up threshold changes made since the last cycle, take the feed's snapshot at ``now``
    and extend the rolling bar window with its new bars."""
    session.watch.refresh()  # one look at what other processes wrote since the last cycle
    session.refresh_config(now)
    snap = session.feed.snapshot(now)
    session.window.extend(snap.bars)
    return snap


def validate(session: Session, snapshot: Any, now: datetime) -> Any:
    """Run the validation suites; bad rows are quarantined, their accounts fail closed."""
    from risklib.adapters.validation import validate_snapshot

    return validate_snapshot(
        snapshot,
        now,
        known_instruments=session.instruments,
        staleness_s=session.config.pipeline.staleness_s,
        validator=session.validator,
    )


def compute_metrics(session: Session, validation: Any, snapshot: Any) -> Any:
    """Per-account and per-position metrics; accounts that failed validation come back invalid."""
    from risklib.core.metrics import compute_book_metrics

    book = compute_book_metrics(
        validation.positions,
        validation.balances,
        validation.ticks[["instrument", "mid"]],
        session.window.returns(),
        session.instruments,
        peaks=session.peaks(),
        config=session.metrics_config,
    )
    failed = validation.failed_accounts
    # An account whose balance row itself was quarantined is absent from the
    # clean balances: it must still appear, invalid, so the policy blocks it.
    known = set(book.accounts["account_id"].to_list())
    if failed.height:
        absent = failed.filter(~pl.col("account_id").is_in(list(known))).unique("account_id")
        accounts = book.accounts.join(
            failed.group_by("account_id").agg(pl.col("reason").str.join("; ").alias("_why")), on="account_id", how="left"
        ).with_columns(
            pl.when(pl.col("_why").is_not_null()).then(False).otherwise(pl.col("valid")).alias("valid"),
            pl.when(pl.col("_why").is_not_null())
            .then(pl.concat_str([pl.lit("quarantined input: "), pl.col("_why")]))
            .otherwise(pl.col("invalid_reason"))
            .alias("invalid_reason"),
        ).drop("_why")
        if absent.height:
            missing = absent.select(
                "account_id",
                pl.concat_str([pl.lit("quarantined input: "), pl.col("reason")]).alias("invalid_reason"),
            ).with_columns(pl.lit(False).alias("valid"))
            accounts = pl.concat([accounts, missing], how="diagonal_relaxed")
        book = book.with_accounts(frames.conform(accounts, frames.ACCOUNT_METRICS, "account metrics"))
    return book


def size_positions(session: Session, book: Any) -> pl.DataFrame:
    """Position limits for the next orders from the risk of the moment."""
    from risklib.core.policy import size_positions as size

    # Sizing reads the risk state in force (the previous evaluation's); before
    # the first evaluation there is none, and an account without state sizes to 0.
    state = session.state if session.state is not None else frames.empty(frames.RISK_STATE_CORE)
    return size(state, book.accounts, book.positions, session.config.policy)


def evaluate_triggers(session: Session, now: datetime, book: Any, snapshot: Any) -> Any:
    """Policy evaluation for every account in one call: state, alerts, actions, next cadence."""
    from risklib.core.policy import evaluate

    evaluation = evaluate(
        now,
        book.accounts,
        session.state,
        session.config.policy,
        market=session.market_inputs(now, book, snapshot),
        overrides=session.active_overrides(now),
    )
    return evaluation


def escalate(session: Session, now: datetime, evaluation: Any) -> Any:
    """Plan messages per incident, write them to the outbox, then drain what is due."""
    return session.escalate(now, evaluation.alerts)


@dataclass
class Acted:
    """What the act stage handed to the broker (policy and operator actions) and what the broker did."""

    actions: pl.DataFrame  # frames.ACTIONS: the policy's, then the operators' (manual:<request id> keys)
    manual: pl.DataFrame  # the operator requests among them
    report: Any  # the broker's ExecutionReport

    @property
    def orders(self) -> pl.DataFrame:
        return self.report.orders

    @property
    def fills(self) -> pl.DataFrame:
        return self.report.fills


def act(session: Session, now: datetime, evaluation: Any, snapshot: Any, accounts: pl.DataFrame | None = None) -> Acted:
    """Hand the policy's actions and the operators' emergency requests to the broker.

    Idempotency keys make retries and replays harmless: an action whose key the
    broker has seen is not executed again.
    """
    ids = accounts["account_id"].to_list() if accounts is not None else evaluation.state["account_id"].to_list()
    manual = session.manual_actions(now, ids)
    actions = pl.concat([evaluation.actions, manual], how="vertical_relaxed") if manual.height else evaluation.actions
    # bid/ask too, so fills pay the spread; the broker skips instruments without a two-sided quote
    prices = snapshot.ticks[["instrument", "bid", "ask", "mid"]]
    return Acted(actions=actions, manual=manual, report=session.broker.execute(actions, prices, now))


def record(session: Session, result: CycleResult, finished_at: datetime, flow_run_id: str | None) -> None:
    """Write the cycle's records to the warehouse in one transaction and publish the heartbeat."""
    session.record(result, finished_at, flow_run_id)


def run_cycle(session: Session, now: datetime, cycle_id: str, flow_run_id: str | None = None) -> CycleResult:
    """One cycle's eight stages called in order, without Prefect (benchmarks and tests; the monitor
    runs them as tasks, see ``flows.risk_cycle``)."""
    r = CycleResult(cycle_id=cycle_id, now=now)
    r.snapshot = ingest(session, now)
    r.validation = validate(session, r.snapshot, now)
    r.book = compute_metrics(session, r.validation, r.snapshot)
    r.sizing = size_positions(session, r.book)
    r.evaluation = evaluate_triggers(session, now, r.book, r.snapshot)
    r.escalation = escalate(session, now, r.evaluation)
    r.execution = act(session, now, r.evaluation, r.snapshot, r.book.accounts)
    record(session, r, now, flow_run_id)
    return r
