"""Market stress detection (real-time document, ``StressEventDetector``).

Six detectors, each a documented rule over :class:`MarketInputs`, each
returning the stress level (0-4) it signals. The combined output follows the
spec's "Stress Event Classifications": level 1 (1.5-2x normal volatility,
enhanced monitoring), 2 (2-3x, reduce 20 %), 3 (3-5x, reduce 50 %, halt new
entries), 4 (>5x, emergency closure, complete halt).

A detector whose inputs are absent is silent and lowers the confidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.policy._config import StressDetectionConfig
from risklib.errors import DataError

#: Tie-break order for the primary stress (most dangerous first).
DETECTORS = (
    "flash_crash",
    "liquidity_crisis",
    "volatility_spike",
    "correlation_breakdown",
    "economic_shock",
    "regime_shift",
)


@dataclass(frozen=True)
class MarketInputs:
    """Market-wide inputs of one cycle; every field optional (absent = detector silent).

    Attributes
    ----------
    instruments
        Instrument symbols; per-instrument arrays follow this order.
    vol_ratio
        Current / normal volatility per instrument (ratio).
    spread_ratio
        Current / normal bid-ask spread per instrument (ratio).
    quote_missing
        True where the instrument has no quote or a one-sided quote.
    correlation, normal_correlation
        Current and baseline correlation matrices (n x n).
    returns
        Recent per-bar returns, shape (bars, n), oldest first, fractions.
    return_sigma
        Normal per-bar return standard deviation per instrument (fraction).
    regime, previous_regime
        Regime label per instrument now and at the previous cycle.
    events
        Scheduled events: columns ``ts`` (UTC datetime), ``impact`` (str), ``name`` (str).
    feed_silent_s
        Seconds since the feed's last price; None when unknown (the feed rule fails closed).
    """

    instruments: tuple[str, ...] = ()
    vol_ratio: np.ndarray | None = None
    spread_ratio: np.ndarray | None = None
    quote_missing: np.ndarray | None = None
    correlation: np.ndarray | None = None
    normal_correlation: np.ndarray | None = None
    returns: np.ndarray | None = None
    return_sigma: np.ndarray | None = None
    regime: tuple[str, ...] | None = None
    previous_regime: tuple[str, ...] | None = None
    events: pl.DataFrame | None = None
    feed_silent_s: float | None = None


@dataclass(frozen=True)
class DetectorResult:
    name: str
    available: bool
    level: int
    value: float  # the detector's statistic (see its rule)
    threshold: float
    detail: str


@dataclass(frozen=True)
class StressAssessment:
    """Output of :func:`detect_market_stress`.

    ``stress_level`` 0-4 (0 = no stress), ``primary_stress`` the detector that set
    it (``"none"`` at 0), ``recommended_action`` the spec's action for the level,
    ``confidence`` in [0, 1].
    """

    stress_level: int
    primary_stress: str
    recommended_action: str
    confidence: float
    detectors: tuple[DetectorResult, ...] = field(default_factory=tuple)

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "detector": [d.name for d in self.detectors],
                "available": [d.available for d in self.detectors],
                "level": [d.level for d in self.detectors],
                "value": [d.value for d in self.detectors],
                "threshold": [d.threshold for d in self.detectors],
                "detail": [d.detail for d in self.detectors],
            },
            schema={"detector": pl.String, "available": pl.Boolean, "level": pl.Int64,
                    "value": pl.Float64, "threshold": pl.Float64, "detail": pl.String},
        )


EVENTS = {"ts": pl.Datetime("us", "UTC"), "impact": pl.String, "name": pl.String}


def parse_events(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate a user's scheduled-events table (read from their file by the caller) for the detector.

    Parameters
    ----------
    frame
        Columns ``ts`` (ISO-8601 string with offset, or a timezone-aware datetime), ``impact``
        (``high``/``medium``/``low``, any case) and ``name``. Extra columns are dropped.

    Returns
    -------
    pl.DataFrame
        ``ts`` as UTC datetime, ``impact`` lower-case, ``name``.

    Raises
    ------
    DataError
        Naming the row and column of the first bad value.
    """
    missing = [c for c in EVENTS if c not in frame.columns]
    if missing:
        raise DataError(f"events: missing column(s) {missing}; have {frame.columns}")
    ts = frame["ts"]
    if ts.dtype == pl.String:
        parsed = ts.str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
        bad = parsed.is_null() & ts.is_not_null()
        if bad.any():
            row = int(bad.arg_max())
            raise DataError(f"events row {row}: ts={ts[row]!r}: not an ISO-8601 time with offset")
        ts = parsed
    elif isinstance(ts.dtype, pl.Datetime):
        if ts.dtype.time_zone is None:
            raise DataError("events: ts has no time zone; give times with an offset")
        ts = ts.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    else:
        raise DataError(f"events: ts has type {ts.dtype}; expected ISO-8601 strings or datetimes")
    nulls = ts.is_null() | frame["impact"].is_null()
    if nulls.any():
        row = int(nulls.arg_max())
        raise DataError(f"events row {row}: ts and impact are required")
    return pl.DataFrame({"ts": ts, "impact": frame["impact"].cast(pl.String).str.to_lowercase(),
                         "name": frame["name"].cast(pl.String)})


def classify_vol_ratio(vol_ratio: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Stress level 0-4 of volatility ratios: count of ``levels`` (1.5, 2, 3, 5x) reached (``>=``).

    NaN gives 0 (callers handle missing data separately).
    """
    v = np.asarray(vol_ratio, dtype=float)
    lv = np.asarray(levels, dtype=float)
    if lv.size and np.all(lv[1:] >= lv[:-1]):  # ascending (as validated): how many reached is a sorted search
        return np.where(np.isnan(v), 0, np.searchsorted(lv, v, side="right")).astype(np.int64)
    with np.errstate(invalid="ignore"):
        return (v[..., None] >= lv).sum(axis=-1).astype(np.int64)


def _silent(name: str, threshold: float) -> DetectorResult:
    return DetectorResult(name, False, 0, float("nan"), threshold, "inputs absent")


def detect_volatility_spike(m: MarketInputs, cfg: StressDetectionConfig) -> DetectorResult:
    """Rule: the largest instrument vol ratio, classified by ``vol_levels`` (1.5/2/3/5x, ``>=``)."""
    if m.vol_ratio is None or not np.isfinite(m.vol_ratio).any():
        return _silent("volatility_spike", cfg.vol_levels[0])
    v = float(np.nanmax(m.vol_ratio))
    level = int(classify_vol_ratio(np.array([v]), cfg.vol_levels)[0])
    worst = m.instruments[int(np.nanargmax(m.vol_ratio))] if m.instruments else "?"
    return DetectorResult("volatility_spike", True, level, v, cfg.vol_levels[0], f"max vol ratio {v:.2f}x ({worst})")


def detect_liquidity_crisis(m: MarketInputs, cfg: StressDetectionConfig) -> DetectorResult:
    """Rule: share of instruments with spread >= ``spread_widening`` x normal or a missing/one-sided quote.

    Fires at ``liquidity_level`` when the share reaches ``liquidity_share``;
    at ``liquidity_missing_level`` when missing quotes alone reach it.
    """
    if m.spread_ratio is None and m.quote_missing is None:
        return _silent("liquidity_crisis", cfg.liquidity_share)
    n = len(m.spread_ratio) if m.spread_ratio is not None else len(m.quote_missing)
    wide = np.zeros(n, bool) if m.spread_ratio is None else np.nan_to_num(m.spread_ratio, nan=np.inf) >= cfg.spread_widening
    missing = np.zeros(n, bool) if m.quote_missing is None else np.asarray(m.quote_missing, bool)
    share = float((wide | missing).mean()) if n else 0.0
    miss_share = float(missing.mean()) if n else 0.0
    level = 0
    if miss_share >= cfg.liquidity_share:
        level = cfg.liquidity_missing_level
    elif share >= cfg.liquidity_share:
        level = cfg.liquidity_level
    return DetectorResult(
        "liquidity_crisis", True, level, share, cfg.liquidity_share,
        f"{int((wide | missing).sum())}/{n} instruments wide or missing ({int(missing.sum())} missing)",
    )


def detect_correlation_breakdown(m: MarketInputs, cfg: StressDetectionConfig) -> DetectorResult:
    """Rule: mean off-diagonal |corr| > ``correlation_level`` (diversification failure), or the largest
    |corr - normal corr| > ``correlation_jump`` (structure broke)."""
    c = m.correlation
    if c is None or c.shape[0] < 2:
        return _silent("correlation_breakdown", cfg.correlation_level)
    n = c.shape[0]
    off = ~np.eye(n, dtype=bool)
    mean_abs = float(np.nanmean(np.abs(c[off])))
    jump = 0.0
    if m.normal_correlation is not None:
        jump = float(np.nanmax(np.abs(c[off] - m.normal_correlation[off])))
    fired = mean_abs > cfg.correlation_level or jump > cfg.correlation_jump
    return DetectorResult(
        "correlation_breakdown", True, cfg.correlation_breakdown_level if fired else 0, mean_abs,
        cfg.correlation_level, f"mean |corr| {mean_abs:.2f}, max change {jump:.2f}",
    )


def detect_flash_crash(m: MarketInputs, cfg: StressDetectionConfig) -> DetectorResult:
    """Rule: the largest move over any ``flash_window_bars`` consecutive bars, in units of
    ``return_sigma * sqrt(window)``, reaches ``flash_sigmas``. If the path has since retraced at
    least ``rebound_share`` of that move it is a rebound (``flash_rebound_level``), else
    ``flash_crash_level``. The statistic is the largest z across instruments."""
    r, s = m.returns, m.return_sigma
    w = cfg.flash_window_bars
    if r is None or s is None or r.shape[0] < w:
        return _silent("flash_crash", cfg.flash_sigmas)
    r = np.nan_to_num(np.asarray(r, float), nan=0.0)
    path = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(r, axis=0)])  # log-ish cumulative path
    moves = path[w:] - path[:-w]  # (bars - w + 1, n)
    scale = np.asarray(s, float) * np.sqrt(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, np.abs(moves) / scale, 0.0)
    i_best = np.argmax(z, axis=0)
    z_best = z[i_best, np.arange(z.shape[1])]
    j = int(np.argmax(z_best))
    zmax = float(z_best[j])
    if zmax < cfg.flash_sigmas:
        return DetectorResult("flash_crash", True, 0, zmax, cfg.flash_sigmas, f"largest move {zmax:.1f} sigma")
    t_end = int(i_best[j]) + w
    move = float(moves[i_best[j], j])
    retrace = (path[-1, j] - path[t_end, j]) / -move if move else 0.0
    rebound = retrace >= cfg.rebound_share
    name = m.instruments[j] if m.instruments else str(j)
    return DetectorResult(
        "flash_crash", True, cfg.flash_rebound_level if rebound else cfg.flash_crash_level, zmax, cfg.flash_sigmas,
        f"{name} moved {move:+.4f} ({zmax:.1f} sigma) in {w} bars; retraced {retrace:.0%}"
        + (" (rebound)" if rebound else ""),
    )


def detect_regime_shift(m: MarketInputs, cfg: StressDetectionConfig) -> DetectorResult:
    """Rule: the share of instruments whose regime label changed since the previous cycle
    reaches ``regime_share``."""
    if m.regime is None or m.previous_regime is None or len(m.regime) != len(m.previous_regime) or not m.regime:
        return _silent("regime_shift", cfg.regime_share)
    changed = np.array([a != b for a, b in zip(m.regime, m.previous_regime)])
    share = float(changed.mean())
    return DetectorResult(
        "regime_shift", True, cfg.regime_shift_level if share >= cfg.regime_share else 0, share, cfg.regime_share,
        f"{int(changed.sum())}/{len(changed)} instruments changed regime",
    )


def detect_economic_shock(now: datetime, m: MarketInputs, cfg: StressDetectionConfig) -> DetectorResult:
    """Rule: a scheduled event with impact in ``event_impacts`` has ``now`` inside
    [ts - ``event_before_s``, ts + ``event_after_s``]."""
    ev = m.events
    if ev is None:
        return _silent("economic_shock", 0.0)
    missing = [c for c in ("ts", "impact", "name") if c not in ev.columns]
    if missing:
        raise DataError(f"events: missing column(s) {missing}")
    at = frames.utc_lit(now)
    hot = ev.filter(
        pl.col("impact").str.to_lowercase().is_in([i.lower() for i in cfg.event_impacts])
        & (pl.col("ts") - timedelta(seconds=cfg.event_before_s) <= at)
        & (pl.col("ts") + timedelta(seconds=cfg.event_after_s) >= at)
    )
    names = ", ".join(hot["name"].to_list()[:3])
    return DetectorResult(
        "economic_shock", True, cfg.economic_shock_level if hot.height else 0, float(hot.height), 1.0,
        f"{hot.height} high-impact event(s) in window" + (f": {names}" if names else ""),
    )


def detect_market_stress(now: datetime, market: MarketInputs | None, cfg: StressDetectionConfig) -> StressAssessment:
    """Run every detector and combine them.

    Returns
    -------
    StressAssessment
        ``stress_level`` = max detector level; ``primary_stress`` = the detector with that level
        (ties broken by :data:`DETECTORS` order); ``recommended_action`` = ``cfg.actions[level]``;
        ``confidence``: at level 0 the share of detectors that had inputs; above 0,
        ``0.5 + 0.25 * (other detectors also firing, capped at 1) + 0.25 * margin`` where margin is
        how far the primary's statistic is past its threshold (relative, capped at 1), times
        ``0.5 + 0.5 * coverage`` (coverage = share of detectors with inputs).
    """
    m = market or MarketInputs()
    results = {
        "volatility_spike": detect_volatility_spike(m, cfg),
        "liquidity_crisis": detect_liquidity_crisis(m, cfg),
        "correlation_breakdown": detect_correlation_breakdown(m, cfg),
        "flash_crash": detect_flash_crash(m, cfg),
        "regime_shift": detect_regime_shift(m, cfg),
        "economic_shock": detect_economic_shock(now, m, cfg),
    }
    ordered = tuple(results[name] for name in DETECTORS)
    coverage = sum(d.available for d in ordered) / len(ordered)
    level = max(d.level for d in ordered)
    if level == 0:
        return StressAssessment(0, "none", cfg.actions[0], round(coverage, 6), ordered)
    primary = next(d for d in ordered if d.level == level)
    others = sum(1 for d in ordered if d.level > 0) - 1
    margin = 0.0
    if primary.threshold > 0 and np.isfinite(primary.value):
        margin = min(1.0, max(0.0, primary.value / primary.threshold - 1.0))
    confidence = min(1.0, 0.5 + 0.25 * min(1, others) + 0.25 * margin) * (0.5 + 0.5 * coverage)
    return StressAssessment(level, primary.name, cfg.actions[level], round(confidence, 6), ordered)
