"""One ladder stepped for every account: levels, hysteresis, cut confirmation, combined effects.

A compiled loop over accounts (the rules are few, the accounts many): one pass per ladder
replaces some forty whole-array numpy operations. The rules it applies are described in
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
    """How many of account ``i``'s thresholds (times ``factor``) ``x`` passes; NaN passes none."""
    c = 0
    for j in range(th.shape[1]):
        t = th[i, j] * factor if factor != 1.0 else th[i, j]
        if (x >= t) if inclusive else (x > t):
            c += 1
    return c


@numba.njit(cache=True, nogil=True)
def step_ladder(
    now_s, v, th, inclusive, clear_factor, dwell_s, needs_valid, valid, active,
    prev, c_level, c_below, c_since, c_conf, c_streak, c_first,
    cut_row, confirm_n, confirm_s, cumcut,
    t_alert, t_sizing, t_mode, t_flatten, t_cadence, t_signal, t_budget, t_trip, halted_rank, rule_id,
    held, raw, below, since, conf, streak, first,
    alert, sizing, mode, cadence, signal, budget, trip, pending, target, target_rule, target_level,
):
    """Advance one ladder for every account and fold its effects into the combined decision.

    Inputs per account: metric ``v``, thresholds ``th`` (accounts x steps), ``valid`` data,
    ``active`` (not suspended), and from ``prev`` (columns ``c_*``) the previous held level,
    clearing start, incident start, confirmed level and, per step, the confirmation streak length
    and start. Step tables (index 0 = no step) describe the ladder; ``cut_row[k]`` is the row of
    step k's streak in ``streak``/``first`` (-1 for a step without a cut).

    Outputs written in place: ``held``, ``raw``, ``below``, ``since``, ``conf`` and the streaks;
    the combined ``alert``/``sizing``/``mode``/``cadence``/``signal``/``budget``/``trip``/
    ``pending`` and the most protective cut ``target`` (with its rule and level) are updated.
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

        # effects: alerts always, the rest only while the rule is not suspended
        act = active[i]
        e = h if act else 0
        c_eff = c if act else 0
        alert[i] = max(alert[i], t_alert[h])
        sizing[i] = min(sizing[i], t_sizing[e])
        step_mode = halted_rank if (t_flatten[e] and cumcut[c_eff] < cumcut[e] - EPS) else t_mode[e]
        mode[i] = max(mode[i], step_mode)
        cadence[i] = min(cadence[i], t_cadence[e])
        signal[i] = max(signal[i], t_signal[e])
        budget[i] = min(budget[i], t_budget[e])
        trip[i] = trip[i] or t_trip[e]
        pending[i] = pending[i] or (act and cumcut[h] > cumcut[c] + EPS)
        t_r = cumcut[c] if act else 0.0
        if t_r > target[i] + EPS:
            target[i] = t_r
            target_rule[i] = rule_id
            target_level[i] = c
