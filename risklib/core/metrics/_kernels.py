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

# Loop indices of this type are never negative, so element access needs no wraparound
# select and LLVM vectorises the loop (with signed indices it does not).
_U = np.uint64


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
    everything in a[lo:k] is <= a[k] and everything in a[k+1:hi] is >= a[k].

    Lomuto partitions written without branches (a branchy partition mispredicts
    on about half the comparisons of random data). When a pivot has few values
    below it, the values equal to it are split off in one more pass, so many
    ties (a flat book's all-zero P&L) stay linear.
    """
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
        s = lo
        for i in range(lo, hi):
            v = a[i]
            a[i] = a[s]
            a[s] = v
            s += v < pivot
        a[hi] = a[s]
        a[s] = pivot
        if s == k:
            return
        if k < s:
            hi = s - 1
        elif (s - lo) * 8 < hi - lo:
            # a[s+1:hi+1] are >= pivot: move the ones equal to it to the front
            e = s + 1
            for i in range(s + 1, hi + 1):
                v = a[i]
                a[i] = a[e]
                a[e] = v
                e += v <= pivot
            if k < e:
                return
            lo = e
        else:
            lo = s + 1


@nb.njit(**_OPTS)
def _copy_checked(x, buf):
    # copy x into buf; False if x holds a NaN or an infinity (v - v is then NaN)
    bad = 0
    for i in range(_U(x.size)):
        v = x[i]
        bad |= (v - v) != 0.0
        buf[i] = v
    return bad == 0


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
    if n < 128 or 8 * k >= n:
        return n if _copy_checked(x, buf) else -1
    stride = n // 256 if n >= 4096 else max(1, n // 64)
    m = n // stride
    sub = np.empty(m, dtype=x.dtype)
    for i in range(m):
        sub[i] = x[i * stride]
    expect = k * m / n
    r = int(expect + 3.0 * math.sqrt(expect) + 3.0)
    if r >= m:
        return n if _copy_checked(x, buf) else -1
    select(sub, 0, m, r)  # a NaN in sub only makes the cut useless: it is caught below
    cut = sub[r]
    c = 0
    bad = 0
    for i in range(_U(n)):
        v = x[i]
        buf[c] = v
        c += v <= cut
        bad |= (v - v) != 0.0
    if bad:
        return -1
    if c < k:
        for i in range(_U(n)):
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


@nb.njit(**_OPTS)
def tail_rows_serial(x, q95, q99, out):
    """:func:`tail_rows` on the calling thread: for small inputs, where starting a parallel region
    (worker threads to be scheduled, on a shared machine perhaps after other processes) costs more
    than the work."""
    buf = np.empty(x.shape[1], dtype=x.dtype)
    for i in range(x.shape[0]):
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


@nb.njit(**_OPTS)
def _accumulate(buf, lo, hi, ut, idx, w, c):
    """buf[lo:hi] += sum over p < c of w[p] * ut[idx[p], lo:hi], four rows of ``ut`` per pass over ``buf``."""
    p = 0
    while p + 4 <= c:
        r0, r1, r2, r3 = ut[idx[p]], ut[idx[p + 1]], ut[idx[p + 2]], ut[idx[p + 3]]
        w0, w1, w2, w3 = w[p], w[p + 1], w[p + 2], w[p + 3]
        for k in range(_U(lo), _U(hi)):
            buf[k] += w0 * r0[k] + w1 * r1[k] + w2 * r2[k] + w3 * r3[k]
        p += 4
    while p < c:
        r0, w0 = ut[idx[p]], w[p]
        for k in range(_U(lo), _U(hi)):
            buf[k] += w0 * r0[k]
        p += 1


#: Accounts per parallel task of :func:`exposure_tail_rows`, and scenarios per pass: a block's
#: slice of every instrument's scenarios (50 x 1024 x 4 bytes) stays in cache while all its
#: accounts use it, instead of every account streaming all scenarios from memory.
_ACC_BLOCK = 16
_SCEN_CHUNK = 1024


@nb.njit(parallel=True, **_OPTS)
def exposure_tail_rows(x, ut, q95, q99, out):
    """Historical VaR95, VaR99, ES95, ES99 of every account's P&L ``x[a] @ ut`` without materialising the book's P&L.

    ``x`` is (A, N) exposure, ``ut`` the (N, T) per-bar (or per-scenario)
    return factors; the P&L is accumulated in ``ut``'s dtype from each
    account's non-zero exposures only (a book holds a few of the
    instruments), then its tail is selected in place.
    out[a, :] as :func:`tail_rows`, in the units of ``x``.
    """
    nacc, nins = x.shape
    t = ut.shape[1]
    for blk in nb.prange((nacc + _ACC_BLOCK - 1) // _ACC_BLOCK):
        a0 = blk * _ACC_BLOCK
        nb_ = min(a0 + _ACC_BLOCK, nacc) - a0
        pnl = np.zeros((nb_, t), dtype=ut.dtype)
        idx = np.empty((nb_, nins), dtype=np.int64)
        w = np.empty((nb_, nins), dtype=ut.dtype)
        cnt = np.zeros(nb_, dtype=np.int64)
        for b in range(nb_):
            for j in range(nins):
                v = x[a0 + b, j]
                if v != 0.0:
                    idx[b, cnt[b]] = j
                    w[b, cnt[b]] = v
                    cnt[b] += 1
        for s0 in range(0, t, _SCEN_CHUNK):
            s1 = min(s0 + _SCEN_CHUNK, t)
            for b in range(nb_):
                _accumulate(pnl[b], s0, s1, ut, idx[b], w[b], cnt[b])
        for b in range(nb_):
            tail_stats(pnl[b], q95, q99, pnl[b], out[a0 + b], 0)


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


@nb.njit(**_OPTS)
def row_products(z, f, out):
    """out = z @ f for a tall ``z`` (M, K) and small ``f`` (K, N), single-threaded, in ``out``'s dtype.

    Each output row adds K scaled rows of ``f``, in order; no BLAS call, whose
    worker threads can wait longer than the work on a shared machine.
    """
    k = z.shape[1]
    n = f.shape[1]
    for s in range(z.shape[0]):
        row = out[s]
        zs = z[s]
        for i in range(_U(n)):
            row[i] = 0.0
        for j in range(k):
            zj = zs[j]
            fj = f[j]
            for i in range(_U(n)):
                row[i] += zj * fj[i]

