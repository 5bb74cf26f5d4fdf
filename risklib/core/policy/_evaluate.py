"""Trigger evaluation: metrics + previous state in, new state, alerts, actions and cadence out.

Pure and vectorized: one call evaluates every account with numpy over arrays
(a Python loop runs over the handful of rules and overrides, never over accounts).

How one rule (ladder) is evaluated for every account:

* ``raw`` = how many of the ladder's thresholds the metric passes now
  (``>=`` when the ladder is inclusive, else ``>``).
* Escalation is immediate: ``held = raw`` when ``raw >= previous held``.
* De-escalation is deliberate: below the held level the metric must stay under
  ``threshold * (1 - clear_margin)`` for ``dwell_s`` (positive evidence: valid
  data); then the held level drops to the level that margin test leaves.
* A step's cut (REDUCE/CLOSE/CLOSE_ALL) is ordered only once confirmed:
  ``confirm_evaluations`` consecutive evaluations at or above the step spanning
  ``confirm_duration_s``. While a cut awaits confirmation the account asks to be
  re-evaluated after ``confirm_recheck_s``.
* Cuts compound within a rule's ladder (each step once per episode: drawdown
  20 %, then 50 %, then close 50 %); across rules the most protective target
  wins. The account tracks the share already cut in its episode, so an action
  already ordered is never ordered again and re-evaluating the same cycle
  yields the same idempotency keys.

Combination across rules: alert level = max, sizing multiplier = min, trading
mode = most restrictive, cadence = shortest; any held ``trip`` step opens the
breaker. Missing or invalid metrics fail closed (rule ``data``): no new entries
and an alert, and no de-escalation. Unknown feed silence (no market inputs)
fails closed too (rule ``feed``, ``feed_unknown``): no new entries, no cut.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.policy import _breaker as brk
from risklib.core.policy._config import RULES, PolicyConfig
from risklib.core.policy._enums import MODES_BY_RANK, RISK_LEVELS_BY_RANK, TradingMode
from risklib.core.policy._hysteresis import combine, held_rows, step_ladder
from risklib.core.policy._ladders import EPS, Catalog, catalog
from risklib.core.policy._overrides import apply_overrides, check_override
from risklib.core.policy._records import (
    BREAKER_SERIES,
    MODE_SERIES,
    cut_actions,
    fired_records,
    mode_actions,
    take,
    ts_text,
)
from risklib.core.policy._stress import MarketInputs, StressAssessment, classify_vol_ratio, detect_market_stress
from risklib.errors import DataError

__all__ = ["Evaluation", "check_override", "evaluate"]

_METRICS_SCHEMA = pl.Schema(frames.ACCOUNT_METRICS)
_RISK_SERIES = pl.Series([r.value for r in RISK_LEVELS_BY_RANK], dtype=pl.String)
_MODE_RANKS = {m.value: m.rank for m in MODES_BY_RANK}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    state
        One row per account: ``frames.RISK_STATE_CORE`` columns first, then bookkeeping
        (JSON-friendly scalars) fed back as ``previous`` next cycle.
    alerts
        ``frames.ALERTS``: one row per (incident, cycle) while a condition holds.
    actions
        ``frames.ACTIONS`` ordered this cycle (idempotent keys).
    rules_fired
        ``frames.RULES_FIRED``: every rule that fired, with basis and effect, for the audit.
    stress
        Market-level stress assessment.
    next_interval_s
        Shortest cadence any account or the market requires, seconds.
    """

    state: pl.DataFrame
    alerts: pl.DataFrame
    actions: pl.DataFrame
    rules_fired: pl.DataFrame
    stress: StressAssessment
    next_interval_s: float

    def summary(self) -> str:
        s = self.state
        return (
            f"{s.height} accounts, {self.alerts.height} alerts, {self.actions.height} actions, "
            f"stress level {self.stress.stress_level} ({self.stress.primary_stress}), "
            f"next in {self.next_interval_s:g}s"
        )

# --- helpers ---------------------------------------------------------------------------------------


class _Reader:
    """Numeric and boolean columns of a frame as float arrays, read on first use; null is NaN."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame
        self.schema = frame.schema  # built on each access: read it once
        self.n = frame.height
        self.cols: dict[str, np.ndarray | None] = {}

    def raw(self, name: str) -> np.ndarray | None:
        """The column as floats (NaN for null), or None when absent or not numeric."""
        if name in self.cols:
            return self.cols[name]
        a = None
        t = self.schema.get(name)
        if t is not None and t.is_numeric():  # Series.to_numpy is zero-copy or a cheap conversion, no query
            a = np.asarray(self.frame[name].to_numpy(), dtype=float)
        elif t == pl.Boolean:
            v = self.frame[name].to_numpy()
            a = np.array([np.nan if x is None else float(x) for x in v]) if v.dtype == object else v.astype(float)
        self.cols[name] = a
        return a

    def __call__(self, name: str, default: float, dtype=float) -> np.ndarray:
        a = self.raw(name)
        if a is None:
            return np.full(self.n, default, dtype=dtype)
        if default == default:  # not NaN: nulls take the default
            a = np.where(np.isnan(a), default, a)
        return a.astype(dtype, copy=False)


class _Book:
    """The previous state's bookkeeping columns read in one conversion: accounts x columns, column-major
    floats (null is NaN); a name the state lacks maps to a trailing all-NaN column."""

    def __init__(self, frame: pl.DataFrame, names: list[str]) -> None:
        schema = frame.schema
        present = [c for c in names if c in schema and schema[c].is_numeric()]
        self.index = {c: i for i, c in enumerate(present)}
        self.missing = len(present)
        self.values = np.empty((frame.height, len(present) + 1), order="F")
        # column by column: a column without nulls (as evaluate writes them) converts without a mask
        for j, c in enumerate(present):
            s = frame.get_column(c)
            self.values[:, j] = s.to_numpy() if s.null_count() == 0 else s.cast(pl.Float64).to_numpy()
        self.values[:, -1] = np.nan

    def col(self, name: str) -> int:
        return self.index.get(name, self.missing)

    def __call__(self, name: str) -> np.ndarray:
        return self.values[:, self.col(name)]


def _book_columns(cat: Catalog) -> list[str]:
    """Every bookkeeping column the evaluation reads back from the previous state."""
    names = ["cut_total", "brk_opened_s", "brk_clear_s", "brk_half_s"]
    for rule in RULES:
        cut_ks, _, c = _rule_columns(cat, rule)
        names += [c["lvl"], c["below"], c["since"], c["conf"]]
        for k in cut_ks.tolist():
            names += [c["streak"][k], c["first"][k]]
    return names


@functools.cache
def _rule_columns_of(rule: str, k: int, cut_step: tuple) -> tuple:
    """See :func:`_rule_columns` (cached by ladder shape)."""
    cut_ks = np.flatnonzero(np.asarray(cut_step, bool))
    cut_row = np.full(k + 1, -1, np.int64)
    cut_row[cut_ks] = np.arange(cut_ks.size)
    names = {"streak": [f"n_{rule}_{j}" for j in range(k + 1)], "first": [f"t_{rule}_{j}" for j in range(k + 1)],
             "lvl": f"lvl_{rule}", "below": f"below_{rule}", "since": f"since_{rule}", "conf": f"conf_{rule}"}
    return cut_ks, cut_row, names


def _rule_columns(cat: Catalog, rule: str) -> tuple:
    """A ladder's steps with a cut, each step's row among them (-1: none), and its bookkeeping column names
    (made once per ladder shape: formatting them was a visible part of an evaluation)."""
    a = cat.ladders[rule]
    return _rule_columns_of(rule, a.k, tuple(bool(x) for x in a.cut_step))


def _thresholds(rule: str, cfg: PolicyConfig, groups: pl.Series, scale: np.ndarray | None) -> np.ndarray:
    base = np.asarray(cfg.ladder(rule).thresholds, float)
    if scale is None and not any(rule in rules for rules in cfg.groups.values()):
        return np.broadcast_to(base, (groups.len(), base.shape[0]))  # read-only view, no copy
    th = np.broadcast_to(base, (groups.len(), base.shape[0])).copy()
    for g, rules in cfg.groups.items():  # loop over configured groups, not accounts
        if rule in rules:
            th[(groups == g).to_numpy()] = np.asarray(rules[rule], float)
    return th if scale is None else th * scale[:, None]


def _codes_of(p: pl.DataFrame, column: str, table: dict[str, int], null: str, unknown: int, n: int) -> np.ndarray:
    """A previous state's enum column as integer codes (null counts as ``null``, unknown names as ``unknown``)."""
    if column not in p.columns:
        return np.zeros(n, np.int64)
    s = p[column]
    if s.null_count():
        s = s.fill_null(null)
    out = np.full(n, unknown, np.int64)
    for name, code in table.items():  # a few names: one comparison each beats a hash lookup per row
        out[(s == name).to_numpy()] = code
    return out


def _episodes(acct: pl.Series, prev_ep: pl.Series, in_episode: np.ndarray, now_s: float) -> pl.Series:
    """Episode ids: kept while the account stays in an episode, ``<account>:<now>`` when one starts."""
    prev_null = prev_ep.is_null().to_numpy()
    start = np.flatnonzero(in_episode & prev_null)
    ended = np.flatnonzero(~in_episode & ~prev_null)
    ep = prev_ep.cast(pl.String).clone()  # scatter writes in place: never into the previous state
    if ended.size:
        ep = ep.scatter(ended, pl.repeat(None, ended.size, dtype=pl.String, eager=True))
    if start.size:
        now_str = ts_text(now_s)
        ep = ep.scatter(start, take(acct, start) + (":" + now_str))
    return ep.alias("episode_id")


# --- the evaluation --------------------------------------------------------------------------------


def evaluate(
    now: datetime,
    metrics: pl.DataFrame,
    previous: pl.DataFrame | None,
    config: PolicyConfig,
    *,
    market: MarketInputs | None = None,
    overrides: pl.DataFrame | None = None,
) -> Evaluation:
    """Evaluate the policy for every account in one vectorized call.

    Parameters
    ----------
    now
        Evaluation time (timezone-aware). The core never reads a clock.
    metrics
        ``frames.ACCOUNT_METRICS``. Rows with ``valid=False`` or null/NaN required metrics
        fail closed (rule ``data``: no new entries, an alert, no de-escalation).
    previous
        The ``state`` this function returned last cycle (or restored from the warehouse);
        None on a first start. Accounts present here but absent from ``metrics`` are kept
        and fail closed. Missing bookkeeping columns are rebuilt conservatively (a held
        breaker or mode is never cleared by a restart).
    config
        The policy.
    market
        Market-wide inputs for stress detection and the feed rule. None: stress detectors
        silent and the feed's silence unknown, which fails closed (no new entries).
    overrides
        Active manual overrides (``frames.OVERRIDES``). Out-of-authority or non-expiring
        overrides are ignored and reported in ``rules_fired`` (rule ``override``).

    Returns
    -------
    Evaluation
    """
    if now.tzinfo is None:
        raise DataError(f"now={now!r}: must be timezone-aware")
    now_s = now.timestamp()
    cat = catalog(config)
    lad = cat.ladders

    if metrics.schema == _METRICS_SCHEMA:
        m = metrics  # already the contract's columns, types and order
    else:
        m = frames.conform(metrics, frames.ACCOUNT_METRICS, "metrics")
    prev = previous if previous is not None and previous.height else None
    if prev is not None and not (prev.height == m.height and prev["account_id"].equals(m["account_id"])):
        gone = prev.filter(~pl.col("account_id").is_in(m["account_id"].implode()))
        if gone.height:
            filler = pl.DataFrame({"account_id": gone["account_id"]}).with_columns(
                pl.lit(None, pl.String).alias("account_group")
                if "account_group" not in gone.columns else gone["account_group"].alias("account_group"),
                (gone["peak_equity_usd"] if "peak_equity_usd" in gone.columns else pl.lit(None, pl.Float64)).alias("peak_equity_usd"),
                pl.lit(False).alias("valid"),
                pl.lit("account missing from metrics").alias("invalid_reason"),
            )
            m = pl.concat([m, filler], how="diagonal_relaxed")
            m = frames.conform(m, frames.ACCOUNT_METRICS, "metrics")
    if prev is not None:
        if prev.height == m.height and prev["account_id"].equals(m["account_id"]):
            p = prev  # steady state: same accounts in the same order, no join needed
        else:
            p = m.select("account_id").join(prev, on="account_id", how="left")
    else:
        p = m.select("account_id")


    n = m.height
    mcol = _Reader(m)
    book = _Book(p, _book_columns(cat))
    acct = m["account_id"]
    groups = m["account_group"]
    if groups.null_count():
        groups = groups.fill_null("")
    stress = detect_market_stress(now, market, config.stress_detection)

    # data validity: fail closed
    valid = mcol("valid", 0.0) > 0.5
    for c in config.data.required_metrics:
        valid &= np.isfinite(mcol(c, np.nan))
    valid &= mcol("equity_usd", np.nan) > 0
    if valid.all():
        reason = pl.repeat("", n, eager=True, dtype=pl.String)
    else:
        # "" for valid rows, else the row's reason: a gather from ["", reasons of the invalid rows...]
        bad = np.flatnonzero(~valid)
        code = np.zeros(n, np.int64)
        code[bad] = np.arange(1, bad.size + 1)
        why = take(m["invalid_reason"], bad).fill_null("missing or non-finite required metric")
        reason = take(pl.concat([pl.Series([""], dtype=pl.String), why]), code)

    suspended, scale, reset, rejected = apply_overrides(now, overrides, acct, config, n)

    # metric values per rule
    var = np.fmax(mcol("var_99", np.nan), mcol("var_99_parametric", np.nan))
    vol_ratio = mcol("vol_ratio", np.nan)
    acct_stress = classify_vol_ratio(vol_ratio, config.stress_detection.vol_levels).astype(float)
    stress_v = np.maximum(acct_stress, float(stress.stress_level))
    feed_known = market is not None and market.feed_silent_s is not None
    feed_v = np.full(n, float(market.feed_silent_s) if feed_known else np.nan)
    values = {
        "drawdown": mcol("drawdown", np.nan),
        "volatility": vol_ratio,
        "stress": stress_v,
        "var": var,
        "daily_loss": mcol("daily_loss", np.nan),
        "exposure": mcol("exposure_pct", np.nan),
        "risk_score": mcol("risk_score", np.nan),
        "correlation": mcol("correlation_index", np.nan),
        "feed": feed_v,
    }

    # every ladder: hysteresis and confirmation per account; then effects combined across rules
    held_all = np.empty((len(RULES), n), np.int64)
    conf_all = np.empty((len(RULES), n), np.int64)
    active_all = np.empty((len(RULES), n), bool)
    since_all = np.empty((len(RULES), n))
    raw_all = np.empty((len(RULES), n), np.int64)
    values_all = np.empty((len(RULES), n))
    suspended_all = np.empty((len(RULES), n), bool)
    th_parts = []
    out: dict[str, np.ndarray] = {}
    for r_id, rule in enumerate(RULES):
        a = lad[rule]
        L = a.ladder
        v = values_all[r_id]
        v[:] = values[rule]
        suspended_all[r_id] = suspended[rule]
        th = _thresholds(rule, config, groups, scale[rule])
        shared = th.strides[0] == 0  # a broadcast view: the ladder's own thresholds, every account's
        th = np.ascontiguousarray(th[:1] if shared else th)
        th_parts.append((th, shared))
        cut_ks, cut_row, names = _rule_columns(cat, rule)
        c_streak = np.array([book.col(c) for c in names["streak"]], np.int64)
        c_first = np.array([book.col(c) for c in names["first"]], np.int64)
        held, conf, since = held_all[r_id], conf_all[r_id], since_all[r_id]
        active_all[r_id] = ~suspended[rule]
        raw = raw_all[r_id]
        below = np.empty(n)
        streak = np.empty((cut_ks.size, n), np.int64)
        first = np.empty((cut_ks.size, n))
        step_ladder(
            now_s, v, th, L.inclusive, 1.0 - L.clear_margin, L.dwell_s,
            rule not in ("stress", "feed"), valid,
            book.values, book.col(names["lvl"]), book.col(names["below"]), book.col(names["since"]),
            book.col(names["conf"]), c_streak, c_first,
            cut_row, a.confirm_n, a.confirm_s, a.cumcut,
            held, raw, below, since, conf, streak, first,
        )
        for row, k in enumerate(cut_ks.tolist()):
            out[names["streak"][k]] = streak[row]
            out[names["first"][k]] = first[row]
        out[names["lvl"]] = held
        out[names["below"]] = below
        out[names["since"]] = since
        out[names["conf"]] = conf
    th_size = np.array([t.size for t, _ in th_parts], np.int64)
    held_steps = held_rows(
        held_all, raw_all, values_all, since_all, suspended_all, cat.offset, cat.alert,
        np.concatenate([t.ravel() for t, _ in th_parts]), np.concatenate([[0], np.cumsum(th_size)[:-1]]),
        np.array([shared for _, shared in th_parts]), np.array([t.shape[1] for t, _ in th_parts], np.int64))

    prev_cut = np.clip(np.where(np.isnan(book("cut_total")), 0.0, book("cut_total")), 0.0, 1.0)
    alert = np.empty(n, np.int64)
    sizing = np.empty(n)
    mode = np.empty(n, np.int64)
    cadence = np.empty(n)
    signal = np.empty(n)
    budget = np.empty(n)
    trip = np.empty(n, bool)
    pending = np.empty(n, bool)
    target = np.empty(n)
    target_rule = np.empty(n, np.int64)
    target_level = np.empty(n, np.int64)
    t = cat.tables
    combine(held_all, conf_all, active_all, prev_cut, float(config.normal_cadence_s), TradingMode.HALTED.rank,
            t["alert"], t["sizing"], t["mode"], t["flatten"], t["cadence"], t["signal"], t["budget"], t["trip"],
            t["cumcut"], alert, sizing, mode, cadence, signal, budget, trip, pending, target, target_rule,
            target_level)

    # fail closed: data and unknown feed
    invalid = ~valid
    alert = np.where(invalid, np.maximum(alert, config.data.alert_level), alert)
    mode = np.where(invalid, np.maximum(mode, config.data.trading_mode.rank), mode)
    if not feed_known and not suspended["feed"].all():
        fu = ~suspended["feed"]
        alert = np.where(fu, np.maximum(alert, config.feed_unknown.alert_level), alert)
        mode = np.where(fu, np.maximum(mode, config.feed_unknown.trading_mode.rank), mode)

    # breaker
    prev_brk = _codes_of(p, "breaker_state", brk.CODES, "CLOSED", brk.OPEN, n)
    new_brk, opened, clear, half = brk.step_breakers(
        now_s, prev_brk.astype(np.int64), trip, valid,
        book("brk_opened_s"), book("brk_clear_s"), book("brk_half_s"),
        reset, config.breaker,
    )
    is_open = new_brk == brk.OPEN
    is_half = new_brk == brk.HALF_OPEN
    mode = np.where(is_open, np.maximum(mode, TradingMode.HALTED.rank), mode)
    alert = np.where(is_open, np.maximum(alert, config.breaker.alert_level_open), alert)
    alert = np.where(is_half, np.maximum(alert, config.breaker.alert_level_half_open), alert)
    sizing = np.where(is_half, np.minimum(sizing, config.breaker.half_open_sizing), sizing)
    # a restart without bookkeeping never clears a halt: keep the previous mode while the breaker is not CLOSED
    prev_mode_rank = _codes_of(p, "trading_mode", _MODE_RANKS, "ACTIVE", TradingMode.HALTED.rank, n)
    mode = np.where(is_open, np.maximum(mode, prev_mode_rank), mode)
    sizing = np.where(mode > 0, 0.0, sizing)

    # cadence: pending confirmations re-check soon
    cadence = np.where(pending, np.minimum(cadence, config.confirm_recheck_s), cadence)
    cadence = np.where(invalid, np.minimum(cadence, lad["drawdown"].cadence[1]), cadence)

    # risk level and caps
    rl = config.risk_levels
    score = mcol("risk_score", np.nan)
    # thresholds are validated ascending: "how many reached" is a sorted search
    score_rank = np.where(np.isfinite(score), np.searchsorted(np.asarray(rl.score_thresholds), score, side="right"), 4)
    floor = np.asarray(rl.alert_floor)[np.clip(alert, 0, 5)]
    rank = np.maximum(score_rank, floor)
    emergency = (new_brk != brk.CLOSED) | (alert >= 4) | (mode >= TradingMode.HALTED.rank)
    rank = np.where(emergency, 5, rank)
    lev_table = np.array([rl.max_leverage[r.value] for r in RISK_LEVELS_BY_RANK[:5]] + [rl.emergency_leverage])
    pos_table = np.array([rl.base_position[r.value] for r in RISK_LEVELS_BY_RANK[:5]]
                         + [min(rl.emergency_position, rl.base_position["CRITICAL"])])
    max_leverage = lev_table[rank]
    max_position = np.minimum(pos_table[rank], config.risk_budget.max_single_position)
    max_positions = np.where(emergency, rl.emergency_max_positions, rl.normal_max_positions)
    max_positions = np.where(is_half, np.minimum(max_positions, config.breaker.half_open_max_positions), max_positions)
    stop_loss = np.where(emergency, rl.emergency_stop_loss, rl.normal_stop_loss)

    # episode
    in_episode = (alert > 0) | (new_brk != brk.CLOSED) | (mode > 0) | (target > EPS)
    prev_ep = p["episode_id"] if "episode_id" in p.columns else pl.Series("episode_id", [None] * n, dtype=pl.String)
    episode = _episodes(acct, prev_ep, in_episode, now_s) if n else pl.Series([], dtype=pl.String)
    cut_total = np.where(in_episode, target, 0.0)

    # actions: confirmed cuts, then mode transitions
    # the evaluation time as the frames store it: UTC microseconds (Polars converts a zoned datetime slowly)
    ts_us = (now - _EPOCH) // _US
    ts_col = pl.lit(ts_us, pl.Int64).cast(frames.UTC_TS)
    act_rows = []
    order_cut = in_episode & (target > prev_cut + EPS)
    if order_cut.any():
        act_rows.append(cut_actions(cat, acct, ts_col, np.flatnonzero(order_cut), target=target, prev_cut=prev_cut,
                                    target_rule=target_rule, target_level=target_level, since_all=since_all))
    if (mode != prev_mode_rank).any():
        transitions = mode_actions(acct, ts_col, now_s, mode, prev_mode_rank, episode, prev_ep)
        if transitions is not None:
            act_rows.append(transitions)
    actions = pl.concat(act_rows) if act_rows else frames.empty(frames.ACTIONS)
    actions = frames.conform(actions, frames.ACTIONS, "actions")

    # alerts and the audit of fired rules: ladder steps, then data, feed, breaker and overrides
    rules_fired, alerts = fired_records(
        config, cat, acct, ts_col, mode, now_s, held_steps, suspended, invalid=invalid, reason=reason,
        feed_known=feed_known, new_brk=new_brk, opened=opened, episode=episode, rejected=rejected)

    # state
    market_cadence = lad["stress"].cadence[min(stress.stress_level, lad["stress"].k)]
    cols: dict[str, object] = {
        "account_id": acct,
        "episode_id": episode,
        "alert_level": alert.astype(np.int64),
        "breaker_state": take(BREAKER_SERIES, new_brk),
        "trading_mode": take(MODE_SERIES, mode),
        "risk_level": take(_RISK_SERIES, rank),
        "sizing_multiplier": np.clip(sizing, 0.0, 1.0),
        "max_leverage": max_leverage,
        "next_cadence_s": cadence,
        "peak_equity_usd": mcol("peak_equity_usd", np.nan),
        "account_group": groups,
        "valid": valid,
        "invalid_reason": reason,
        "signal_filter": signal,
        "risk_budget": budget,
        "max_position_frac": max_position,
        "max_positions": max_positions.astype(np.int64),
        "stop_loss": stop_loss,
    }
    # the contract's columns read NaN as null; bookkeeping keeps NaN ("not set"): a column without a
    # validity mask is read back next cycle without a conversion, and the warehouse's JSON writes it as null
    state = pl.DataFrame([
        pl.Series(k, v, nan_to_null=True) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else pl.Series(k, v)
        for k, v in cols.items()
    ] + [pl.Series(k, v) for k, v in (("cut_total", cut_total), ("brk_opened_s", opened), ("brk_clear_s", clear),
                                      ("brk_half_s", half), *out.items())])
    state.insert_column(1, pl.Series("ts", np.full(n, ts_us, np.int64)).cast(frames.UTC_TS))
    next_interval = float(min(cadence.min() if n else np.inf, market_cadence,
                              config.normal_cadence_s))
    return Evaluation(state, alerts, actions, rules_fired, stress, next_interval)
