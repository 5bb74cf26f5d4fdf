"""Compiled passes of the book metrics (see :mod:`._book`): one over accounts, one over position rows.

Every per-account figure that needs the account's held instruments
(historical VaR/ES of its bar P&L, quadratic forms with the covariance
matrices, signed pair correlations) comes from one parallel pass: each
parallel region waits for its worker threads to be scheduled, which on a
shared machine can take longer than the work, so the pass is fused rather
than split into a kernel per figure. An account's held instruments are its
non-zero exposures; books hold a few of the N instruments, so every loop
runs over those only.
"""

from __future__ import annotations

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
def _pair_stats(corr, idx, w, c, threshold, acc, out_row, slot_row):
    """Signed correlations of the held pairs: ``corr[i, j]`` times the signs of both exposures.

    out_row[0] mean over pairs, out_row[1] largest, out_row[2] how many
    exceed ``threshold`` (all 0 with fewer than two held), out_row[3 + p]
    the mean signed correlation of held instrument ``p`` with the others;
    slot_row[j] the position of instrument ``j`` in the held list (0 if not
    held). ``acc`` is (N,) scratch.
    """
    slot_row[:] = 0
    for p in range(c):
        slot_row[idx[p]] = p
        acc[p] = 0.0
    tot = 0.0
    mx = -np.inf
    above = 0
    for p in range(c):
        row = corr[idx[p]]
        sp = 1.0 if w[p] > 0 else -1.0
        ap = acc[p]  # a register, not memory, carries the row's running sum
        for q in range(p + 1, c):
            v = row[idx[q]] * sp * (1.0 if w[q] > 0 else -1.0)
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
def account_rows(x, ut, q95, q99, h, kc, means, corr, threshold, tail, qf, cx, xm, pair, slot, conc):
    """Per account ``a`` with exposure ``x[a]`` (USD per instrument, N):

    * tail[a] = VaR95, VaR99, ES95, ES99 (positive USD losses, see
      :func:`~._kernels.tail_rows`) of its P&L in every bar, ``x[a] @ ut``
      with ``ut`` the (N, T) per-bar USD return factors;
    * qf[a, m] = x' C_m x and cx[a] = C_kc x for the symmetric matrices side
      by side in ``h`` (N, M N); xm[a, k] = x . means[k];
    * pair[a], slot[a]: signed pair correlations of its held instruments
      under ``corr`` (see :func:`_pair_stats`);
    * conc[a] = max |x| / sum |x| (0 for an empty book), as
      :func:`~._exposure.concentration`.
    """
    nacc, n = x.shape
    t = ut.shape[1]
    for blk in nb.prange((nacc + _ROW_BLOCK - 1) // _ROW_BLOCK):
        idx = np.empty(n, dtype=np.int64)
        w = np.empty(n)
        buf = np.empty(t)
        y = np.empty(h.shape[1])
        acc = np.empty(n)
        for a in range(blk * _ROW_BLOCK, min((blk + 1) * _ROW_BLOCK, nacc)):
            c = _held(x[a], idx, w)
            buf[:] = 0.0
            _accumulate(buf, 0, t, ut, idx, w, c)
            tail_stats(buf, q95, q99, buf, tail[a], 0)
            _quadratic_forms(h, idx, w, c, y, qf[a], xm[a], means, cx[a], kc)
            _pair_stats(corr, idx, w, c, threshold, acc, pair[a], slot[a])
            tot = 0.0
            big = 0.0
            for p in range(c):
                tot += abs(w[p])
                big = max(big, abs(w[p]))
            conc[a] = big / tot if tot > 0 else 0.0


@nb.njit(**_OPTS)
def scatter_add(a_idx, j_idx, values, keep, out):
    """out[a_idx[i], j_idx[i]] += values[i] for the rows with keep[i] (``np.add.at``, in row order)."""
    for i in range(a_idx.size):
        if keep[i]:
            out[a_idx[i], j_idx[i]] += values[i]


@nb.njit(**_OPTS)
def position_risk_rows(
    a_idx, j_idx, q, notional, row_risk, risk_ok, eq, cx, sigma, z, mean, var_long, var_short, vol_ratio,
    slot, pair, horizon, pvar, contrib, vscore, crisk,
):
    """Per position row: stand-alone VaR95, Euler contribution to parametric VaR, volatility score and
    correlation risk as fractions of the account's equity (the book's position frame, see _book).

    ``row_risk[i]`` says row i's figures are real; otherwise they are 0 for a
    zero-quantity row of a risk-valid account (``risk_ok``) and NaN else.
    Marginal VaR is ``cx z / sigma - mean`` (0 for a zero-variance book);
    ``horizon`` is the square-root-of-time factor.
    """
    nins = vol_ratio.size
    for i in range(a_idx.size):
        a = max(a_idx[i], 0)
        j = max(j_idx[i], 0)
        x = notional[i]
        ok = risk_ok[a]
        if row_risk[i]:
            sv = var_long[j] if x > 0 else var_short[j]
            pvar[i] = sv * abs(x) / eq[a] * horizon
            m = cx[a, j] * (z / sigma[a]) if sigma[a] > 0 else 0.0
            contrib[i] = x * (m - mean[j]) / eq[a] * horizon
            crisk[i] = pair[a, 3 + min(slot[a, j], nins - 1)] if nins > 0 else 0.0
        elif ok and q[i] == 0:
            pvar[i] = contrib[i] = crisk[i] = 0.0
        else:
            pvar[i] = contrib[i] = crisk[i] = np.nan
        vscore[i] = vol_ratio[j] if ok and j_idx[i] >= 0 else np.nan
