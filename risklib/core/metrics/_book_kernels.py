"""The compiled pass of the book metrics (see :mod:`._book`): every account from its position rows.

Every figure that needs an account's netted exposure (historical VaR/ES of
its bar P&L, quadratic forms with the covariance matrices, signed pair
correlations, concentration) and every position row's share of it come from
one parallel pass over the accounts, with the account's exposure, held list
and marginal VaR in small scratch arrays: no (accounts x instruments)
matrices are materialised (fresh pages cost a fault each), and each parallel
region waits for its worker threads to be scheduled, which on a shared
machine can take longer than the work. An account's held instruments are its
non-zero exposures; books hold a few of the N instruments, so every loop
runs over those only.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from risklib.core.metrics._kernels import _OPTS, _accumulate, tail_stats

#: Accounts per parallel task (scratch arrays are allocated once per block).
_ROW_BLOCK = 128


@nb.njit(**_OPTS)
def _held(xrow, idx, w):
    """Write the indices and values of the non-zero entries of ``xrow`` to ``idx``, ``w``; return their count."""
    c = 0
    for j in range(xrow.size):
        v = xrow[j]
        if v != 0.0:
            idx[c] = j
            w[c] = v
            c += 1
    return c


@nb.njit(**_OPTS)
def _quadratic_forms(h, idx, w, c, y, q_row, xm_row, means, cx_row, kc):
    """q_row[m] = x' C_m x for the M symmetric matrices side by side in ``h`` (N, M N), cx_row = C_kc x,
    xm_row[k] = x . means[k]; ``y`` is (M N,) scratch.

    Symmetry lets row j of each matrix stand for its column, so each held
    instrument adds one contiguous row of ``h``.
    """
    n = cx_row.size
    y[:] = 0.0
    _accumulate(y, 0, y.size, h, idx, w, c)
    for m in range(q_row.size):
        s = 0.0
        for p in range(c):
            s += w[p] * y[m * n + idx[p]]
        q_row[m] = s
    for j in range(n):
        cx_row[j] = y[kc * n + j]
    for k in range(xm_row.size):
        s = 0.0
        for p in range(c):
            s += w[p] * means[k, idx[p]]
        xm_row[k] = s


@nb.njit(**_OPTS)
def _pair_stats(corr, idx, w, c, threshold, acc, sgn, out_row, slot_row):
    """Signed correlations of the held pairs: ``corr[i, j]`` times the signs of both exposures.

    out_row[0] mean over pairs, out_row[1] largest, out_row[2] how many
    exceed ``threshold`` (all 0 with fewer than two held), out_row[3 + p]
    the mean signed correlation of held instrument ``p`` with the others;
    slot_row[j] the position of instrument ``j`` in the held list (0 if not
    held). ``acc`` and ``sgn`` are (N,) scratch.
    """
    slot_row[:] = 0
    for p in range(c):
        slot_row[idx[p]] = p
        acc[p] = 0.0
        sgn[p] = 1.0 if w[p] > 0 else -1.0  # once per instrument, not a mispredicted branch per pair
    tot = 0.0
    mx = -np.inf
    above = 0
    for p in range(c):
        row = corr[idx[p]]
        sp = sgn[p]
        ap = acc[p]  # a register, not memory, carries the row's running sum
        for q in range(p + 1, c):
            v = row[idx[q]] * sp * sgn[q]
            tot += v
            mx = max(mx, v)
            above += v > threshold
            ap += v
            acc[q] += v
        acc[p] = ap
    npairs = c * (c - 1) // 2
    if npairs > 0:
        out_row[0] = tot / npairs
        out_row[1] = mx
        for p in range(c):
            out_row[3 + p] = acc[p] / (c - 1)
    else:
        out_row[0] = 0.0
        out_row[1] = 0.0
        for p in range(c):
            out_row[3 + p] = acc[p]
    out_row[2] = above


@nb.njit(parallel=True, **_OPTS)
def book_rows(
    start, order, j_idx, notional, keep, q, row_risk,
    risk_ok, eq,
    ut, q95, q99, h, kc, means, corr, threshold,
    z, mean, var_long, var_short, vol_ratio, horizon,
    tail, qf, xm, pair, conc,
    pvar, contrib, vscore, crisk,
):
    """Every account's risk from its position rows, and each row's share of it.

    Account ``a``'s rows are ``order[start[a]:start[a + 1]]`` (``order``
    empty: rows already grouped, ``start[a]:start[a + 1]``), each of them
    read in row order. Its exposure x (USD per instrument, N) nets the
    ``notional`` of its rows with ``keep``; from it:

    * tail[a] = VaR95, VaR99, ES95, ES99 (positive USD losses, see
      :func:`~._kernels.tail_rows`) of its P&L in every bar, ``x @ ut`` with
      ``ut`` the (N, T) per-bar USD return factors;
    * qf[a, m] = x' C_m x for the symmetric matrices side by side in ``h``
      (N, M N); xm[a, k] = x . means[k];
    * pair[a] = mean, largest and count above ``threshold`` of the signed
      pair correlations of its held instruments under ``corr`` (see
      :func:`_pair_stats`);
    * conc[a] = max |x| / sum |x| (0 for an empty book), as
      :func:`~._exposure.concentration`.

    Per row ``r`` with instrument ``j``, as fractions of the account's
    equity ``eq`` times ``horizon``: pvar[r] the stand-alone VaR95
    (``var_long``/``var_short`` per USD), contrib[r] the Euler contribution
    ``x_r (cx_j z / sigma - mean_j)`` to the parametric VaR (``cx = C_kc
    x``, ``sigma = sqrt(x' C_kc x)``; 0 marginal for a zero-variance book),
    crisk[r] the mean signed correlation of ``j`` with the account's other
    held instruments (the first held one's if ``j`` nets to zero), vscore[r]
    = vol_ratio[j]. Those are real where ``row_risk[r]``; otherwise 0 for a
    zero-quantity row of a risk-valid account (``risk_ok``) and NaN else
    (vscore: NaN unless the account is risk-valid and ``j`` >= 0).
    """
    nacc = start.size - 1
    n = h.shape[0]
    t = ut.shape[1]
    for blk in nb.prange((nacc + _ROW_BLOCK - 1) // _ROW_BLOCK):
        xa = np.zeros(n)
        idx = np.empty(n, dtype=np.int64)
        w = np.empty(n)
        buf = np.empty(t)
        y = np.empty(h.shape[1])
        cx = np.empty(n)
        acc = np.empty(n)
        sgn = np.empty(n)
        pair_row = np.empty(3 + n)
        slot = np.empty(n, dtype=np.int64)
        for a in range(blk * _ROW_BLOCK, min((blk + 1) * _ROW_BLOCK, nacc)):
            for k in range(start[a], start[a + 1]):
                r = order[k] if order.size else k
                if keep[r]:
                    xa[j_idx[r]] += notional[r]
            c = _held(xa, idx, w)
            buf[:] = 0.0
            _accumulate(buf, 0, t, ut, idx, w, c)
            tail_stats(buf, q95, q99, buf, tail[a], 0)
            _quadratic_forms(h, idx, w, c, y, qf[a], xm[a], means, cx, kc)
            pair_row[:] = 0.0
            _pair_stats(corr, idx, w, c, threshold, acc, sgn, pair_row, slot)
            pair[a, 0], pair[a, 1], pair[a, 2] = pair_row[0], pair_row[1], pair_row[2]
            tot = 0.0
            big = 0.0
            for p in range(c):
                tot += abs(w[p])
                big = max(big, abs(w[p]))
            conc[a] = big / tot if tot > 0 else 0.0
            sigma = math.sqrt(max(qf[a, kc], 0.0))
            ok = risk_ok[a]
            for k in range(start[a], start[a + 1]):
                r = order[k] if order.size else k
                j = max(j_idx[r], 0)
                x = notional[r]
                if row_risk[r]:
                    sv = var_long[j] if x > 0 else var_short[j]
                    pvar[r] = sv * abs(x) / eq[a] * horizon
                    m = cx[j] * (z / sigma) if sigma > 0 else 0.0
                    contrib[r] = x * (m - mean[j]) / eq[a] * horizon
                    crisk[r] = pair_row[3 + slot[j]]
                elif ok and q[r] == 0:
                    pvar[r] = contrib[r] = crisk[r] = 0.0
                else:
                    pvar[r] = contrib[r] = crisk[r] = np.nan
                vscore[r] = vol_ratio[j] if ok and j_idx[r] >= 0 else np.nan
            for p in range(c):
                xa[idx[p]] = 0.0
