"""Compiled kernels: one fused pass per row, tails selected without a full sort.

Rows are independent series (accounts or scenario P&L vectors) and run in
parallel. Kernels are cached on disk (``cache=True``) so the compile cost is
paid once per installation, not per process.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_OPTS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@nb.njit(**_OPTS)
def _lerp(a, b, t):
    # numpy.percentile's "linear" interpolation (numpy/lib/_function_base_impl.py::_lerp)
    d = b - a
    if t >= 0.5:
        return b - d * (1.0 - t)
    return a + d * t


@nb.njit(**_OPTS)
def select(a, lo, hi, k):
    """Partial in-place quickselect: afterwards a[k] holds the value of rank k of a[lo:hi],
    everything in a[lo:k] is <= a[k] and everything in a[k+1:hi] is >= a[k]."""
    hi -= 1
    while hi > lo:
        mid = (lo + hi) >> 1
        # median of three as pivot, moved to a[hi]
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[mid] < a[hi]:
            a[mid], a[hi] = a[hi], a[mid]
        pivot = a[hi]
        i = lo
        j = hi - 1
        while True:
            while a[i] < pivot:
                i += 1
            while j > lo and a[j] > pivot:
                j -= 1
            if i >= j:
                break
            a[i], a[j] = a[j], a[i]
            i += 1
            j -= 1
        a[i], a[hi] = a[hi], a[i]
        if i == k:
            return
        if k < i:
            hi = i - 1
        else:
            lo = i + 1


@nb.njit(**_OPTS)
def gather_tail(x, k, buf):
    """Copy into ``buf`` a set of values of ``x`` that surely contains its ``k`` smallest; return its size.

    A strided subsample estimates a cut-off with a safety margin and one
    branch-free pass keeps the values at or below it. If fewer than ``k`` are
    kept the whole row is used, so results are always exact. Returns -1 if
    ``x`` holds a NaN or an infinity. ``buf`` must hold ``x.size`` values
    (``buf`` may be ``x`` itself: writes never overtake reads).
    """
    n = x.size
    total = 0.0
    if n < 128 or 8 * k >= n:
        for i in range(n):
            v = x[i]
            total += v
            buf[i] = v
        return n if math.isfinite(total * 0.0) else -1
    stride = n // 256 if n >= 4096 else max(1, n // 64)
    m = n // stride
    sub = np.empty(m, dtype=x.dtype)
    for i in range(m):
        sub[i] = x[i * stride]
    expect = k * m / n
    r = int(expect + 3.0 * math.sqrt(expect) + 3.0)
    if r >= m:
        for i in range(n):
            v = x[i]
            total += v
            buf[i] = v
        return n if math.isfinite(total * 0.0) else -1
    select(sub, 0, m, r)
    cut = sub[r]
    c = 0
    for i in range(n):
        v = x[i]
        total += v
        buf[c] = v
        c += v <= cut
    if not math.isfinite(total * 0.0):
        return -1
    if c < k:
        for i in range(n):
            buf[i] = x[i]
        return n
    return c


@nb.njit(**_OPTS)
def _max_to_end(a, end):
    # move the largest of a[0:end] to a[end - 1]
    best = 0
    for i in range(1, end):
        if a[i] > a[best]:
            best = i
    a[best], a[end - 1] = a[end - 1], a[best]


@nb.njit(**_OPTS)
def tail_stats(x, q95, q99, buf, out, o):
    """VaR95, VaR99, ES95, ES99 (positive losses) of sample ``x`` into out[o:o+4]; NaN if ``x`` is not all finite.

    VaR_a = -percentile(x, 100 q) with numpy's linear interpolation; ES_a = -mean
    of the ``int((n-1) q) + 1`` smallest values (empyrical's CVaR).
    """
    n = x.size
    k = tail_need(n, q95, q99)
    c = gather_tail(x, k, buf)
    if c < 0:
        for s in range(4):
            out[o + s] = np.nan
        return
    end = c
    for slot, q in ((0, q95), (1, q99)):
        h = (n - 1) * q
        lo = int(math.floor(h))
        hi = min(lo + 1, n - 1)
        select(buf, 0, end, hi)
        vhi = buf[hi]
        if hi > lo:
            _max_to_end(buf, hi)  # rank lo = the largest of the hi smallest
        vlo = buf[lo]
        out[o + slot] = -_lerp(vlo, vhi, h - lo)
        m = lo + 1
        acc = 0.0
        for j in range(m):
            acc += buf[j]
        out[o + 2 + slot] = -(acc / m)
        end = lo + 1


@nb.njit(**_OPTS)
def tail_need(n, q95, q99):
    """How many smallest values the VaR 95/99 and ES 95/99 of an ``n``-sample need."""
    k = int((n - 1) * q95) + 2
    k2 = int((n - 1) * q99) + 2
    if k2 > k:
        k = k2
    return min(k, n)


@nb.njit(parallel=True, **_OPTS)
def tail_rows(x, q95, q99, out):
    """Per row of ``x``: out[:, 0..3] = VaR95, VaR99, ES95, ES99 as positive losses.

    VaR_a = -percentile(row, 100 q) with numpy's linear interpolation; ES_a =
    -mean of the ``int((n-1) q) + 1`` smallest values (empyrical's CVaR). A row
    with a non-finite value gets NaN. ``q95``/``q99`` are the tail
    probabilities 1 - level.
    """
    nrow, n = x.shape
    for i in nb.prange(nrow):
        buf = np.empty(n, dtype=x.dtype)
        tail_stats(x[i], q95, q99, buf, out[i], 0)


@nb.njit(parallel=True, **_OPTS)
def series_risk_rows(r, q95, q99, ann, out, bad_col):
    """Fused per-row metric set over simple returns ``r`` (rows = series, oldest first).

    out[:, 0] max drawdown (positive fraction of the running peak, the series
    starting at 1 before the first return: empyrical's definition);
    out[:, 1] annualised volatility (sample std, ddof=1, times sqrt(ann));
    out[:, 2..5] VaR95, VaR99, ES95, ES99 as in :func:`tail_rows`.
    ``bad_col[i]`` is the first non-finite column of row i, or -1.
    """
    nrow, n = r.shape
    for i in nb.prange(nrow):
        row = r[i]
        bad_col[i] = -1
        wealth = 1.0
        peak = 1.0
        mdd = 0.0
        floor = 1.0  # wealth below peak * (1 - mdd) can deepen the drawdown
        total = 0.0
        for j in range(n):
            v = row[j]
            if not math.isfinite(v):
                bad_col[i] = j
                break
            total += v
            wealth *= 1.0 + v
            if wealth > peak:
                peak = wealth
                floor = peak * (1.0 - mdd)
            elif wealth < floor:
                dd = 1.0 - wealth / peak
                if dd > mdd:
                    mdd = dd
                    floor = peak * (1.0 - mdd)
        if bad_col[i] >= 0:
            for c in range(6):
                out[i, c] = np.nan
            continue
        mean = total / n
        ss = 0.0
        for j in range(n):
            d = row[j] - mean
            ss += d * d
        out[i, 0] = mdd
        out[i, 1] = math.sqrt(ss / (n - 1)) * math.sqrt(ann)
        buf = np.empty(n, dtype=r.dtype)
        tail_stats(row, q95, q99, buf, out[i], 2)


@nb.njit(parallel=True, **_OPTS)
def exposure_tail_rows(x, ut, q95, q99, out):
    """Historical VaR95, VaR99, ES95, ES99 of every account's bar P&L ``x[a] @ ut`` without materialising it.

    ``x`` is (A, N) USD exposure, ``ut`` the (N, T) per-bar USD return factors.
    Each account's P&L row is built from its non-zero exposures only (a book
    holds a few of the instruments) and its tail selected in place.
    out[a, :] as :func:`tail_rows`, in USD.
    """
    nacc, nins = x.shape
    t = ut.shape[1]
    for a in nb.prange(nacc):
        buf = np.zeros(t)
        for j in range(nins):
            w = x[a, j]
            if w != 0.0:
                for k in range(t):
                    buf[k] += w * ut[j, k]
        tail_stats(buf, q95, q99, buf, out[a], 0)


@nb.njit(parallel=True, **_OPTS)
def held_pair_stats(x, corr, threshold, out, slot):
    """:func:`pair_stats` reading the held instruments straight from the exposure matrix ``x`` (A, N).

    ``slot[a, j]`` receives the position of instrument ``j`` in account ``a``'s
    held list (for looking up out[a, 3 + slot]).
    """
    nacc, nins = x.shape
    for a in nb.prange(nacc):
        idx = np.empty(nins, dtype=np.int64)
        sgn = np.empty(nins)
        c = 0
        for j in range(nins):
            v = x[a, j]
            if v != 0.0:
                idx[c] = j
                sgn[c] = 1.0 if v > 0 else -1.0
                slot[a, j] = c
                c += 1
            else:
                slot[a, j] = 0
        tot = 0.0
        mx = -np.inf
        above = 0
        for p in range(c):
            out[a, 3 + p] = 0.0
        for p in range(c):
            ip = idx[p]
            for q in range(p + 1, c):
                v = corr[ip, idx[q]] * sgn[p] * sgn[q]
                tot += v
                if v > mx:
                    mx = v
                if v > threshold:
                    above += 1
                out[a, 3 + p] += v
                out[a, 3 + q] += v
        npairs = c * (c - 1) // 2
        if npairs > 0:
            out[a, 0] = tot / npairs
            out[a, 1] = mx
            for p in range(c):
                out[a, 3 + p] /= c - 1
        else:
            out[a, 0] = 0.0
            out[a, 1] = 0.0
        out[a, 2] = above


@nb.njit(**_OPTS)
def window_cov(u, a, b):
    """Sample covariance (ddof=1) of rows ``a:b`` of ``u`` (T, N), single-threaded (small: no BLAS threads)."""
    n = u.shape[1]
    m = b - a
    mean = np.zeros(n)
    for t in range(a, b):
        for i in range(n):
            mean[i] += u[t, i]
    for i in range(n):
        mean[i] /= m
    out = np.zeros((n, n))
    d = np.empty(n)
    for t in range(a, b):
        for i in range(n):
            d[i] = u[t, i] - mean[i]
        for i in range(n):
            di = d[i]
            for j in range(i, n):
                out[i, j] += di * d[j]
    for i in range(n):
        for j in range(i, n):
            out[i, j] /= m - 1
            out[j, i] = out[i, j]
    return out


@nb.njit(**_OPTS)
def weighted_gram(u, w):
    """``sum_t w[t] u[t] u[t]'`` over rows of ``u`` (T, N), single-threaded."""
    n = u.shape[1]
    out = np.zeros((n, n))
    for t in range(u.shape[0]):
        wt = w[t]
        if wt == 0.0:
            continue
        for i in range(n):
            di = wt * u[t, i]
            for j in range(i, n):
                out[i, j] += di * u[t, j]
    for i in range(n):
        for j in range(i + 1, n):
            out[j, i] = out[i, j]
    return out
