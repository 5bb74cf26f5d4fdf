"""Ladders stepped for every account: levels, hysteresis, cut confirmation, then combined effects.

Compiled loops over accounts (the rules are few, the accounts many): one pass per ladder
replaces some forty whole-array numpy operations, and one pass combines every rule's held step
with the running decision kept in registers. The rules it applies are described in
:mod:`risklib.core.policy._evaluate`; every comparison is written exactly as there (same
operands, same order) so results are bit-for-bit those of the array form.

Previous-state inputs are columns of one float array (accounts x columns, column-major) in which
NaN means "absent" (a null or missing column).
"""

from __future__ import annotations

import numba
import numpy as np

EPS = 1e-9


@numba.njit(cache=True, nogil=True, inline="always")
def _count(x: float, th: np.ndarray, i: int, factor: float, inclusive: bool) -> int:
    """How many of account ``i``'s thresholds (times ``factor``) ``x`` passes; NaN passes none.
    A single row of thresholds is every account's."""
    c = 0
    row = i if th.shape[0] > 1 else 0
    for j in range(th.shape[1]):
        t = th[row, j] * factor if factor != 1.0 else th[row, j]
        if (x >= t) if inclusive else (x > t):
            c += 1
    return c


@numba.njit(cache=True, nogil=True)
def step_ladder(
    now_s, v, th, inclusive, clear_factor, dwell_s, needs_valid, valid,
    prev, c_level, c_below, c_since, c_conf, c_streak, c_first,
    cut_row, confirm_n, confirm_s, cumcut,
    held, raw, below, since, conf, streak, first,
):
    """Advance one ladder for every account.

    Inputs per account: metric ``v``, thresholds ``th`` (accounts x steps), ``valid`` data, and
    from ``prev`` (columns ``c_*``) the previous held level, clearing start, incident start,
    confirmed level and, per step, the confirmation streak length and start. Step tables (index 0 = no step) describe the ladder; ``cut_row[k]`` is the row of
    step k's streak in ``streak``/``first`` (-1 for a step without a cut).

    Outputs written in place: ``held``, ``raw``, ``below``, ``since``, ``conf`` and the streaks.
    """
    n = v.shape[0]
    k_max = th.shape[1]
    for i in range(n):
        x = v[i]
        r = _count(x, th, i, 1.0, inclusive)
        clear_lvl = _count(x, th, i, clear_factor, inclusive)
        p = prev[i, c_level]
        lvl = 0 if p != p else min(max(int(p), 0), k_max)
        known = np.isfinite(x) and (valid[i] or not needs_valid)

        # hysteresis: up at once, down only below the margin for the dwell
        h = r if r >= lvl else lvl
        b = np.nan
        if r < lvl and known and clear_lvl < lvl:
            b = prev[i, c_below]
            if b != b:
                b = now_s
            if now_s - b >= dwell_s:
                h = max(clear_lvl, r)
                b = np.nan

        # confirmation streaks of the cut steps; a step's cut never skips a lower one
        confirmed = 0
        chain = True
        for k in range(1, k_max + 1):
            row = cut_row[k]
            if row >= 0:
                sp = prev[i, c_streak[k]]
                s_prev = 0 if sp != sp else int(sp)
                f_prev = prev[i, c_first[k]]
                at = r >= k
                s_k = s_prev + 1 if at else 0
                f_k = np.nan
                if at:
                    f_k = f_prev if (s_prev > 0 and np.isfinite(f_prev)) else now_s
                chain = chain and at and s_k >= confirm_n[k] and now_s - f_k >= confirm_s[k] - EPS
                streak[row, i] = s_k
                first[row, i] = f_k
            if chain and h >= k:
                confirmed = k

        s = np.nan
        c = 0
        if h > 0:
            sp = prev[i, c_since]
            s = sp if (lvl > 0 and np.isfinite(sp)) else now_s
            cp = prev[i, c_conf]
            c = min(max(0 if cp != cp else int(cp), confirmed), h)
        held[i] = h
        raw[i] = r
        below[i] = b
        since[i] = s
        conf[i] = c


@numba.njit(cache=True, nogil=True)
def combine(
    held, conf, active, prev_cut, normal_cadence, halted_rank,
    t_alert, t_sizing, t_mode, t_flatten, t_cadence, t_signal, t_budget, t_trip, t_cumcut,
    alert, sizing, mode, cadence, signal, budget, trip, pending, target, target_rule, target_level,
):
    """Combine every rule's held step per account, rules in order: alert level = max, sizing = min,
    mode = most restrictive, cadence = shortest, any trip; the most protective confirmed cut wins
    (the first rule on ties). Alerts count even when a rule is suspended, its effects do not.

    ``held``, ``conf`` and ``active`` are rules x accounts; the step tables are rules x steps
    (padded); outputs are written in place.
    """
    n_rules, n = held.shape
    for i in range(n):
        al = 0
        sz = 1.0
        md = 0
        cd = normal_cadence
        sg = 0.0
        bd = 1.0
        tp = False
        pend = False
        tgt = prev_cut[i]
        t_rule = 0
        t_level = 0
        for r in range(n_rules):
            h = held[r, i]
            c = conf[r, i]
            act = active[r, i]
            e = h if act else 0
            c_eff = c if act else 0
            al = max(al, t_alert[r, h])
            sz = min(sz, t_sizing[r, e])
            flat = t_flatten[r, e] and t_cumcut[r, c_eff] < t_cumcut[r, e] - EPS
            md = max(md, halted_rank if flat else t_mode[r, e])
            cd = min(cd, t_cadence[r, e])
            sg = max(sg, t_signal[r, e])
            bd = min(bd, t_budget[r, e])
            tp = tp or t_trip[r, e]
            pend = pend or (act and t_cumcut[r, h] > t_cumcut[r, c] + EPS)
            t_r = t_cumcut[r, c] if act else 0.0
            if t_r > tgt + EPS:
                tgt = t_r
                t_rule = r
                t_level = c
        alert[i] = al
        sizing[i] = sz
        mode[i] = md
        cadence[i] = cd
        signal[i] = sg
        budget[i] = bd
        trip[i] = tp
        pending[i] = pend
        target[i] = tgt
        target_rule[i] = t_rule
        target_level[i] = t_level


@numba.njit(cache=True, nogil=True)
def held_rows(held_all, raw_all, values, since_all, suspended_all, offset, alert_by_gid,
              th_flat, th_start, th_shared, th_k):
    """Every held ladder step of every account, rule by rule and accounts in order, as columns.

    ``th_flat[th_start[r]:]`` holds rule r's thresholds: one row of ``th_k[r]`` steps when
    ``th_shared[r]`` (the ladder's own, every account's), else one row per account; ``alert_by_gid[offset[r] + k]`` is step k's alert level.
    Returns the account index, rule, step, global step id, alert level, metric value, threshold,
    incident start, suspension, whether the step is only held (the metric is below it now), and the
    threshold key (the global step id when the threshold is the ladder's own, else -1).
    """
    n_rules, n = held_all.shape
    m = 0
    for r in range(n_rules):
        for i in range(n):
            if held_all[r, i] > 0:
                m += 1
    idx = np.empty(m, np.int64)
    rule = np.empty(m, np.int64)
    level = np.empty(m, np.int64)
    gid = np.empty(m, np.int64)
    alert = np.empty(m, np.int64)
    value = np.empty(m)
    threshold = np.empty(m)
    since = np.empty(m)
    suspended = np.empty(m, np.bool_)
    only_held = np.empty(m, np.bool_)
    th_key = np.empty(m, np.int64)
    j = 0
    for r in range(n_rules):
        shared = th_shared[r]
        for i in range(n):
            k = held_all[r, i]
            if k <= 0:
                continue
            row = 0 if shared else i
            idx[j] = i
            rule[j] = r
            level[j] = k
            gid[j] = offset[r] + k
            alert[j] = alert_by_gid[offset[r] + k]
            value[j] = values[r, i]
            threshold[j] = th_flat[th_start[r] + row * th_k[r] + k - 1]
            since[j] = since_all[r, i]
            suspended[j] = suspended_all[r, i]
            only_held[j] = raw_all[r, i] < k
            th_key[j] = offset[r] + k if shared else -1
            j += 1
    return idx, rule, level, gid, alert, value, threshold, since, suspended, only_held, th_key
