"""Correlated FX mids bar by bar: calm regimes, scripted stress, quotes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.instruments import FX_MAJORS
from risklib.core.scenarios import MarketState, ScenarioStep, market_state_at
from risklib.core.scenarios import scenario as resolve_scenario
from risklib.errors import DataError

from ._base import bars_schema
from ._config import SimulatorConfig

# Currency strength against USD loads on a common dollar factor and a regional
# factor (Europe, commodity/antipodean). Loadings give realistic calm
# correlations of the majors: EUR/USD~GBP/USD 0.65, EUR/USD~USD/CHF -0.74,
# EUR/USD~AUD/USD 0.48, EUR/USD~USD/JPY -0.44, AUD/USD~NZD/USD 0.79.
_DOLLAR = {"EUR": 0.80, "GBP": 0.70, "CHF": 0.70, "JPY": 0.55, "AUD": 0.60, "NZD": 0.55, "CAD": 0.50}
_REGION = {"EUR": (0.35, 0.0), "GBP": (0.25, 0.0), "CHF": (0.50, 0.0), "JPY": (0.0, 0.0),
           "AUD": (0.0, 0.65), "NZD": (0.0, 0.70), "CAD": (0.0, 0.25)}  # (europe, antipodean)


def _currency(instrument: str) -> tuple[str, float]:
    """The non-USD currency of ``instrument`` and the sign of its price in that currency's strength."""
    ins = FX_MAJORS[instrument]
    return (ins.base, 1.0) if ins.usd_is_quote else (ins.quote, -1.0)


def calm_correlation(instruments: Sequence[str]) -> np.ndarray:
    """Calm correlation matrix of instrument log returns (factor model; positive definite)."""
    ccy = [_currency(i) for i in instruments]
    load = np.array([[_DOLLAR[c], *_REGION[c]] for c, _ in ccy])
    sign = np.array([s for _, s in ccy])
    c = load @ load.T
    np.fill_diagonal(c, 1.0)
    return c * np.outer(sign, sign)


def stress_correlation(instruments: Sequence[str], dollar_corr: float) -> np.ndarray:
    """Stress: every currency moves with the dollar (pairwise currency correlation ``dollar_corr``)."""
    sign = np.array([_currency(i)[1] for i in instruments])
    c = np.full((len(sign), len(sign)), dollar_corr)
    np.fill_diagonal(c, 1.0)
    return c * np.outer(sign, sign)


def breakdown_correlation(n: int, target: float) -> np.ndarray:
    """Correlation breakdown: every instrument's price moves together, pairwise ``target``."""
    c = np.full((n, n), target)
    np.fill_diagonal(c, 1.0)
    return c


class MarketSimulator:
    """Correlated FX mid prices with calm regime switches and scripted scenarios.

    Bars are ``config.bar_s`` simulated seconds long; bar ``k`` closes at
    ``start + k * bar_s``. Log returns are multivariate Student-t (``tail_df``)
    with the calm vols of ``config.annual_vol`` scaled to one bar, times the
    calm regime's multiplier, times the scenario's volatility multiplier; the
    correlation blends calm, stress and breakdown matrices by the scenario's
    weights. A flash crash is a deterministic dollar move on top.

    Parameters
    ----------
    config : SimulatorConfig
    scenario : str or sequence of ScenarioStep
        A name from :data:`risklib.core.scenarios.SCENARIOS` or a scripted step list.
    seed : int
        Seeds a ``numpy.random.Generator``; the same seed gives the same session.
    start : datetime
        Session start (timezone-aware).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        scenario: str | Sequence[ScenarioStep] = "calm",
        seed: int = 0,
        start: datetime,
    ) -> None:
        if start.tzinfo is None:
            raise DataError(f"start={start!r}: must be timezone-aware")
        self.config = config or SimulatorConfig()
        self.steps = resolve_scenario(scenario)
        self.start = start
        self.instruments: tuple[str, ...] = tuple(self.config.instruments)
        self.bar = timedelta(seconds=self.config.bar_s)
        cfg = self.config
        ss = np.random.SeedSequence(seed)
        market_ss, warm_ss, quote_ss = ss.spawn(3)
        self._rng = np.random.Generator(np.random.PCG64(market_ss))
        self._warm_seed = warm_ss
        self.quote_rng = np.random.Generator(np.random.PCG64(quote_ss))
        ccy = [_currency(i) for i in self.instruments]
        self.dollar_sign = np.array([-s for _, s in ccy])  # price move when the dollar strengthens
        annual = np.array([cfg.annual_vol[c] for c, _ in ccy])
        self.bar_vol = annual * np.sqrt(cfg.bar_s / 60.0 / cfg.trading_minutes_per_year)
        self.pip = np.array([FX_MAJORS[i].pip for i in self.instruments])
        self.spread = np.array([cfg.spread_pips[i] for i in self.instruments]) * self.pip
        self.c_calm = calm_correlation(self.instruments)
        self.c_stress = stress_correlation(self.instruments, cfg.stress_dollar_corr)
        self._chol_cache: dict[tuple[float, float, float], np.ndarray] = {}
        self.log_mid0 = np.log(np.array([cfg.start_price[i] for i in self.instruments]))
        self._log_base = self.log_mid0.copy()  # log mids without the scripted dollar move
        self.mids = np.exp(self._log_base)
        self.bars_done = 0
        self.regime = 1 if len(cfg.regime_multipliers) > 1 else 0
        self.state: MarketState = market_state_at(self.steps, 0.0)
        self._warmup: pl.DataFrame | None = None

    # -- prices -----------------------------------------------------------------

    def calm_covariance(self) -> np.ndarray:
        """Calm one-bar covariance of instrument log returns (normal regime)."""
        return self.c_calm * np.outer(self.bar_vol, self.bar_vol)

    def _cholesky(self, state: MarketState) -> np.ndarray:
        key = (round(state.stress_corr, 4), round(state.breakdown_corr, 4), round(state.breakdown_target, 4))
        chol = self._chol_cache.get(key)
        if chol is None:
            ws, wb = key[0], key[1]
            total = ws + wb
            if total > 1.0:
                ws, wb = ws / total, wb / total
            c = (1.0 - ws - wb) * self.c_calm + ws * self.c_stress
            if wb:
                c = c + wb * breakdown_correlation(len(self.instruments), key[2])
            chol = np.linalg.cholesky(c + 1e-12 * np.eye(len(c)))
            self._chol_cache[key] = chol
        return chol

    def _draw(self, rng: np.random.Generator, n: int, chol: np.ndarray) -> np.ndarray:
        """``n`` standardized correlated Student-t draws, shape (n, instruments)."""
        df = self.config.tail_df
        z = rng.standard_normal((n, len(self.instruments))) @ chol.T
        w = np.sqrt(rng.chisquare(df, size=(n, 1)) / (df - 2.0))
        return z / w

    def offset_s(self, bar_index: int) -> float:
        """Seconds from session start to the open of bar ``bar_index`` (1-based)."""
        return (bar_index - 1) * self.config.bar_s

    def step(self) -> tuple[datetime, np.ndarray]:
        """Generate the next bar; return its close time and mids."""
        cfg = self.config
        k = self.bars_done + 1
        state = market_state_at(self.steps, self.offset_s(k))
        mults = cfg.regime_multipliers
        if len(mults) > 1 and self._rng.random() < 1.0 / cfg.regime_mean_bars:
            self.regime = int(self._rng.choice([r for r in range(len(mults)) if r != self.regime]))
        sigma = self.bar_vol * mults[self.regime] * state.vol_multiplier
        ret = self._draw(self._rng, 1, self._cholesky(state))[0] * sigma
        if state.jump_p > 0 and self._rng.random() < state.jump_p:
            ret = ret + (1.0 if self._rng.random() < 0.5 else -1.0) * state.jump_size * sigma * self.dollar_sign
        self._log_base = self._log_base + ret
        end_state = market_state_at(self.steps, k * cfg.bar_s)
        self.mids = np.exp(self._log_base + self.dollar_sign * end_state.dollar_shift)
        self.bars_done = k
        self.state = state
        return self.start + k * self.bar, self.mids.copy()

    def advance_to(self, now: datetime) -> pl.DataFrame:
        """Generate every bar that closes at or before ``now``; return them (``ts`` + mids)."""
        if now.tzinfo is None:
            raise DataError(f"now={now!r}: must be timezone-aware")
        n = int((now - self.start) / self.bar) - self.bars_done
        rows_ts: list[datetime] = []
        rows: list[np.ndarray] = []
        for _ in range(max(0, n)):  # one bar per loop; bars are few per cycle
            ts, mids = self.step()
            rows_ts.append(ts)
            rows.append(mids)
        self.state = market_state_at(self.steps, (now - self.start).total_seconds())
        return self._bars_frame(rows_ts, np.array(rows).reshape(len(rows), len(self.instruments)))

    def _bars_frame(self, ts: list[datetime], mids: np.ndarray) -> pl.DataFrame:
        data = {"ts": pl.Series("ts", ts, dtype=frames.UTC_TS)}
        for j, i in enumerate(self.instruments):
            data[i] = pl.Series(i, mids[:, j], dtype=pl.Float64)
        return pl.DataFrame(data, schema=bars_schema(self.instruments))

    def warmup(self, bars: int) -> pl.DataFrame:
        """``bars`` calm bars ending at the session start (last row: ts = start, mids = start prices).

        Drawn from their own seeded stream, so asking for history does not
        change the session that follows. The same ``bars`` gives the same frame.
        """
        if bars < 1:
            raise DataError(f"bars={bars}: must be >= 1")
        rng = np.random.Generator(np.random.PCG64(self._warm_seed))
        calm = MarketState()
        ret = self._draw(rng, bars - 1, self._cholesky(calm)) * self.bar_vol
        # walk backwards from the start prices so the history joins the session
        log = np.vstack([np.zeros((1, len(self.instruments))), -np.cumsum(ret[::-1], axis=0)])[::-1]
        mids = np.exp(self.log_mid0 + log)
        ts = [self.start - (bars - 1 - r) * self.bar for r in range(bars)]
        return self._bars_frame(ts, mids)

    # -- quotes -----------------------------------------------------------------

    def quotes(self, now: datetime, state: MarketState | None = None) -> pl.DataFrame:
        """Latest quote per instrument at ``now`` (:data:`frames.TICKS`).

        Spreads widen by the state's multiplier; under a liquidity gap some
        quotes are one-sided (missing side and mid null) or missing entirely.
        Empty while disconnected.
        """
        st = state or self.state
        if st.disconnected:
            return frames.empty(frames.TICKS)
        rng = self.quote_rng
        n = len(self.instruments)
        lag = rng.uniform(0.0, self.config.max_latency_s, n)
        half = self.spread * st.spread_multiplier / 2.0
        bid = self.mids - half
        ask = self.mids + half
        mid = self.mids.copy()
        u = rng.random(n)
        side = rng.random(n) < 0.5
        missing = u < st.missing_p
        one_sided = (~missing) & (u < st.missing_p + st.one_sided_p)
        bid = np.where(one_sided & side, np.nan, bid)
        ask = np.where(one_sided & ~side, np.nan, ask)
        mid = np.where(one_sided, np.nan, mid)
        keep = ~missing
        ts = [now - timedelta(seconds=float(s)) for s in lag[keep]]
        out = pl.DataFrame(
            {
                "ts": pl.Series(ts, dtype=frames.UTC_TS),
                "instrument": [i for i, k in zip(self.instruments, keep) if k],
                "bid": bid[keep],
                "ask": ask[keep],
                "mid": mid[keep],
            },
            schema=frames.TICKS,
        )
        return out.with_columns(pl.col("bid", "ask", "mid").fill_nan(None))

