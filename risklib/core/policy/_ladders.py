"""Ladders as lookup tables, built once per config.

Each rule's ladder becomes small arrays indexed by the held step (0 = no step), so applying a
step's effects to every account is a table lookup. :class:`Catalog` adds the tables spanning
all rules (global step ids, names, effects, message pieces) that the evaluation's records use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from risklib.core.policy._config import CUT_ACTIONS, RULES, Ladder, PolicyConfig
from risklib.core.policy._enums import ActionKind, BreakerEffect, TradingMode

EPS = 1e-9
ACTION_CODES = {a.value: i for i, a in enumerate(ActionKind)}
HELD_NOTE = " (held: clearing needs margin and dwell)"


@dataclass(frozen=True)
class LadderArrays:
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
    cumcut: np.ndarray  # cumulative cut share after steps <= k (compounded)
    cut_step: np.ndarray  # step k adds a cut (it waits for confirmation)
    cut_kind: np.ndarray  # action name of the last cut step <= k (object)
    confirm_n: np.ndarray
    confirm_s: np.ndarray
    names: np.ndarray  # step names (object), "" at 0
    effects: np.ndarray  # human description (object)


def _arrays(rule: str, ladder: Ladder, cfg: PolicyConfig) -> LadderArrays:
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
    cumcut = np.zeros(k + 1)
    cut_kind = np.full(k + 1, "", dtype=object)
    confirm_n = np.ones(k + 1, np.int64)
    confirm_s = np.zeros(k + 1)
    names = np.full(k + 1, "", dtype=object)
    effects = np.full(k + 1, "", dtype=object)
    for i, s in enumerate(steps, start=1):
        alert[i] = s.alert_level
        sizing[i] = s.sizing_multiplier
        mode[i] = s.trading_mode.rank
        flatten[i] = s.trading_mode is TradingMode.FLATTEN
        cadence[i] = min(cadence[i - 1], s.cadence_s if s.cadence_s is not None else np.inf)
        signal[i] = s.signal_filter
        budget[i] = s.risk_budget
        trip[i] = trip[i - 1] or s.breaker is BreakerEffect.TRIP
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
    cut_step = np.zeros(k + 1, bool)
    cut_step[1:] = cumcut[1:] > cumcut[:-1] + EPS  # a step without a cut has nothing to confirm
    return LadderArrays(rule, ladder, k, alert, sizing, mode, flatten, cadence, signal, budget, trip, cumcut,
                        cut_step, cut_kind, confirm_n, confirm_s, names, effects)


@dataclass(frozen=True)
class Catalog:
    """Every rule's ladder tables plus tables over all steps of all rules.

    A global step id ``gid = offset[rule_id] + k`` indexes ``step_names``, ``cut_code``, ``alert``,
    ``threshold`` and, as ``2 * gid + held``, ``effects`` (the step's effect, with the note that it is only held).
    """

    ladders: dict[str, LadderArrays]
    offset: np.ndarray
    step_names: pl.Series
    effects: pl.Series
    cut_code: np.ndarray
    alert: np.ndarray  # alert level of each step
    threshold: np.ndarray  # the ladder's (default) threshold of each step, NaN at k = 0
    basis: pl.Series  # per rule id
    op: pl.Series  # per rule id: ">=" or ">"
    tables: dict[str, np.ndarray]  # per effect, rules x steps (padded with the last step), for combining


def _catalog(cfg: PolicyConfig) -> Catalog:
    lad = {r: _arrays(r, cfg.ladder(r), cfg) for r in RULES}
    names = [(r, x) for r in RULES for x in lad[r].names.tolist()]
    effects = [x for r in RULES for x in lad[r].effects.tolist()]
    return Catalog(
        ladders=lad,
        offset=np.cumsum([0] + [lad[r].k + 1 for r in RULES])[:-1],
        step_names=pl.Series([x for _, x in names], dtype=pl.String),
        effects=pl.Series([e + note for e in effects for note in ("", HELD_NOTE)], dtype=pl.String),
        cut_code=np.array([ACTION_CODES.get(x, 0) for r in RULES for x in lad[r].cut_kind.tolist()], np.int64),
        alert=np.concatenate([lad[r].alert for r in RULES]).astype(np.int64),
        threshold=np.array([t for r in RULES for t in (np.nan, *lad[r].ladder.thresholds)], float),
        basis=pl.Series([lad[r].ladder.basis for r in RULES], dtype=pl.String),
        op=pl.Series([">=" if lad[r].ladder.inclusive else ">" for r in RULES], dtype=pl.String),
        tables={name: _stack([getattr(lad[r], name) for r in RULES]) for name in
                ("alert", "sizing", "mode", "flatten", "cadence", "signal", "budget", "trip", "cumcut")},
    )


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """Per-rule step tables as one rules x steps array; shorter ladders repeat their last step (never read)."""
    width = max(r.size for r in rows)
    return np.stack([np.concatenate([r, np.repeat(r[-1:], width - r.size)]) for r in rows])


_CACHE: dict[int, tuple[PolicyConfig, Catalog]] = {}


def catalog(cfg: PolicyConfig) -> Catalog:
    """The tables of ``cfg`` (cached: configs are frozen)."""
    hit = _CACHE.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    cat = _catalog(cfg)
    if len(_CACHE) > 16:
        _CACHE.clear()
    _CACHE[id(cfg)] = (cfg, cat)
    return cat
