"""The evaluation's row outputs: rules fired, alerts and actions, built from numpy columns.

Only accounts where something fired or changed get rows. Text is assembled once per distinct
value and gathered per row: a timestamp is formatted once however many incidents started at
it, and an alert message (``<rule> <step> <op> <threshold> (basis: ...); <effect>; mode ... in
force: ...``) once per distinct step, threshold, suspension and mode. The metric's value is the
row's ``metric_value`` column, not part of the text: gathering a few hundred distinct sentences
costs a fraction of formatting one per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.policy import _breaker as brk
from risklib.core.policy._config import RULES, PolicyConfig
from risklib.core.policy._enums import MODES_BY_RANK, ActionKind, TradingMode
from risklib.core.policy._ladders import ACTION_CODES, EPS, Catalog

MODE_SERIES = pl.Series([m.value for m in MODES_BY_RANK], dtype=pl.String)
BLOCKS_SERIES = pl.Series([m.blocks for m in MODES_BY_RANK], dtype=pl.String)
BREAKER_SERIES = pl.Series(list(brk.NAMES), dtype=pl.String)
RULE_SERIES = pl.Series(list(RULES), dtype=pl.String)
ACTION_SERIES = pl.Series([a.value for a in ActionKind], dtype=pl.String)
_TS_FORMAT = "%Y%m%dT%H%M%S%.6fZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SUSPENDED = " [SUSPENDED by override]"
_FLOAT = {"metric_value": pl.Float64, "threshold": pl.Float64}


def take(values: pl.Series, idx: np.ndarray) -> pl.Series:
    """Strings by integer index, staying in Polars (no numpy object arrays on the hot path)."""
    return values.gather(pl.Series(np.asarray(idx, np.int64)))


def texts_at(values: pl.Series, idx: np.ndarray, null: str = "") -> list[str]:
    """Strings by integer index as a list (null as ``null``): a few read one by one, many in one gather."""
    if idx.size <= 32:  # a Polars gather costs more than reading a handful of values
        return [null if x is None else x for x in (values[int(i)] for i in idx)]
    return [null if x is None else x for x in take(values, idx).to_list()]


def codes(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an integer array (sorted) and each element's index into them."""
    if key.size == 0:
        return key, np.zeros(0, np.int64)
    lo, hi = int(key.min()), int(key.max())
    if hi - lo > 4 * key.size + 1024:  # sparse: sort
        u, inv = np.unique(key, return_inverse=True)
        return u, inv.reshape(-1)
    seen = np.zeros(hi - lo + 1, bool)  # dense: one pass, no sort
    seen[key - lo] = True
    u = np.flatnonzero(seen)
    slot = np.zeros(hi - lo + 1, np.int64)
    slot[u] = np.arange(u.size)
    return u + lo, slot[key - lo]


def _us_texts(us: np.ndarray) -> list[str]:
    """``YYYYMMDDTHHMMSS.ffffffZ`` of distinct epoch microseconds: a few in Python, many in one Polars pass."""
    if us.size <= 64:  # a Polars query costs more than formatting a handful of times here
        return [(_EPOCH + timedelta(microseconds=int(u))).strftime("%Y%m%dT%H%M%S.%fZ") for u in us.tolist()]
    return pl.from_epoch(pl.Series(us), time_unit="us").dt.strftime(_TS_FORMAT).to_list()


def epoch_codes(epoch_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct epoch microseconds of epoch seconds (NaN as the epoch), and each element's index into them."""
    return codes(np.where(np.isnan(epoch_s), 0, np.round(epoch_s * 1e6)).astype(np.int64))


def ts_text(epoch_s: float) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ`` of one time in epoch seconds."""
    return _us_texts(epoch_codes(np.array([epoch_s]))[0])[0]


_FLOAT_TEXT: dict[tuple[int, float], str] = {}


def float_texts(values: np.ndarray, decimals: int = 6) -> list[str]:
    """Each value rounded to ``decimals`` as Polars writes a float (NaN as ""). Thresholds and cut
    targets come from the config, so their texts are kept once made."""
    missing = [v for v in values.tolist() if (decimals, v) not in _FLOAT_TEXT]
    if missing:
        if len(_FLOAT_TEXT) > 100_000:  # per-account adjusted thresholds could grow it without end
            _FLOAT_TEXT.clear()
        text = pl.Series(missing, dtype=pl.Float64).round(decimals).cast(pl.String).fill_null("").to_list()
        _FLOAT_TEXT.update(((decimals, v), t) for v, t in zip(missing, text))
    return [_FLOAT_TEXT[decimals, v] if v == v else "" for v in values.tolist()]


def fired_records(config: PolicyConfig, cat: Catalog, acct: pl.Series, ts_col: pl.Expr, mode: np.ndarray,
                  now_s: float, held_steps: tuple, suspended: dict, *, invalid: np.ndarray, reason: pl.Series,
                  feed_known: bool, new_brk: np.ndarray, opened: np.ndarray, episode: pl.Series,
                  rejected: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rules fired and alerts: every held ladder step (rule by rule, accounts in order), then the
    non-ladder rules (data, feed, breaker), then rejected overrides (audit only).

    Every text column but the incident key is a gather from a table of texts, so a row costs a few
    integer gathers: an alert message depends only on the rule's step, threshold, suspension and the
    mode in force (the metric's value is the row's ``metric_value``). Non-ladder rows (usually few)
    append their own texts to the tables.
    """
    t = _Texts(rule=[*RULES, *_SPECIAL_BASIS], step=cat.step_names.to_list(),
               basis=[*cat.basis.to_list(), *_SPECIAL_BASIS.values()], effect=cat.effects.to_list())
    parts = [x for x in (
        _ladder_rows(cat, mode, held_steps, t),
        _special_rows(config, mode, now_s, t, invalid=invalid, reason=reason, feed_known=feed_known,
                      feed_suspended=suspended["feed"], new_brk=new_brk, opened=opened, episode=episode),
    ) if x is not None]
    if not parts:
        rf = frames.empty(frames.RULES_FIRED)
        al = frames.empty(frames.ALERTS)
    else:
        cols = {c: np.concatenate([x[c] for x in parts]) for c in parts[0]}
        # ladder thresholds are always set; a non-ladder rule has none (null)
        cols["threshold"] = pl.Series(cols["threshold"], dtype=pl.Float64, nan_to_null=True)
        f = pl.DataFrame(cols, schema_overrides=_FLOAT)

        def text(column: str) -> pl.Expr:
            return pl.lit(pl.Series(getattr(t, column), dtype=pl.String)).gather(pl.col(column)).alias(column)

        account = pl.lit(acct).gather(pl.col("idx"))
        out = f.select(  # one query: its expressions run in parallel
            account.alias("account_id"), ts_col.alias("ts"), text("rule"), text("step"), "level", "alert_level",
            "metric_value", "threshold", text("basis"), text("effect"), "suspended",
            pl.concat_str([account, text("tail")], separator=":").alias("incident_key"),
            pl.lit(MODE_SERIES).gather(pl.col("mode")).alias("trading_mode"), text("message"),
        )
        rf = out[list(frames.RULES_FIRED)]  # columns picked, no query
        alerting = f["alert_level"] > 0
        al = (out if alerting.all() else out.filter(alerting))[list(_ALERT_COLUMNS)].rename({"alert_level": "level"})
    if rejected:
        rf = pl.concat([rf, _rejected_rows(rejected, ts_col)])
    return rf, al


_ALERT_COLUMNS = ("incident_key", "account_id", "rule", "alert_level", "metric_value", "threshold", "trading_mode",
                  "message", "ts")


@dataclass
class _Texts:
    """The text tables the rows of :func:`fired_records` index (incident tails and messages are added per cycle)."""

    rule: list[str]
    step: list[str]
    basis: list[str]
    effect: list[str]
    tail: list[str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)

    def add(self, table: str, texts: list[str]) -> np.ndarray:
        """Append texts to a table; their codes."""
        rows = getattr(self, table)
        start = len(rows)
        rows.extend(texts)
        return np.arange(start, len(rows))


def _ladder_rows(cat: Catalog, mode: np.ndarray, held_steps: tuple, t: _Texts) -> dict | None:
    """Every held ladder step (:func:`~risklib.core.policy._hysteresis.held_rows`) as columns of codes and
    values; None when none is held."""
    idx, r_id, k, gid, alert_k, mv, thv, since_v, susp, held, th_key = held_steps
    if not idx.size:
        return None
    gh = 2 * gid + held  # step and whether it is only held: the effect text
    # incident key "<account>:<rule>:<since>"; "<rule>:<since>" is shared by many rows
    since_u, since_code = epoch_codes(since_v)
    since_text = _us_texts(since_u)
    tail_u, tail_code = codes(r_id * since_u.size + since_code)
    tail = t.add("tail", [f"{RULES[x // since_u.size]}:{since_text[x % since_u.size]}" for x in tail_u.tolist()])
    # the message depends only on step, threshold, suspension and mode: one text per distinct combination
    m = mode[idx]
    th_table = cat.threshold
    own = th_key < 0  # per-account thresholds (groups, adjustments): code their distinct values
    if own.any():
        th_u, th_inv = np.unique(thv[own], return_inverse=True)
        th_key = th_key.copy()
        th_key[own] = th_table.size + th_inv.reshape(-1)
        th_table = np.concatenate([th_table, th_u])
    n_modes, n_gh = len(MODES_BY_RANK), cat.effects.len()
    msg_u, msg_code = codes(((th_key * n_gh + gh) * 2 + susp) * n_modes + m)
    u_mode = (msg_u % n_modes).tolist()
    u_susp = ((msg_u // n_modes) % 2).tolist()
    u_gh = (msg_u // (2 * n_modes)) % n_gh
    u_rule = (np.searchsorted(cat.offset, u_gh // 2, side="right") - 1).tolist()
    th_text = float_texts(th_table[msg_u // (2 * n_modes * n_gh)])
    op, modes, blocks = cat.op.to_list(), MODE_SERIES.to_list(), BLOCKS_SERIES.to_list()
    message = t.add("message", [
        f"{RULES[r]} {t.step[g // 2]} {op[r]} {x} (basis: {t.basis[r]}); {t.effect[g]}{_SUSPENDED if s else ''}; "
        f"mode {modes[mo]} in force: {blocks[mo]}"
        for r, g, x, s, mo in zip(u_rule, u_gh.tolist(), th_text, u_susp, u_mode)
    ])
    return {"idx": idx, "rule": r_id, "step": gid, "level": k, "alert_level": alert_k, "metric_value": mv,
            "threshold": thv, "basis": r_id, "effect": gh, "suspended": susp, "tail": tail[tail_code],
            "mode": m, "message": message[msg_code]}


_SPECIAL_BASIS = {"data": "account metrics validity", "feed": "market inputs", "breaker": "breaker episode"}


def _special_rows(config: PolicyConfig, mode: np.ndarray, now_s: float, t: _Texts, *, invalid: np.ndarray,
                  reason: pl.Series, feed_known: bool, feed_suspended: np.ndarray, new_brk: np.ndarray,
                  opened: np.ndarray, episode: pl.Series) -> dict | None:
    """The non-ladder rules (data, feed, breaker) as :func:`_ladder_rows` does; None when none fired."""
    groups = []  # (rule, accounts, alert levels, effect, step texts, incident start texts, metric values)
    idx = np.flatnonzero(invalid)
    if idx.size:
        groups.append(("data", idx, np.full(idx.size, config.data.alert_level),
                       f"fail closed: mode {config.data.trading_mode.value}", texts_at(reason, idx),
                       texts_at(episode, idx), np.full(idx.size, np.nan)))
    if not feed_known:
        idx = np.flatnonzero(~feed_suspended)
        if idx.size:
            groups.append(("feed", idx, np.full(idx.size, config.feed_unknown.alert_level),
                           f"feed silence unknown: fail closed, mode {config.feed_unknown.trading_mode.value}",
                           ["feed_unknown"] * idx.size, texts_at(episode, idx),
                           np.full(idx.size, np.nan)))
    idx = np.flatnonzero(new_brk != brk.CLOSED)
    if idx.size:
        is_open = new_brk[idx] == brk.OPEN
        at_u, at_code = epoch_codes(np.where(np.isnan(opened[idx]), now_s, opened[idx]))
        at_text = _us_texts(at_u)
        groups.append(("breaker", idx,
                       np.where(is_open, config.breaker.alert_level_open, config.breaker.alert_level_half_open),
                       "breaker state", [brk.NAMES[c] for c in new_brk[idx].tolist()],
                       [at_text[c] for c in at_code.tolist()], np.where(is_open, 1.0, 0.5)))
    if not groups:
        return None
    modes, blocks = MODE_SERIES.to_list(), BLOCKS_SERIES.to_list()
    cols: dict[str, list] = {c: [] for c in ("rule", "effect", "tail", "message")}
    for rule, idx, _, effect, steps, since, _ in groups:
        r = len(RULES) + list(_SPECIAL_BASIS).index(rule)  # "feed" is also a ladder: not t.rule.index
        e = t.add("effect", [effect])[0]
        cols["rule"].append(np.full(idx.size, r))
        cols["effect"].append(np.full(idx.size, e))
        cols["tail"].append(t.add("tail", [f"{rule}:{x}" for x in since]))
        basis = t.basis[r]
        cols["message"].append(t.add("message", [
            f"{rule} {x} (basis: {basis}); {effect}; mode {modes[mo]} in force: {blocks[mo]}"
            for x, mo in zip(steps, mode[idx].tolist())]))
    idx = np.concatenate([g[1] for g in groups])
    rule = np.concatenate(cols["rule"])
    return {"idx": idx, "rule": rule, "step": t.add("step", [x for g in groups for x in g[4]]),
            "level": np.zeros(idx.size, np.int64), "alert_level": np.concatenate([g[2] for g in groups]).astype(np.int64),
            "metric_value": np.concatenate([g[6] for g in groups]), "threshold": np.full(idx.size, np.nan),
            "basis": rule, "effect": np.concatenate(cols["effect"]), "suspended": np.zeros(idx.size, bool),
            "tail": np.concatenate(cols["tail"]), "mode": mode[idx], "message": np.concatenate(cols["message"])}


def _rejected_rows(rejected: list[dict], ts_col: pl.Expr) -> pl.DataFrame:
    """Overrides refused for lack of authority or expiry: audit rows, never alerts."""
    return pl.DataFrame({
        "account_id": [r["account_id"] for r in rejected], "rule": "override", "step": "rejected", "level": 0,
        "alert_level": 1, "metric_value": None, "threshold": None, "basis": "override authority",
        "effect": [f"override {r['id']} on {r['rule']} rejected: {r['why']}" for r in rejected],
        "suspended": False, "since": [r["id"] or "" for r in rejected],
    }, schema=_OVERRIDE_ROWS).select(
        *(pl.concat_str([pl.col("account_id"), pl.col("rule"), pl.col("since")], separator=":")
          .alias("incident_key") if c == "incident_key" else ts_col.alias("ts") if c == "ts" else pl.col(c)
          for c in frames.RULES_FIRED))


_OVERRIDE_ROWS = {c: t for c, t in frames.RULES_FIRED.items() if c not in ("ts", "incident_key")} | {"since": pl.String}


def cut_actions(cat: Catalog, acct: pl.Series, ts_col: pl.Expr, idx: np.ndarray, *, target: np.ndarray,
                prev_cut: np.ndarray, target_rule: np.ndarray, target_level: np.ndarray,
                since_all: np.ndarray) -> pl.DataFrame:
    """Confirmed cuts: one action per account whose cut target grew, keyed by incident, step and target."""
    rule_i = target_rule[idx]  # rule ids
    gid = cat.offset[rule_i] + target_level[idx]  # global step id
    tgt = target[idx]
    kind_code = np.where(tgt >= 1.0 - EPS, ACTION_CODES[ActionKind.CLOSE_ALL.value], cat.cut_code[gid])
    frac = np.clip(1.0 - (1.0 - tgt) / np.maximum(1.0 - prev_cut[idx], EPS), 0.0, 1.0)
    since = since_all[rule_i, idx]
    # after the account, the keys and the reason depend only on the incident's start, the step, the
    # action and the target, which many accounts share: each distinct combination is written once
    s_u, s_code = epoch_codes(since)
    t_u, t_code = np.unique(tgt, return_inverse=True)
    n_gid, n_kind = cat.cut_code.size, len(ACTION_CODES) + 1
    key_u, key_code = codes(((s_code * n_gid + gid) * n_kind + kind_code) * t_u.size + t_code.reshape(-1))
    u_t = key_u % t_u.size
    u_kind = (key_u // t_u.size) % n_kind
    u_gid = (key_u // (t_u.size * n_kind)) % n_gid
    u_s = key_u // (t_u.size * n_kind * n_gid)
    u_rule = np.searchsorted(cat.offset, u_gid, side="right") - 1
    since_text, target_text = _us_texts(s_u), float_texts(t_u)
    left_text = float_texts(1.0 - t_u, 4)
    steps, actions = cat.step_names.to_list(), ACTION_SERIES.to_list()
    tails, keys, reasons = [], [], []
    for r, g, kd, si, ti in zip(u_rule.tolist(), u_gid.tolist(), u_kind.tolist(), u_s.tolist(), u_t.tolist()):
        tail = f"{RULES[r]}:{since_text[si]}"
        tails.append(tail)
        keys.append(f"{tail}:L{g - cat.offset[r]}:{actions[kd]}:{target_text[ti]}")
        reasons.append(f"{RULES[r]} step {steps[g]} confirmed: cut to {left_text[ti]} of episode-start size")
    account = pl.lit(acct).gather(pl.col("i"))
    return pl.DataFrame({"i": idx, "k": key_code, "kind": kind_code, "fraction": frac}).select(
        pl.concat_str([account, pl.lit(pl.Series(keys, dtype=pl.String)).gather(pl.col("k"))], separator=":")
        .alias("idempotency_key"),
        pl.concat_str([account, pl.lit(pl.Series(tails, dtype=pl.String)).gather(pl.col("k"))], separator=":")
        .alias("incident_key"),
        account.alias("account_id"), pl.lit(ACTION_SERIES).gather(pl.col("kind")).alias("action"), "fraction",
        pl.lit(pl.Series(reasons, dtype=pl.String)).gather(pl.col("k")).alias("reason"), ts_col.alias("ts"),
    )


def mode_actions(acct: pl.Series, ts_col: pl.Expr, now_s: float, mode: np.ndarray, prev_mode: np.ndarray,
                 episode: pl.Series, prev_episode: pl.Series) -> pl.DataFrame | None:
    """Trading-mode transitions worth telling the broker (halts, resumes), once per episode and time."""
    idx = np.flatnonzero(mode != prev_mode)
    new_m, old_m = mode[idx], prev_mode[idx]
    kind = np.where(new_m == 0, ActionKind.RESUME.value,
                    np.where(new_m == TradingMode.REDUCE_ONLY.rank, ActionKind.HALT_ENTRIES.value,
                             ActionKind.HALT_ALL.value))
    keep = (~((new_m == TradingMode.FLATTEN.rank) & (old_m >= TradingMode.HALTED.rank))
            & ~((new_m > 0) & (new_m < old_m)))
    idx, kind, new_m, old_m = idx[keep], kind[keep], new_m[keep], old_m[keep]
    if not idx.size:
        return None
    ep = pl.coalesce(pl.lit(take(episode, idx)), pl.lit(take(prev_episode, idx)), pl.lit(""))
    f = pl.DataFrame({"account_id": take(acct, idx), "action": kind.astype(str),
                      "new": take(MODE_SERIES, new_m), "old": take(MODE_SERIES, old_m)}).with_columns(
        pl.select(ep).to_series().alias("ep"))
    return f.select(
        pl.concat_str([pl.col("account_id"), pl.lit("mode"), pl.col("ep"), pl.col("action"),
                       pl.lit(ts_text(now_s))], separator=":").alias("idempotency_key"),
        pl.concat_str([pl.col("account_id"), pl.lit("mode"), pl.col("ep")], separator=":").alias("incident_key"),
        "account_id", "action", pl.lit(0.0).alias("fraction"),
        pl.format("trading mode {} -> {}", pl.col("old"), pl.col("new")).alias("reason"),
        ts_col.alias("ts"),
    )
