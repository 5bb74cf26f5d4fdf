"""Reference implementation of trigger evaluation and position sizing: the earlier Polars
form of ``evaluate`` and ``size_positions``, kept verbatim as the oracle the optimized engine
is compared with (``test_reference_equivalence.py``). Not used by the product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.policy import _breaker as brk
from risklib.core.policy._config import CUT_ACTIONS, RULES, Ladder, PolicyConfig
from risklib.core.policy._enums import (
    MODES_BY_RANK,
    RISK_LEVELS_BY_RANK,
    ActionKind,
    BreakerEffect,
    TradingMode,
)
from risklib.core.policy._stress import MarketInputs, StressAssessment, classify_vol_ratio, detect_market_stress
from risklib.core.policy._sizing import dynamic_multiplier
from risklib.errors import AuthorityError, DataError

_EPS = 1e-9
_MODE_NAMES = np.array([m.value for m in MODES_BY_RANK], dtype=object)
_MODE_SERIES = pl.Series([m.value for m in MODES_BY_RANK], dtype=pl.String)
_BLOCKS_SERIES = pl.Series([m.blocks for m in MODES_BY_RANK], dtype=pl.String)
_RISK_SERIES = pl.Series([r.value for r in RISK_LEVELS_BY_RANK], dtype=pl.String)
_BREAKER_SERIES = pl.Series(list(brk.NAMES), dtype=pl.String)


_METRICS_SCHEMA = pl.Schema(frames.ACCOUNT_METRICS)
_RULE_SERIES = pl.Series(list(RULES), dtype=pl.String)
_ACTION_SERIES = pl.Series([a.value for a in ActionKind], dtype=pl.String)
_ACTION_CODES = {a.value: i for i, a in enumerate(ActionKind)}


def _take(values: pl.Series, idx: np.ndarray) -> pl.Series:
    """Strings by integer index, staying in Polars (no numpy object arrays on the hot path)."""
    return values.gather(pl.Series(np.asarray(idx, np.int64)))


# --- precomputed ladder arrays -------------------------------------------------------------------


@dataclass(frozen=True)
class _LadderArrays:
    """Per-step effects, index 0 = no step held (neutral), index k = step k (1-based)."""

    rule: str
    ladder: Ladder
    k: int
    alert: np.ndarray
    sizing: np.ndarray
    mode: np.ndarray
    flatten: np.ndarray  # step's mode is FLATTEN
    cadence: np.ndarray  # effective cadence (shortest of steps <= k)
    signal: np.ndarray
    budget: np.ndarray
    trip: np.ndarray  # cumulative: some step <= k trips
    warning: np.ndarray
    cumcut: np.ndarray  # cumulative cut share after steps <= k (compounded)
    cut_kind: np.ndarray  # action name of the last cut step <= k (object)
    confirm_n: np.ndarray
    confirm_s: np.ndarray
    names: np.ndarray  # step names (object), "" at 0
    effects: np.ndarray  # human description (object)
    names_s: pl.Series
    effects_s: pl.Series
    halt_action: np.ndarray  # HALT_* action of step k ("" if none)


def _arrays(rule: str, ladder: Ladder, cfg: PolicyConfig) -> _LadderArrays:
    steps = ladder.levels
    k = len(steps)
    alert = np.zeros(k + 1, np.int64)
    sizing = np.ones(k + 1)
    mode = np.zeros(k + 1, np.int64)
    flatten = np.zeros(k + 1, bool)
    cadence = np.full(k + 1, cfg.normal_cadence_s)
    signal = np.zeros(k + 1)
    budget = np.ones(k + 1)
    trip = np.zeros(k + 1, bool)
    warning = np.zeros(k + 1, bool)
    cumcut = np.zeros(k + 1)
    cut_kind = np.full(k + 1, "", dtype=object)
    confirm_n = np.ones(k + 1, np.int64)
    confirm_s = np.zeros(k + 1)
    names = np.full(k + 1, "", dtype=object)
    effects = np.full(k + 1, "", dtype=object)
    halt_action = np.full(k + 1, "", dtype=object)
    for i, s in enumerate(steps, start=1):
        alert[i] = s.alert_level
        sizing[i] = s.sizing_multiplier
        mode[i] = s.trading_mode.rank
        flatten[i] = s.trading_mode is TradingMode.FLATTEN
        cadence[i] = min(cadence[i - 1], s.cadence_s if s.cadence_s is not None else np.inf)
        signal[i] = s.signal_filter
        budget[i] = s.risk_budget
        trip[i] = trip[i - 1] or s.breaker is BreakerEffect.TRIP
        warning[i] = warning[i - 1] or s.breaker is not BreakerEffect.NONE
        remaining = 1.0 - cumcut[i - 1]
        if s.action in CUT_ACTIONS:
            remaining *= 1.0 - s.fraction
            cut_kind[i] = s.action.value
        else:
            cut_kind[i] = cut_kind[i - 1]
        cumcut[i] = 1.0 - remaining
        confirm_n[i] = s.confirm_evaluations
        confirm_s[i] = s.confirm_duration_s
        names[i] = s.name
        if s.action in (ActionKind.HALT_ENTRIES, ActionKind.HALT_ALL):
            halt_action[i] = s.action.value
        parts = [f"alert {s.alert_level}", f"sizing x{s.sizing_multiplier:g}", f"mode {s.trading_mode.value}"]
        if s.cadence_s is not None:
            parts.append(f"cadence {s.cadence_s:g}s")
        if s.action is not ActionKind.NONE:
            parts.append(f"{s.action.value} {s.fraction:g}" if s.action in CUT_ACTIONS else s.action.value)
            if s.action in CUT_ACTIONS:
                parts.append(f"confirm {s.confirm_evaluations} eval/{s.confirm_duration_s:g}s")
        if s.breaker is not BreakerEffect.NONE:
            parts.append(f"breaker {s.breaker.value}")
        if s.signal_filter:
            parts.append(f"signal filter +{s.signal_filter:.0%}")
        if s.risk_budget < 1:
            parts.append(f"risk budget {s.risk_budget:.0%}")
        effects[i] = ", ".join(parts)
    return _LadderArrays(rule, ladder, k, alert, sizing, mode, flatten, cadence, signal, budget, trip, warning,
                         cumcut, cut_kind, confirm_n, confirm_s, names, effects,
                         pl.Series(names.tolist(), dtype=pl.String), pl.Series(effects.tolist(), dtype=pl.String),
                         halt_action)


_CACHE: dict[int, tuple[PolicyConfig, dict[str, _LadderArrays]]] = {}


def _ladders(cfg: PolicyConfig) -> dict[str, _LadderArrays]:
    hit = _CACHE.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    arrs = {r: _arrays(r, cfg.ladder(r), cfg) for r in RULES}
    if len(_CACHE) > 16:
        _CACHE.clear()
    _CACHE[id(cfg)] = (cfg, arrs)
    return arrs


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


# --- overrides -------------------------------------------------------------------------------------


def check_override(override: dict, config: PolicyConfig) -> None:
    """Refuse an override beyond the authority the spec gives its level.

    Parameters
    ----------
    override
        A row of ``frames.OVERRIDES`` as a dict.
    config
        Policy (its ``authority`` table and each rule's ``override_authority``).

    Raises
    ------
    AuthorityError
        Naming the field and value that exceed the authority.
    DataError
        For a malformed override (unknown rule or action, no expiry).
    """
    rule, action = override.get("rule"), override.get("action")
    level = override.get("authority_level")
    created, expires = override.get("created_at"), override.get("expires_at")
    if expires is None:
        raise DataError("expires_at=None: every override must expire")
    if created is None:
        raise DataError("created_at=None: needed to check the override's duration")
    if level is None or level not in config.authority:
        raise AuthorityError(f"authority_level={level!r}: must be 1-5")
    duration = (expires - created).total_seconds()
    if duration <= 0:
        raise DataError(f"expires_at={expires}: must be after created_at={created}")
    auth = config.authority[level]
    if action == "reset":
        if rule != "breaker":
            raise DataError(f"rule={rule!r}: action 'reset' applies to rule 'breaker' only")
        if level < config.breaker.reset_authority:
            raise AuthorityError(
                f"authority_level={level}: breaker reset needs >= {config.breaker.reset_authority}"
            )
        return
    if rule not in RULES:
        raise DataError(f"rule={rule!r}: unknown; known: {list(RULES)} or 'breaker'")
    need = config.ladder(rule).override_authority
    if level < need:
        raise AuthorityError(f"authority_level={level}: rule {rule!r} needs >= {need}")
    if action == "suspend":
        if auth.suspend_max_s <= 0:
            raise AuthorityError(f"authority_level={level} ({auth.role}): may not suspend a rule")
        if duration > auth.suspend_max_s:
            raise AuthorityError(
                f"expires_at={expires}: suspension of {duration:g}s exceeds {auth.suspend_max_s:g}s for "
                f"authority_level={level} ({auth.role})"
            )
    elif action == "adjust":
        scale = override.get("threshold_scale")
        if scale is None or not math.isfinite(scale) or scale <= 0:
            raise DataError(f"threshold_scale={scale!r}: must be > 0")
        if abs(scale - 1.0) > auth.max_threshold_change + _EPS:
            raise AuthorityError(
                f"threshold_scale={scale:g}: change {abs(scale - 1):.0%} exceeds {auth.max_threshold_change:.0%} for "
                f"authority_level={level} ({auth.role})"
            )
        if duration > auth.adjust_max_s:
            raise AuthorityError(f"expires_at={expires}: adjustment of {duration:g}s exceeds {auth.adjust_max_s:g}s")
    else:
        raise DataError(f"action={action!r}: must be 'suspend', 'adjust' or 'reset'")


def _apply_overrides(now, overrides, acct: pl.Series, cfg, n):
    """Masks of suspended rules, threshold scales, manual resets, and audit rows of rejected overrides."""
    suspended = {r: np.zeros(n, bool) for r in RULES}
    scale: dict[str, np.ndarray | None] = {r: None for r in RULES}
    reset = np.zeros(n, bool)
    rejected: list[dict] = []
    if overrides is None or overrides.height == 0:
        return suspended, scale, reset, rejected
    ov = frames.conform(overrides, frames.OVERRIDES, "overrides")
    for row in ov.iter_rows(named=True):  # overrides are few: loop over them, not accounts
        if row["created_at"] is not None and now < row["created_at"]:
            continue
        if row["expires_at"] is not None and now >= row["expires_at"]:
            continue  # expired: no effect
        who = row["account_id"]
        mask = np.ones(n, bool) if who == "*" else (acct == who).to_numpy()
        try:
            check_override(row, cfg)
        except (AuthorityError, DataError) as exc:
            rejected.append({"account_id": who, "rule": row["rule"], "why": str(exc), "id": row["override_id"]})
            continue
        if row["action"] == "reset":
            reset |= mask
        elif row["action"] == "suspend":
            suspended[row["rule"]] |= mask
        else:
            cur = scale[row["rule"]] if scale[row["rule"]] is not None else np.ones(n)
            scale[row["rule"]] = np.where(mask, cur * row["threshold_scale"], cur)
    return suspended, scale, reset, rejected


# --- helpers ---------------------------------------------------------------------------------------


class _Reader:
    """Numeric columns of a frame read into numpy in one Polars call; nulls become NaN, then ``default``."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.n = frame.height
        self.cols = {}
        for c, t in frame.schema.items():  # Series.to_numpy is zero-copy or a cheap conversion, no query
            if t.is_numeric():
                self.cols[c] = np.asarray(frame[c].to_numpy(), dtype=float)
            elif t == pl.Boolean:
                v = frame[c].to_numpy()
                self.cols[c] = np.array([np.nan if x is None else float(x) for x in v]) if v.dtype == object \
                    else v.astype(float)

    def __call__(self, name: str, default: float, dtype=float) -> np.ndarray:
        a = self.cols.get(name)
        if a is None:
            return np.full(self.n, default, dtype=dtype)
        if default == default:  # not NaN: nulls take the default
            a = np.where(np.isnan(a), default, a)
        return a.astype(dtype, copy=False)


def _col(frame: pl.DataFrame, name: str, default: float, dtype=float) -> np.ndarray:
    if name not in frame.columns:
        return np.full(frame.height, default, dtype=dtype)
    s = frame[name]
    if dtype is float:
        return s.cast(pl.Float64).fill_null(default).to_numpy().astype(float, copy=True)
    return s.fill_null(default).to_numpy().astype(dtype, copy=True)


def _ts_strings(epoch_s: np.ndarray) -> pl.Series:
    us = pl.Series(np.where(np.isnan(epoch_s), 0, np.round(epoch_s * 1e6)).astype(np.int64))
    return pl.from_epoch(us, time_unit="us").dt.strftime("%Y%m%dT%H%M%S%.6fZ")


def _thresholds(rule: str, cfg: PolicyConfig, groups: pl.Series, scale: np.ndarray | None) -> np.ndarray:
    base = np.asarray(cfg.ladder(rule).thresholds, float)
    if scale is None and not any(rule in rules for rules in cfg.groups.values()):
        return np.broadcast_to(base, (groups.len(), base.shape[0]))  # read-only view, no copy
    th = np.broadcast_to(base, (groups.len(), base.shape[0])).copy()
    for g, rules in cfg.groups.items():  # loop over configured groups, not accounts
        if rule in rules:
            th[(groups == g).to_numpy()] = np.asarray(rules[rule], float)
    return th if scale is None else th * scale[:, None]


def _count(v: np.ndarray, th: np.ndarray, inclusive: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        hit = (v[:, None] >= th) if inclusive else (v[:, None] > th)
    return hit.sum(axis=1).astype(np.int64)


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
    lad = _ladders(config)

    if metrics.schema == _METRICS_SCHEMA:
        m = metrics  # already the contract's columns, types and order
    else:
        m = frames.conform(metrics, frames.ACCOUNT_METRICS, "metrics")
    prev = previous if previous is not None and previous.height else None
    if prev is not None:
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
        if prev.height == m.height and prev["account_id"].equals(m["account_id"]):
            p = prev  # steady state: same accounts in the same order, no join needed
        else:
            p = m.select("account_id").join(prev, on="account_id", how="left")
    else:
        p = m.select("account_id")

    n = m.height
    mcol = _Reader(m)
    pcol = _Reader(p)
    acct = m["account_id"]
    groups = m["account_group"].fill_null("")
    stress = detect_market_stress(now, market, config.stress_detection)

    # data validity: fail closed
    valid = mcol("valid", 0.0) > 0.5
    for c in config.data.required_metrics:
        valid &= np.isfinite(mcol(c, np.nan))
    valid &= mcol("equity_usd", np.nan) > 0
    reason = pl.Series(
        pl.select(pl.when(pl.lit(pl.Series(valid))).then(pl.lit(""))
                  .otherwise(pl.lit(m["invalid_reason"]).fill_null("missing or non-finite required metric"))).to_series()
    ) if n else pl.Series([], dtype=pl.String)

    suspended, scale, reset, rejected = _apply_overrides(now, overrides, acct, config, n)

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

    alert = np.zeros(n, np.int64)
    sizing = np.ones(n)
    mode = np.zeros(n, np.int64)
    cadence = np.full(n, config.normal_cadence_s)
    signal = np.zeros(n)
    budget = np.ones(n)
    trip = np.zeros(n, bool)
    warn = np.zeros(n, bool)
    pending = np.zeros(n, bool)
    prev_cut = np.clip(pcol("cut_total", 0.0), 0.0, 1.0)
    target = prev_cut.copy()
    target_rule = np.zeros(n, np.int64)
    since_all = np.full((len(RULES), n), np.nan)
    step_offset = np.cumsum([0] + [lad[r].k + 1 for r in RULES])[:-1]
    step_names = pl.Series([x for r in RULES for x in lad[r].names.tolist()], dtype=pl.String)
    step_effects = pl.Series([x for r in RULES for x in lad[r].effects.tolist()], dtype=pl.String)
    basis_s = pl.Series([lad[r].ladder.basis for r in RULES], dtype=pl.String)
    op_s = pl.Series([">=" if lad[r].ladder.inclusive else ">" for r in RULES], dtype=pl.String)
    cut_code_table = np.array([_ACTION_CODES.get(x, 0) for r in RULES for x in lad[r].cut_kind.tolist()], np.int64)
    target_level = np.zeros(n, np.int64)
    out: dict[str, np.ndarray] = {}
    per_rule: dict[str, tuple] = {}

    for rule in RULES:
        a = lad[rule]
        L = a.ladder
        v = values[rule]
        th = _thresholds(rule, config, groups, scale[rule])
        raw = _count(v, th, L.inclusive)
        clear_lvl = _count(v, th * (1.0 - L.clear_margin), L.inclusive)
        P = np.clip(pcol(f"lvl_{rule}", 0, np.int64), 0, a.k)
        below_prev = pcol(f"below_{rule}", np.nan)
        known = np.isfinite(v) & (valid | (rule == "stress") | (rule == "feed"))
        held = np.where(raw >= P, raw, P)
        dropping = (raw < P) & known & (clear_lvl < P)
        below = np.where(dropping, np.where(np.isnan(below_prev), now_s, below_prev), np.nan)
        done = dropping & (now_s - below >= L.dwell_s)
        held = np.where(done, np.maximum(clear_lvl, raw), held)
        below = np.where(done, np.nan, below)

        # confirmation streaks per step
        confirmed = np.zeros(n, np.int64)
        chain = np.ones(n, bool)  # every cut step up to k confirmed (a step's cut never skips a lower one)
        for k in range(1, a.k + 1):
            if a.cumcut[k] <= a.cumcut[k - 1] + _EPS:  # no cut at this step: nothing to confirm
                confirmed = np.where(chain & (held >= k), k, confirmed)
                continue
            s_prev = pcol(f"n_{rule}_{k}", 0, np.int64)
            f_prev = pcol(f"t_{rule}_{k}", np.nan)
            at = raw >= k
            s_k = np.where(at, s_prev + 1, 0)
            f_k = np.where(at, np.where((s_prev > 0) & np.isfinite(f_prev), f_prev, now_s), np.nan)
            ok = at & (s_k >= a.confirm_n[k]) & (now_s - f_k >= a.confirm_s[k] - _EPS)
            chain &= ok
            confirmed = np.where(chain & (held >= k), k, confirmed)
            out[f"n_{rule}_{k}"] = s_k
            out[f"t_{rule}_{k}"] = f_k

        since_prev = pcol(f"since_{rule}", np.nan)
        since = np.where(held > 0, np.where((P > 0) & np.isfinite(since_prev), since_prev, now_s), np.nan)
        conf_prev = pcol(f"conf_{rule}", 0, np.int64)
        conf = np.where(held > 0, np.minimum(np.maximum(conf_prev, confirmed), held), 0)

        active = ~suspended[rule]
        alert = np.maximum(alert, a.alert[held])
        eff = held * active
        sizing = np.minimum(sizing, a.sizing[eff])
        step_mode = np.where(a.flatten[eff] & (a.cumcut[conf * active] < a.cumcut[eff] - _EPS),
                             TradingMode.HALTED.rank, a.mode[eff])
        mode = np.maximum(mode, step_mode)
        cadence = np.minimum(cadence, a.cadence[eff])
        signal = np.maximum(signal, a.signal[eff])
        budget = np.minimum(budget, a.budget[eff])
        trip |= a.trip[eff]
        warn |= a.warning[eff]
        pending |= active & (a.cumcut[held] > a.cumcut[conf] + _EPS)
        t_r = np.where(active, a.cumcut[conf], 0.0)
        better = t_r > target + _EPS
        target = np.where(better, t_r, target)
        target_rule = np.where(better, RULES.index(rule), target_rule)
        target_level = np.where(better, conf, target_level)

        out[f"lvl_{rule}"] = held
        out[f"below_{rule}"] = below
        out[f"since_{rule}"] = since
        out[f"conf_{rule}"] = conf
        per_rule[rule] = (held, v, th, since, raw)
        since_all[RULES.index(rule)] = since

    # fail closed: data and unknown feed
    invalid = ~valid
    alert = np.where(invalid, np.maximum(alert, config.data.alert_level), alert)
    mode = np.where(invalid, np.maximum(mode, config.data.trading_mode.rank), mode)
    if not feed_known and not suspended["feed"].all():
        fu = ~suspended["feed"]
        alert = np.where(fu, np.maximum(alert, config.feed_unknown.alert_level), alert)
        mode = np.where(fu, np.maximum(mode, config.feed_unknown.trading_mode.rank), mode)

    # breaker
    prev_brk = (p["breaker_state"].fill_null("CLOSED").replace_strict(brk.CODES, default=brk.OPEN, return_dtype=pl.Int64)
                .to_numpy() if "breaker_state" in p.columns else np.zeros(n, np.int64))
    new_brk, opened, clear, half = brk.step_breakers(
        now_s, prev_brk.astype(np.int64), trip, valid,
        pcol("brk_opened_s", np.nan), pcol("brk_clear_s", np.nan), pcol("brk_half_s", np.nan),
        reset, config.breaker,
    )
    is_open = new_brk == brk.OPEN
    is_half = new_brk == brk.HALF_OPEN
    mode = np.where(is_open, np.maximum(mode, TradingMode.HALTED.rank), mode)
    alert = np.where(is_open, np.maximum(alert, config.breaker.alert_level_open), alert)
    alert = np.where(is_half, np.maximum(alert, config.breaker.alert_level_half_open), alert)
    sizing = np.where(is_half, np.minimum(sizing, config.breaker.half_open_sizing), sizing)
    # a restart without bookkeeping never clears a halt: keep the previous mode while the breaker is not CLOSED
    prev_mode_rank = (p["trading_mode"].fill_null("ACTIVE").replace_strict(
        {m.value: m.rank for m in MODES_BY_RANK}, default=TradingMode.HALTED.rank, return_dtype=pl.Int64).to_numpy()
        if "trading_mode" in p.columns else np.zeros(n, np.int64))
    mode = np.where(is_open, np.maximum(mode, prev_mode_rank), mode)
    sizing = np.where(mode > 0, 0.0, sizing)

    # cadence: pending confirmations re-check soon
    cadence = np.where(pending, np.minimum(cadence, config.confirm_recheck_s), cadence)
    cadence = np.where(invalid, np.minimum(cadence, lad["drawdown"].cadence[1]), cadence)

    # risk level and caps
    rl = config.risk_levels
    score = mcol("risk_score", np.nan)
    with np.errstate(invalid="ignore"):
        score_rank = np.where(np.isfinite(score), (score[:, None] >= np.asarray(rl.score_thresholds)).sum(1), 4)
    floor = np.asarray(rl.alert_floor)[np.clip(alert, 0, 5)]
    rank = np.maximum(score_rank, floor)
    emergency = (new_brk != brk.CLOSED) | (alert >= 4) | (mode >= TradingMode.HALTED.rank)
    rank = np.where(emergency, 5, rank)
    risk_level = _take(_RISK_SERIES, rank)
    lev_table = np.array([rl.max_leverage[r.value] for r in RISK_LEVELS_BY_RANK[:5]] + [rl.emergency_leverage])
    pos_table = np.array([rl.base_position[r.value] for r in RISK_LEVELS_BY_RANK[:5]]
                         + [min(rl.emergency_position, rl.base_position["CRITICAL"])])
    max_leverage = lev_table[rank]
    max_position = np.minimum(pos_table[rank], config.risk_budget.max_single_position)
    max_positions = np.where(emergency, rl.emergency_max_positions, rl.normal_max_positions)
    max_positions = np.where(is_half, np.minimum(max_positions, config.breaker.half_open_max_positions), max_positions)
    stop_loss = np.where(emergency, rl.emergency_stop_loss, rl.normal_stop_loss)

    # episode
    in_episode = (alert > 0) | (new_brk != brk.CLOSED) | (mode > 0) | (target > _EPS)
    prev_ep = p["episode_id"] if "episode_id" in p.columns else pl.Series("episode_id", [None] * n, dtype=pl.String)
    now_str = _ts_strings(np.array([now_s]))[0]
    episode = pl.select(
        pl.when(pl.lit(pl.Series(in_episode)))
        .then(pl.coalesce(pl.lit(prev_ep), pl.lit(acct) + ":" + now_str))
        .otherwise(pl.lit(None, pl.String))
    ).to_series() if n else pl.Series([], dtype=pl.String)
    cut_total = np.where(in_episode, target, 0.0)

    # actions: cuts
    ts_col = pl.lit(now).cast(frames.UTC_TS)
    order_cut = in_episode & (target > prev_cut + _EPS)
    act_rows = []
    if order_cut.any():
        idx = np.flatnonzero(order_cut)
        rule_i = target_rule[idx]  # rule ids
        lvl_i = target_level[idx]
        since_i = since_all[rule_i, idx]
        gid = step_offset[rule_i] + lvl_i  # global step id
        kind_code = cut_code_table[gid]
        kind_code = np.where(target[idx] >= 1.0 - _EPS, _ACTION_CODES[ActionKind.CLOSE_ALL.value], kind_code)
        frac = np.clip(1.0 - (1.0 - target[idx]) / np.maximum(1.0 - prev_cut[idx], _EPS), 0.0, 1.0)
        f = pl.DataFrame({
            "account_id": _take(acct, idx), "rule": _take(_RULE_SERIES, rule_i), "since": _ts_strings(since_i),
            "lvl": lvl_i, "action": _take(_ACTION_SERIES, kind_code), "fraction": frac, "target": target[idx],
            "step": _take(step_names, gid),
        })
        act_rows.append(f.select(
            pl.concat_str([pl.col("account_id"), pl.col("rule"), pl.col("since")], separator=":").alias("incident_key"),
            "account_id", "action", "fraction", "lvl", "target", "rule", "step",
        ).select(
            pl.concat_str([pl.col("incident_key"), pl.lit("L") + pl.col("lvl").cast(pl.String), pl.col("action"),
                           pl.col("target").round(6).cast(pl.String)], separator=":").alias("idempotency_key"),
            "incident_key", "account_id", "action", "fraction",
            pl.format("{} step {} confirmed: cut to {} of episode-start size", pl.col("rule"), pl.col("step"),
                      (1 - pl.col("target")).round(4)).alias("reason"),
            ts_col.alias("ts"),
        ))

    # actions: mode transitions
    changed = mode != prev_mode_rank
    if changed.any():
        idx = np.flatnonzero(changed)
        new_m, old_m = mode[idx], prev_mode_rank[idx]
        kind = np.where(new_m == 0, ActionKind.RESUME.value,
                        np.where(new_m == TradingMode.REDUCE_ONLY.rank, ActionKind.HALT_ENTRIES.value, ActionKind.HALT_ALL.value))
        keep = ~((new_m == TradingMode.FLATTEN.rank) & (old_m >= TradingMode.HALTED.rank)) & ~((new_m > 0) & (new_m < old_m))
        idx, kind, new_m, old_m = idx[keep], kind[keep], new_m[keep], old_m[keep]
        if idx.size:
            ep = pl.coalesce(pl.lit(_take(episode, idx)), pl.lit(_take(prev_ep, idx)), pl.lit(""))
            f = pl.DataFrame({"account_id": _take(acct, idx), "action": kind.astype(str),
                              "new": _take(_MODE_SERIES, new_m), "old": _take(_MODE_SERIES, old_m)}).with_columns(
                pl.select(ep).to_series().alias("ep"))
            act_rows.append(f.select(
                pl.concat_str([pl.col("account_id"), pl.lit("mode"), pl.col("ep"), pl.col("action"),
                               pl.lit(_ts_strings(np.array([now_s]))[0])], separator=":").alias("idempotency_key"),
                pl.concat_str([pl.col("account_id"), pl.lit("mode"), pl.col("ep")], separator=":").alias("incident_key"),
                "account_id", "action", pl.lit(0.0).alias("fraction"),
                pl.format("trading mode {} -> {}", pl.col("old"), pl.col("new")).alias("reason"),
                ts_col.alias("ts"),
            ))
    actions = pl.concat(act_rows) if act_rows else frames.empty(frames.ACTIONS)
    actions = frames.conform(actions, frames.ACTIONS, "actions")

    # alerts and the audit of fired rules
    mode_names = _take(_MODE_SERIES, mode)
    fired = []
    parts = []
    for r_id, rule in enumerate(RULES):
        held, v, th, since, raw = per_rule[rule]
        idx = np.flatnonzero(held > 0)
        if idx.size:
            k = held[idx]
            parts.append((idx, np.full(idx.size, r_id), k, step_offset[r_id] + k, lad[rule].alert[k], v[idx],
                          th[idx, k - 1], since[idx], suspended[rule][idx], raw[idx] < k))
    mode_names_lit = pl.lit(mode_names)
    blocks_lit = pl.lit(_take(_BLOCKS_SERIES, mode))
    if parts:
        idx, r_ids, k, gid, alert_k, mv, thv, since_v, susp, held_flag = (np.concatenate(x) for x in zip(*parts))
        num = pl.DataFrame({
            "idx": idx, "r_id": r_ids, "gid": gid, "level": k, "alert_level": alert_k, "metric_value": mv,
            "threshold": thv, "since_us": np.round(since_v * 1e6).astype(np.int64), "suspended": susp,
            "held": held_flag,
        }, schema_overrides={"metric_value": pl.Float64, "threshold": pl.Float64})
        fired.append(num.select(  # every string column in one pass
            pl.lit(acct).gather(pl.col("idx")).alias("account_id"),
            pl.lit(_RULE_SERIES).gather(pl.col("r_id")).alias("rule"),
            pl.lit(step_names).gather(pl.col("gid")).alias("step"),
            "level", "alert_level", "metric_value", "threshold",
            pl.lit(basis_s).gather(pl.col("r_id")).alias("basis"),
            pl.lit(op_s).gather(pl.col("r_id")).alias("op"),
            (pl.lit(step_effects).gather(pl.col("gid"))
             + pl.when(pl.col("held")).then(pl.lit(" (held: clearing needs margin and dwell)")).otherwise(pl.lit("")))
            .alias("effect"),
            "suspended",
            pl.from_epoch(pl.col("since_us"), time_unit="us").dt.strftime("%Y%m%dT%H%M%S%.6fZ").alias("since"),
            mode_names_lit.gather(pl.col("idx")).alias("mode_in_force"),
            blocks_lit.gather(pl.col("idx")).alias("blocks"),
        ))
    special = []
    if invalid.any():
        idx = np.flatnonzero(invalid)
        special.append(("data", idx, config.data.alert_level, f"fail closed: mode {config.data.trading_mode.value}",
                        _take(reason, idx), np.nan))
    if not feed_known:
        idx = np.flatnonzero(~suspended["feed"])
        special.append(("feed", idx, config.feed_unknown.alert_level,
                        f"feed silence unknown: fail closed, mode {config.feed_unknown.trading_mode.value}",
                        pl.Series(["feed_unknown"]).gather(pl.Series(np.zeros(idx.size, np.int64))), np.nan))
    brk_idx = np.flatnonzero(new_brk != brk.CLOSED)
    if brk_idx.size:
        lvl = np.where(is_open[brk_idx], config.breaker.alert_level_open, config.breaker.alert_level_half_open)
        special.append(("breaker", brk_idx, lvl, "breaker state", _take(_BREAKER_SERIES, new_brk[brk_idx]), np.nan))
    for rule, idx, lvl, eff, step, _ in special:
        if idx.size == 0:
            continue
        if rule == "breaker":
            key_since = _ts_strings(np.where(np.isnan(opened[idx]), now_s, opened[idx]))
            mv = np.where(is_open[idx], 1.0, 0.5)
        else:
            key_since = _take(episode, idx).fill_null("")
            mv = np.full(idx.size, np.nan)
        fired.append(pl.DataFrame({
            "account_id": _take(acct, idx), "step": step,
            "level": np.zeros(idx.size, np.int64), "alert_level": np.broadcast_to(lvl, idx.shape).astype(np.int64),
            "metric_value": mv, "threshold": pl.Series([None] * idx.size, dtype=pl.Float64),
            "effect": pl.Series([eff]).gather(pl.Series(np.zeros(idx.size, np.int64))),
            "suspended": np.zeros(idx.size, bool), "since": key_since,
            "mode_in_force": _take(mode_names, idx), "blocks": _take(_BLOCKS_SERIES, mode[idx]),
        }, schema_overrides={"metric_value": pl.Float64, "threshold": pl.Float64}).with_columns(
            pl.lit(rule).alias("rule"), pl.lit("").alias("op"),
            pl.lit("account metrics validity" if rule == "data" else "market inputs" if rule == "feed"
                   else "breaker episode").alias("basis"),
        ))
    for r in rejected:
        fired.append(pl.DataFrame({
            "account_id": [r["account_id"]], "rule": ["override"], "step": ["rejected"], "level": [0],
            "alert_level": [1], "metric_value": [None], "threshold": [None], "basis": ["override authority"],
            "effect": [f"override {r['id']} on {r['rule']} rejected: {r['why']}"], "suspended": [False],
            "since": [r["id"] or ""], "op": [""], "mode_in_force": [""], "blocks": [""],
        }, schema_overrides={"metric_value": pl.Float64, "threshold": pl.Float64, "level": pl.Int64, "alert_level": pl.Int64}))
    if fired:
        rf = pl.concat(fired, how="diagonal_relaxed").with_columns(
            pl.concat_str([pl.col("account_id"), pl.col("rule"), pl.col("since")], separator=":").alias("incident_key"),
            ts_col.alias("ts"),
        )
        alerts = rf.filter((pl.col("alert_level") > 0) & (pl.col("rule") != "override")).select(
            "incident_key", "account_id", "rule", pl.col("alert_level").alias("level"), "metric_value", "threshold",
            pl.col("mode_in_force").alias("trading_mode"),
            pl.format("{} {}{} (basis: {}); {}{}; mode {} in force: {}",
                      pl.col("rule"), pl.col("step"),
                      pl.when(pl.col("op") != "").then(pl.format(" {} {}", pl.col("op"), pl.col("threshold").round(6).cast(pl.String).fill_null("")))
                      .otherwise(pl.lit("")), pl.col("basis"),
                      pl.col("effect"), pl.when(pl.col("suspended")).then(pl.lit(" [SUSPENDED by override]")).otherwise(pl.lit("")),
                      pl.col("mode_in_force"), pl.col("blocks")).alias("message"),
            "ts",
        )
        rules_fired = frames.conform(rf, frames.RULES_FIRED, "rules_fired")
        alerts = frames.conform(alerts, frames.ALERTS, "alerts")
    else:
        rules_fired = frames.empty(frames.RULES_FIRED)
        alerts = frames.empty(frames.ALERTS)

    # state
    market_cadence = lad["stress"].cadence[min(stress.stress_level, lad["stress"].k)]
    cols: dict[str, object] = {
        "account_id": acct,
        "episode_id": episode,
        "alert_level": alert.astype(np.int64),
        "breaker_state": _take(_BREAKER_SERIES, new_brk),
        "trading_mode": mode_names,
        "risk_level": risk_level,
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
    state = pl.DataFrame({
        k: pl.Series(k, v, nan_to_null=True) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
        for k, v in cols.items()
    } | {"cut_total": cut_total, "brk_opened_s": opened, "brk_clear_s": clear, "brk_half_s": half} | out)
    state.insert_column(1, pl.repeat(now, n, eager=True, dtype=frames.UTC_TS).alias("ts"))
    next_interval = float(min(cadence.min() if n else np.inf, market_cadence,
                              config.normal_cadence_s))
    return Evaluation(state, alerts, actions, rules_fired, stress, next_interval)


# --- sizing --------------------------------------------------------------------------------------


SIZING = {
    "account_id": pl.String,
    "instrument": pl.String,
    "strategy": pl.String,
    "sizing_multiplier": pl.Float64,
    "max_position_usd": pl.Float64,
    "target_cut_fraction": pl.Float64,
    "state_multiplier": pl.Float64,
    "dynamic_multiplier": pl.Float64,
    "reason": pl.String,
}


def size_positions(
    state: pl.DataFrame,
    metrics: pl.DataFrame,
    position_metrics: pl.DataFrame,
    config: PolicyConfig,
) -> pl.DataFrame:
    """Per account, instrument and strategy: the size multiplier and cap for new risk, and cuts.

    Parameters
    ----------
    state
        Risk state from :func:`evaluate` (``sizing_multiplier``, ``trading_mode``,
        ``max_position_frac``, ``valid``).
    metrics
        ``frames.ACCOUNT_METRICS`` (equity, drawdown, VaR, regime).
    position_metrics
        ``frames.POSITION_METRICS`` (one row per held position; ``volatility_score`` is the
        instrument's vol ratio, ``correlation_risk`` its correlation with the rest of the book).

    Returns
    -------
    pl.DataFrame
        ``account_id, instrument, strategy, sizing_multiplier`` (state multiplier x dynamic
        multiplier x strategy multiplier x correlation cut, in [0, 1]; 0 unless the account is
        ACTIVE with valid data), ``max_position_usd`` (equity x position cap of the risk level x
        multiplier, capped by the strategy's limit), ``target_cut_fraction`` (0.3 for positions
        whose correlation_risk exceeds the threshold, else 0) and ``reason``.
    """
    sc = config.sizing
    st_cols = ["account_id", "sizing_multiplier", "trading_mode", "max_position_frac", "valid"]
    st = state.select([c for c in st_cols if c in state.columns])
    for c, d in (("max_position_frac", config.risk_budget.max_single_position), ("valid", True)):
        if c not in st.columns:
            st = st.with_columns(pl.lit(d).alias(c))
    mt = metrics.select("account_id", "equity_usd", "drawdown", "var_99", "var_99_parametric", "regime")
    df = (
        position_metrics.select("account_id", "instrument", "strategy", "volatility_score", "correlation_risk")
        .join(st, on="account_id", how="left")
        .join(mt, on="account_id", how="left")
    )
    if df.height == 0:
        return pl.DataFrame(schema=SIZING)
    var = np.fmax(df["var_99"].cast(pl.Float64).to_numpy(), df["var_99_parametric"].cast(pl.Float64).to_numpy())
    corr = np.nan_to_num(df["correlation_risk"].cast(pl.Float64).fill_null(0.0).to_numpy(), nan=0.0)
    dyn = dynamic_multiplier(
        df["volatility_score"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
        df["drawdown"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
        np.clip(corr, 0.0, 1.0),
        np.nan_to_num(var, nan=np.nan),
        df["regime"].fill_null("").replace_strict(sc.regime_multipliers, default=sc.unknown_regime_multiplier,
                                                  return_dtype=pl.Float64).to_numpy(),
        sc,
    )
    strat = df["strategy"].to_numpy().astype(object)
    s_mult = np.array([config.strategies[s].sizing_multiplier if s in config.strategies else 1.0 for s in strat]) \
        if config.strategies else np.ones(df.height)
    s_cap = np.array([config.strategies[s].max_position_usd or np.inf if s in config.strategies else np.inf
                      for s in strat]) if config.strategies else np.full(df.height, np.inf)
    correlated = corr > sc.correlation_threshold
    state_mult = df["sizing_multiplier"].cast(pl.Float64).fill_null(0.0).to_numpy()
    active = (df["trading_mode"].fill_null("").to_numpy() == TradingMode.ACTIVE.value) & \
        df["valid"].fill_null(False).to_numpy().astype(bool)
    mult = state_mult * dyn * s_mult * np.where(correlated, 1.0 - sc.correlated_cut, 1.0)
    mult = np.where(active & np.isfinite(mult), np.clip(mult, 0.0, 1.0), 0.0)
    equity = df["equity_usd"].cast(pl.Float64).fill_null(0.0).to_numpy()
    cap_frac = df["max_position_frac"].cast(pl.Float64).fill_null(0.0).to_numpy()
    max_pos = np.minimum(np.where(equity > 0, equity, 0.0) * cap_frac * mult, s_cap)
    cut = np.where(correlated, sc.correlated_cut, 0.0)
    out = pl.DataFrame({
        "account_id": df["account_id"], "instrument": df["instrument"], "strategy": df["strategy"],
        "sizing_multiplier": mult, "max_position_usd": max_pos, "target_cut_fraction": cut,
        "dyn": dyn, "state_mult": state_mult, "correlated": correlated, "active": active,
    })
    return out.select(
        "account_id", "instrument", "strategy", "sizing_multiplier", "max_position_usd", "target_cut_fraction",
        pl.col("state_mult").alias("state_multiplier"), pl.col("dyn").alias("dynamic_multiplier"),
        pl.when(~pl.col("active")).then(pl.lit("no new risk: account not ACTIVE or data invalid"))
        .when(pl.col("correlated")).then(pl.lit(f"state x dynamic x correlated cut {sc.correlated_cut:.0%}"))
        .otherwise(pl.lit("state x dynamic"))
        .alias("reason"),
    )
