"""Value at Risk and Expected Shortfall, for many series and for many portfolios at once.

Conventions (every function):

* Inputs are *simple* per-bar returns; one bar is the VaR horizon.
* VaR and ES are **positive losses** (a 1% loss is ``0.01``; a series that
  only gains can have negative VaR). Series functions return fractions of the
  series' value; portfolio functions return USD (divide by equity for a
  fraction).
* Levels are confidence levels (0.95, 0.99); the tail probability is
  ``1 - level``.
* Historical VaR: ``-percentile(r, 100 (1 - level))`` with numpy's default
  *linear* interpolation (Hyndman-Fan type 7), as ``empyrical.value_at_risk``.
  Historical ES: ``-mean`` of the ``int((T-1)(1-level)) + 1`` smallest
  returns, as ``empyrical.conditional_value_at_risk``. Since the ES tail ends
  at the order statistic below the VaR quantile, ES >= VaR always.
* Parametric (normal): ``VaR = z sigma - mu``, ``ES = sigma phi(z) / (1 -
  level) - mu`` with ``z = Phi^-1(level)`` and ``sigma`` the sample std
  (``ddof=1``). ``mu`` is the sample mean when ``include_mean`` else 0
  (default 0: a drift estimate over one bar is noise and a positive one would
  lower the VaR).
* Cornish-Fisher: the normal quantile corrected for skew ``S`` and excess
  kurtosis ``K`` (population moments, ``scipy.stats.skew`` /
  ``scipy.stats.kurtosis`` defaults); ES is the exact tail mean of the
  Cornish-Fisher transformed normal.
* Monte Carlo: scenarios drawn from the multivariate normal or Student-t
  (scaled to the same covariance) with the estimated covariance, seeded; VaR
  and ES are the historical estimators above applied to the scenarios.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.special import ndtr, ndtri

from risklib.core.metrics import _kernels
from risklib.core.metrics._validate import as_2d, check_finite, check_length, check_level
from risklib.errors import MetricsError

Method = Literal["historical", "parametric", "cornish_fisher", "mc_normal", "mc_t"]

#: Fewest bars a historical VaR/ES accepts.
MIN_BARS = 2

#: Smallest sample (rows x values) whose tails are selected on several threads.
_PARALLEL_MIN_VALUES = 1 << 16


def _key(level: float) -> str:
    return f"{level * 100:g}".replace(".", "_")


def _series(returns: np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    r = as_2d(returns, "returns", axis_names=("row", "bar"))
    check_length(r.shape[1], MIN_BARS, "returns")
    check_finite(r, "returns", rows=labels, axis_names=("row", "bar"))
    return r


def tail_losses(pnl: np.ndarray, levels: tuple[float, float] = (0.95, 0.99)) -> dict[str, np.ndarray]:
    """Historical VaR and ES of each row of a P&L or return sample (compiled, no full sort).

    Parameters
    ----------
    pnl : np.ndarray, shape (n_rows, n_samples), float32 or float64
        Samples per row (returns, P&L in USD, or scenario P&L).
    levels : (float, float)
        Two confidence levels.

    Returns
    -------
    dict
        ``var_<L>`` and ``es_<L>`` for each level (``var_95``, ``es_99``, …),
        float64 arrays (n_rows,), positive losses in the units of ``pnl``. Rows
        with a non-finite value give NaN.
    """
    a, b = (check_level(x) for x in levels)
    x = pnl if pnl.dtype in (np.float32, np.float64) else pnl.astype(np.float64)
    x = np.ascontiguousarray(x)
    if x.ndim != 2 or x.shape[1] < MIN_BARS:
        raise MetricsError(f"pnl: expected (n_rows, n_samples >= {MIN_BARS}), got shape {x.shape}")
    out = np.empty((x.shape[0], 4))
    # a parallel region only pays off past ~100 us of work (its threads must first be scheduled)
    kernel = _kernels.tail_rows if x.size >= _PARALLEL_MIN_VALUES else _kernels.tail_rows_serial
    kernel(x, 1.0 - a, 1.0 - b, out)
    return {f"var_{_key(a)}": out[:, 0], f"var_{_key(b)}": out[:, 1], f"es_{_key(a)}": out[:, 2], f"es_{_key(b)}": out[:, 3]}


def historical_var_es(
    returns: np.ndarray, levels: tuple[float, float] = (0.95, 0.99), *, labels: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Historical VaR and ES per row of a return series array (see module conventions).

    Raises
    ------
    MetricsError
        NaN/inf (naming row, bar and value) or fewer than 2 bars.
    """
    return tail_losses(_series(returns, labels), levels)


def _moments(r: np.ndarray, include_mean: bool) -> tuple[np.ndarray, np.ndarray]:
    mu = r.mean(axis=1)
    sigma = r.std(axis=1, ddof=1)
    return (mu if include_mean else np.zeros_like(mu)), sigma


def normal_var_es(mu: np.ndarray, sigma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Normal VaR and ES (positive losses) from mean and standard deviation."""
    level = check_level(level)
    z = float(ndtri(level))
    phi = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    return z * sigma - mu, sigma * phi / (1.0 - level) - mu


def parametric_var_es(
    returns: np.ndarray, level: float = 0.99, *, include_mean: bool = False, labels: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Parametric (normal) VaR and ES per row: ``z sigma - mu`` and ``sigma phi(z) / (1 - level) - mu``.

    Returns
    -------
    (var, es) : tuple of np.ndarray (n_series,)
        Positive loss fractions. Matches ``-scipy.stats.norm.ppf(1 - level, mu, sigma)``
        and ``-scipy.stats.norm.expect(lb=-inf, ub=VaR quantile) / (1 - level)``.
    """
    r = _series(returns, labels)
    mu, sigma = _moments(r, include_mean)
    return normal_var_es(mu, sigma, level)


def cornish_fisher_var_es(
    returns: np.ndarray, level: float = 0.99, *, include_mean: bool = False, labels: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cornish-Fisher (modified) VaR and ES per row.

    ``z_cf = z + (z^2 - 1) S/6 + (z^3 - 3z) K/24 - (2z^3 - 5z) S^2/36`` at the
    tail quantile ``z = Phi^-1(1 - level)``; ``VaR = -(mu + sigma z_cf)``.
    ES is ``-(mu + sigma E[cf(Z) | Z < z])`` with ``Z`` standard normal, in
    closed form from the truncated-normal moments (exact for the expansion,
    which is monotone for moderate ``S`` and ``K``). Where extreme ``S``, ``K``
    make the expansion bend back (no longer a quantile function), VaR is the
    largest expanded loss at any level between the median and ``level`` and
    ES is at least VaR: a protective envelope, so VaR never falls as the
    level rises. ``S`` and ``K`` are
    population skew and excess kurtosis; ``sigma`` is the sample std (ddof=1).
    A series of constant returns has S = K = 0.
    """
    level = check_level(level)
    r = _series(returns, labels)
    mu, sigma = _moments(r, include_mean)
    d = r - r.mean(axis=1, keepdims=True)
    m2 = (d * d).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(m2 > 0, (d**3).mean(axis=1) / m2**1.5, 0.0)
        k = np.where(m2 > 0, (d**4).mean(axis=1) / m2**2 - 3.0, 0.0)
    degenerate = ~(np.isfinite(s) & np.isfinite(k))  # variance so small its powers underflow: no shape to correct
    s, k = np.where(degenerate, 0.0, s), np.where(degenerate, 0.0, k)
    c = float(ndtri(1.0 - level))
    # cf(z) = a0 + a1 z + a2 z^2 + a3 z^3
    a0 = -s / 6
    a1 = 1 - 3 * k / 24 + 5 * s * s / 36
    a2 = s / 6
    a3 = k / 24 - 2 * s * s / 36
    z_cf = a0 + a1 * c + a2 * c * c + a3 * c**3
    # Protective envelope: for extreme S, K the expansion bends back and is no quantile function.
    # The loss at this level is then the largest expanded loss at any level between the median and
    # this one (endpoints or a turning point of cf inside [c, 0]), so VaR never falls as the level rises.
    lowest = np.minimum(z_cf, a0)
    disc = 4 * a2 * a2 - 12 * a1 * a3
    with np.errstate(divide="ignore", invalid="ignore"):
        for sgn in (-1.0, 1.0):
            zc = np.where(
                np.abs(a3) > 1e-12,
                (-2 * a2 + sgn * np.sqrt(np.maximum(disc, 0.0))) / (6 * a3),
                np.where(np.abs(a2) > 1e-12, -a1 / (2 * a2), np.nan),
            )
            inside = (disc >= 0) & np.isfinite(zc) & (zc >= c) & (zc <= 0)
            lowest = np.where(inside, np.minimum(lowest, a0 + a1 * zc + a2 * zc * zc + a3 * zc**3), lowest)
    z_cf = lowest
    var = -(mu + sigma * z_cf)
    # E[cf(Z) | Z < c] from the truncated-normal moments I0..I3
    phi = np.exp(-0.5 * c * c) / np.sqrt(2.0 * np.pi)
    i0 = float(ndtr(c))
    i1 = -phi
    i2 = i0 - c * phi
    i3 = -(c * c + 2) * phi
    tail_mean = (a0 * i0 + a1 * i1 + a2 * i2 + a3 * i3) / i0
    es = np.maximum(-(mu + sigma * tail_mean), var)  # where the expansion bends back, ES is at least VaR
    return var, es


# --- portfolios: positions x instrument return scenarios -------------------------------


def _exposure_returns(exposure_usd: np.ndarray, returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(exposure_usd, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if r.ndim != 2 or x.ndim != 2 or x.shape[1] != r.shape[1]:
        raise MetricsError(
            f"exposure_usd shape {x.shape} and returns shape {r.shape}: need (A, N) and (T, N) with the same N"
        )
    check_length(r.shape[0], MIN_BARS, "returns")
    check_finite(r, "returns", axis_names=("bar", "instrument"))
    check_finite(x, "exposure_usd", axis_names=("account", "instrument"))
    return x, r


def portfolio_pnl(exposure_usd: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """Scenario P&L in USD of many portfolios: ``exposure_usd @ returns.T``.

    Parameters
    ----------
    exposure_usd : np.ndarray, shape (A, N)
        USD exposure per account and instrument (for FX use
        :func:`usd_returns` factors so the product is exact).
    returns : np.ndarray, shape (T, N)
        One row per scenario (historical bar or simulated draw).

    Returns
    -------
    np.ndarray, shape (A, T)
    """
    x, r = _exposure_returns(exposure_usd, returns)
    return x @ r.T


def portfolio_var_es(
    exposure_usd: np.ndarray,
    returns: np.ndarray,
    *,
    method: Method = "historical",
    levels: tuple[float, float] = (0.95, 0.99),
    include_mean: bool = False,
    n_scenarios: int = 10_000,
    seed: int = 0,
    dof: float = 5.0,
    dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """VaR and ES in USD (positive losses) of many portfolios over the same instrument returns.

    ``historical`` uses the P&L of each historical bar; ``parametric`` the
    normal with the sample covariance (ddof=1); ``cornish_fisher`` the
    Cornish-Fisher expansion of each portfolio's historical P&L series;
    ``mc_normal`` / ``mc_t`` the scenarios of :func:`monte_carlo_scenarios`.

    Returns
    -------
    dict of np.ndarray (A,)
        ``var_95``, ``var_99``, ``es_95``, ``es_99`` (keys follow ``levels``).
    """
    x, r = _exposure_returns(exposure_usd, returns)
    if method == "historical":
        return tail_losses(x @ r.T, levels)
    if method == "parametric":
        cov = np.cov(r, rowvar=False, ddof=1).reshape(r.shape[1], r.shape[1])
        sigma = np.sqrt(np.maximum(((x @ cov) * x).sum(axis=1), 0.0))
        mu = x @ r.mean(axis=0) if include_mean else np.zeros(x.shape[0])
        out: dict[str, np.ndarray] = {}
        for lv in levels:
            v, e = normal_var_es(mu, sigma, lv)
            out[f"var_{_key(lv)}"], out[f"es_{_key(lv)}"] = v, e
        return out
    if method == "cornish_fisher":
        pnl = x @ r.T
        out = {}
        for lv in levels:
            v, e = cornish_fisher_var_es(pnl, lv, include_mean=include_mean)
            out[f"var_{_key(lv)}"], out[f"es_{_key(lv)}"] = v, e
        return out
    if method in ("mc_normal", "mc_t"):
        scen = monte_carlo_scenarios(
            r, n_scenarios, seed=seed, dist="t" if method == "mc_t" else "normal", dof=dof, dtype=dtype,
            include_mean=include_mean,
        )
        return monte_carlo_var_es(x, scen, levels=levels)
    raise MetricsError(f"method={method!r}: must be one of historical, parametric, cornish_fisher, mc_normal, mc_t")


def component_var(
    exposure_usd: np.ndarray,
    cov: np.ndarray,
    level: float = 0.99,
    *,
    mean: np.ndarray | None = None,
    marginal: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Parametric portfolio VaR and its Euler decomposition (component VaR) per position.

    ``VaR_a = z sigma_a - x_a . mu`` with ``sigma_a = sqrt(x_a' C x_a)``;
    component ``c_aj = x_aj (z (C x_a)_j / sigma_a - mu_j)``, which sums over
    ``j`` exactly (to rounding) to ``VaR_a``. Marginal VaR is ``c_aj / x_aj``.
    A portfolio with zero variance has zero components.

    Parameters
    ----------
    exposure_usd : np.ndarray, shape (A, N)
    cov : np.ndarray, shape (N, N)
        Per-bar return covariance.
    level : float
    mean : np.ndarray (N,), optional
        Per-bar mean returns (None: zero).

    marginal : bool
        Return the marginal VaR per unit of exposure ``dVaR/dx`` instead of
        the components (components are ``x * marginal``).

    Returns
    -------
    (var, components) : np.ndarray (A,), np.ndarray (A, N)
        USD, positive = adds to the loss.
    """
    level = check_level(level)
    x = np.atleast_2d(np.asarray(exposure_usd, dtype=np.float64))
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (x.shape[1], x.shape[1]):
        raise MetricsError(f"cov shape {c.shape}: need ({x.shape[1]}, {x.shape[1]}) to match exposure_usd {x.shape}")
    z = float(ndtri(level))
    cx = x @ c
    sigma = np.sqrt(np.maximum((cx * x).sum(axis=1), 0.0))
    mu = np.zeros(x.shape[1]) if mean is None else np.asarray(mean, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        marg = np.where(sigma[:, None] > 0, cx * (z / sigma)[:, None], 0.0) - mu[None, :]
    var = z * sigma - x @ mu
    return (var, marg) if marginal else (var, x * marg)


def _sqrt_factor(cov: np.ndarray) -> np.ndarray:
    """A factor ``F`` (N, N) with ``F' F = cov`` that is equivariant under relabelling instruments.

    Rows of ``F`` are ``sqrt(eigenvalue) * eigenvector``, ordered by decreasing
    eigenvalue, each eigenvector's sign fixed so its component sum (then its
    sum of cubes) is positive. Permuting the instruments permutes ``F``'s
    columns and nothing else, so seeded scenarios give the same portfolio P&L
    whatever the column order, provided the eigenvalues are distinct (a
    repeated eigenvalue leaves its eigenvectors, hence the draws' directions,
    undetermined: the distribution is the same but the sample differs) and no
    eigenvector is mapped to its own negative by the permutation (such as
    ``(1, -1) / sqrt(2)``, whose sign no order-free rule can fix).
    """
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(-vals, kind="stable")
    vals, vecs = np.maximum(vals[order], 0.0), vecs[:, order]
    s = vecs.sum(axis=0)
    s3 = (vecs**3).sum(axis=0)
    flip = np.where(np.abs(s) > 1e-9, s < 0, s3 < 0)
    vecs[:, flip] *= -1.0
    return np.sqrt(vals)[:, None] * vecs.T


def monte_carlo_scenarios(
    returns: np.ndarray,
    n_scenarios: int = 10_000,
    *,
    seed: int = 0,
    dist: Literal["normal", "t"] = "normal",
    dof: float = 5.0,
    dtype: str = "float32",
    include_mean: bool = False,
) -> np.ndarray:
    """Seeded one-bar return scenarios with the sample covariance of ``returns`` (T, N).

    ``normal``: ``Z F`` with ``Z`` standard normal (M, N) and ``F' F = cov``
    (see :func:`_sqrt_factor`). ``t``: multivariate Student-t with ``dof``
    degrees of freedom, ``Z F sqrt((dof - 2) / W)`` with ``W ~ chi2(dof)`` per
    scenario, so its covariance is the same ``cov``. The same seed gives the
    same scenarios. ``dtype="float32"`` halves memory and matmul time: on
    the same draws VaR differs from a float64 product by less than 1e-5
    relative (the benchmark measures ~5e-7); float32 and float64 *draws* are
    different samples of the same distribution.

    Returns
    -------
    np.ndarray, shape (n_scenarios, N)
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise MetricsError(f"returns: expected (T, N), got shape {r.shape}")
    check_length(r.shape[0], MIN_BARS, "returns")
    check_finite(r, "returns", axis_names=("bar", "instrument"))
    if n_scenarios < 100:
        raise MetricsError(f"n_scenarios={n_scenarios}: must be >= 100")
    if dist == "t" and not dof > 2:
        raise MetricsError(f"dof={dof}: must be > 2 (the variance must exist)")
    if dtype not in ("float32", "float64"):
        raise MetricsError(f"dtype={dtype!r}: must be 'float32' or 'float64'")
    n = r.shape[1]
    cov = _kernels.window_cov(np.ascontiguousarray(r), 0, r.shape[0])  # sample covariance, ddof=1
    f = _sqrt_factor(cov).astype(dtype)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_scenarios, n), dtype=np.float32 if dtype == "float32" else np.float64)
    scen = np.empty_like(z)
    _kernels.row_products(z, f, scen)
    if dist == "t":
        w = rng.chisquare(dof, size=n_scenarios)
        scen *= np.sqrt((dof - 2.0) / w).astype(dtype)[:, None]
    elif dist != "normal":
        raise MetricsError(f"dist={dist!r}: must be 'normal' or 't'")
    if include_mean:
        scen += r.mean(axis=0).astype(dtype)[None, :]
    return scen


def monte_carlo_var_es(
    exposure_usd: np.ndarray,
    scenarios: np.ndarray,
    *,
    levels: tuple[float, float] = (0.95, 0.99),
    chunk_rows: int = 1024,
) -> dict[str, np.ndarray]:
    """VaR and ES in USD of many portfolios over simulated scenarios (M, N), as :func:`tail_losses` of the scenario P&L.

    Each account's scenario P&L (M,) is accumulated in the scenarios' dtype
    (exposures rounded to it) from its non-zero exposures, blocks of accounts
    in parallel, and its tails selected without a full sort; the (A, M) P&L
    matrix is never materialised. In float32 the P&L carries float32
    rounding (about 1e-7 relative), as a float32 matrix product would.
    ``chunk_rows`` is accepted for compatibility and has no effect.
    """
    a, b = (check_level(v) for v in levels)
    x = np.atleast_2d(np.asarray(exposure_usd, dtype=np.float64))
    if x.shape[1] != scenarios.shape[1]:
        raise MetricsError(f"exposure_usd shape {x.shape} and scenarios shape {scenarios.shape}: N differs")
    if scenarios.dtype not in (np.float32, np.float64):
        scenarios = scenarios.astype(np.float64)
    if scenarios.shape[0] < MIN_BARS:
        raise MetricsError(f"scenarios: expected (n_scenarios >= {MIN_BARS}, N), got shape {scenarios.shape}")
    out = np.empty((x.shape[0], 4))
    _kernels.exposure_tail_rows(np.ascontiguousarray(x), np.ascontiguousarray(scenarios.T), 1.0 - a, 1.0 - b, out)
    return {f"var_{_key(a)}": out[:, 0], f"var_{_key(b)}": out[:, 1], f"es_{_key(a)}": out[:, 2], f"es_{_key(b)}": out[:, 3]}
