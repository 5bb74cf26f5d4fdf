"""The simulated feed: market simulator + paper broker's book + strategies that trade a little."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from scipy import stats

from risklib.core import frames
from risklib.core.instruments import FX_MAJORS
from risklib.core.scenarios import ScenarioStep
from risklib.errors import DataError

from ._base import Snapshot, empty_bars
from ._config import BrokerConfig, SimulatorConfig
from ._market import MarketSimulator

#: A pre-trade gate: takes an order, returns an object with ``.approved`` and ``.quantity``.
Gate = Callable[[Any], Any]

DENIALS = {
    "ts": frames.UTC_TS,
    "account_id": pl.String,
    "strategy": pl.String,
    "instrument": pl.String,
    "side": pl.String,
    "quantity": pl.Float64,
    "approved_quantity": pl.Float64,
    "reason": pl.String,
}


def var99_quantile(tail_df: float) -> float:
    """One-bar 99% loss quantile of the simulator's unit-variance Student-t returns."""
    return float(stats.t.ppf(0.99, tail_df) * np.sqrt((tail_df - 2.0) / tail_df))


def generate_book(
    config: SimulatorConfig,
    market: MarketSimulator,
    n_accounts: int,
    rng: np.random.Generator,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Accounts, groups, strategies and positions, calibrated to the calm VaR targets.

    Each account draws an equity (lognormal around ``equity_median_usd``), a
    group, a dollar view (long or short USD), and 2-6 (strategy, instrument)
    positions; each position follows the view with probability ``usd_bias``.
    Position sizes are then scaled so the account's calm VaR99 (normal
    regime, Student-t quantile, calm covariance), scaled to ``var_horizon_bars``,
    equals a target drawn from the group's ``var99_target`` range. All in numpy over accounts, no loop.

    Returns
    -------
    tuple of pl.DataFrame
        (:data:`frames.POSITIONS`, :data:`frames.BALANCES`).
    """
    cfg = config
    inst = market.instruments
    n_i, n_s = len(inst), len(cfg.strategies)
    m = n_i * n_s  # combos: strategy-major, instrument-minor
    ids = np.array([f"ACC-{a:05d}" for a in range(n_accounts)])
    names = list(cfg.groups)
    shares = np.array([cfg.groups[g].share for g in names])
    group_idx = rng.choice(len(names), size=n_accounts, p=shares / shares.sum())
    equity = np.maximum(cfg.equity_min_usd, cfg.equity_median_usd * np.exp(cfg.equity_sigma * rng.standard_normal(n_accounts)))
    lo, hi = cfg.positions_per_account
    k = rng.integers(lo, hi + 1, size=n_accounts)
    rank = np.argsort(np.argsort(rng.random((n_accounts, m)), axis=1), axis=1)
    held = rank < k[:, None]  # (accounts, combos)
    view = np.where(rng.random(n_accounts) < 0.5, 1.0, -1.0)  # +1 long USD
    follow = np.where(rng.random((n_accounts, m)) < cfg.usd_bias, 1.0, -1.0)
    usd_dir = view[:, None] * follow  # +1: the position gains when the dollar strengthens
    inst_of = np.tile(np.arange(n_i), n_s)  # combo -> instrument index
    weight = np.exp(0.5 * rng.standard_normal((n_accounts, m))) * held
    # signed USD notional per unit weight: positive = long the instrument
    price_dir = usd_dir * market.dollar_sign[inst_of][None, :]
    notional = weight * price_dir
    by_inst = np.zeros((n_accounts, n_i))
    np.add.at(by_inst.T, inst_of, notional.T)
    cov = market.calm_covariance()
    sd = np.sqrt(np.einsum("ni,ij,nj->n", by_inst, cov, by_inst))
    targets = np.array([cfg.groups[g].var99_target for g in names])[group_idx]
    target = targets[:, 0] + rng.random(n_accounts) * (targets[:, 1] - targets[:, 0])
    # targets are VaR99 over var_horizon_bars; a bar's is smaller by sqrt(horizon) (i.i.d. bars)
    scale = target * equity / (var99_quantile(cfg.tail_df) * np.sqrt(cfg.var_horizon_bars) * np.where(sd > 0, sd, 1.0))
    notional = notional * scale[:, None]
    if cfg.max_gross_leverage is not None:
        gross = np.abs(notional).sum(axis=1) / equity
        notional = notional * np.minimum(1.0, cfg.max_gross_leverage / np.where(gross > 0, gross, 1.0))[:, None]
    a_idx, c_idx = np.nonzero(held)
    i_idx = inst_of[c_idx]
    s_idx = c_idx // n_i
    mid0 = market.mids[i_idx]
    usd_q = np.array([FX_MAJORS[i].usd_is_quote for i in inst])[i_idx]
    n_usd = notional[a_idx, c_idx]
    qty = np.where(usd_q, n_usd / mid0, n_usd)
    entry = mid0 * np.exp(cfg.entry_spread * rng.standard_normal(len(a_idx)))
    pnl_quote = qty * (mid0 - entry)
    upnl = np.where(usd_q, pnl_quote, pnl_quote / mid0)
    upnl_acc = np.bincount(a_idx, weights=upnl, minlength=n_accounts)
    positions = pl.DataFrame(
        {
            "account_id": ids[a_idx],
            "strategy": np.array(cfg.strategies)[s_idx],
            "instrument": np.array(inst)[i_idx],
            "quantity": qty,
            "entry_price": entry,
        },
        schema=frames.POSITIONS,
    )
    balances = pl.DataFrame(
        {
            "account_id": ids,
            "account_group": np.array(names)[group_idx],
            "cash_usd": equity - upnl_acc,
            "start_of_day_equity_usd": equity,
        },
        schema=frames.BALANCES,
    )
    return positions, balances


@dataclass(frozen=True)
class StrategyActivity:
    """Strategy orders since the last :meth:`SimulatedFeed.take_activity`: the broker's orders/fills and the gate's denials."""

    orders: pl.DataFrame
    fills: pl.DataFrame
    denials: pl.DataFrame


class SimulatedFeed:
    """The embedded default feed: a simulated FX market and a simulated book.

    Prices come from a :class:`MarketSimulator`; positions and balances from
    the :class:`~risklib.adapters.brokers.PaperBroker` that holds the book (the
    same broker the pipeline hands its actions to: ``feed.broker``). Strategies
    propose orders now and then (``trade_probability`` per account per bar);
    every order passes ``gate`` first, and with ``gate=None`` no order is
    placed. Denials are kept (:meth:`take_activity`).

    Parameters
    ----------
    config : SimulatorConfig
    scenario : str or sequence of ScenarioStep
    seed : int
        One seed for market, book, strategies and broker: same seed, same session.
    start : datetime
        Session start (timezone-aware); ``snapshot(now)`` advances the market to ``now``.
    accounts : int, optional
        Number of accounts (default ``config.accounts``).
    gate : callable, optional
        Pre-trade gate: ``gate(order) -> decision`` with ``.approved`` and ``.quantity``.
    broker_config : BrokerConfig, optional
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        scenario: str | Sequence[ScenarioStep] = "calm",
        seed: int = 0,
        start: datetime,
        accounts: int | None = None,
        gate: Gate | None = None,
        broker_config: BrokerConfig | None = None,
        max_orders_per_snapshot: int = 20,
    ) -> None:
        from risklib.adapters.brokers import PaperBroker

        self.config = config or SimulatorConfig()
        self.market = MarketSimulator(self.config, scenario=scenario, seed=seed, start=start)
        self.instruments = self.market.instruments
        n = accounts if accounts is not None else self.config.accounts
        if n < 1:
            raise DataError(f"accounts={n}: must be >= 1")
        ss = np.random.SeedSequence([seed, 1])
        book_ss, strat_ss, broker_ss = ss.spawn(3)
        positions, balances = generate_book(self.config, self.market, n, np.random.Generator(np.random.PCG64(book_ss)))
        self.broker = PaperBroker(
            broker_config, seed=int(broker_ss.generate_state(1)[0]), positions=positions, balances=balances
        )
        self.gate = gate
        self.max_orders_per_snapshot = max_orders_per_snapshot
        self._strat_rng = np.random.Generator(np.random.PCG64(strat_ss))
        self._account_ids = balances["account_id"].to_numpy()
        self._pending_bars: list[pl.DataFrame] = []
        self._last_tick_at: datetime | None = None
        self._last_now: datetime | None = None
        self._advanced: tuple | None = None  # (now, market state, ticks) of the last advance
        self._orders: list[pl.DataFrame] = []
        self._fills: list[pl.DataFrame] = []
        self._denials: list[tuple] = []
        self.broker.update_prices(self.market.quotes(start))

    # -- Feed -------------------------------------------------------------------

    def warmup(self, bars: int) -> pl.DataFrame:
        """``bars`` calm bars ending at the session start, oldest first."""
        return self.market.warmup(bars)

    def advance(self, now: datetime) -> None:
        """Let the simulated world run up to ``now``: prices move and the strategies trade.

        The market and the strategies live outside the risk pipeline; the monitor
        lets them run between cycles (as a real market does while the pipeline
        waits for its next cycle), so a cycle measures the pipeline's own work.
        :meth:`snapshot` calls it when nobody did.
        """
        if self._last_now is not None and now < self._last_now:
            raise DataError(f"now={now.isoformat()}: before the previous snapshot {self._last_now.isoformat()}")
        if self._advanced is not None and self._advanced[0] == now:
            return
        self._last_now = now
        new_bars = self.market.advance_to(now)
        state = self.market.state
        ticks = self.market.quotes(now, state)
        if ticks.height:
            self.broker.update_prices(ticks[["instrument", "bid", "ask", "mid"]])
        if new_bars.height:
            self._trade(now, new_bars.height)
            self._pending_bars.append(new_bars)
        self._advanced = (now, state, ticks)

    def snapshot(self, now: datetime) -> Snapshot:
        """What the feed sees at ``now`` (simulated time), after the world has run up to it.

        While disconnected, ticks and bars are empty and ``connected`` is False;
        the bars generated meanwhile are delivered after reconnection (the
        feed backfills history, the quotes themselves are gone).
        """
        self.advance(now)
        _, state, ticks = self._advanced
        if state.disconnected:
            bars = empty_bars(self.instruments)
        else:
            bars = pl.concat(self._pending_bars) if self._pending_bars else empty_bars(self.instruments)
            self._pending_bars = []
            if ticks.height:
                newest = ticks["ts"].max()
                self._last_tick_at = newest if self._last_tick_at is None else max(self._last_tick_at, newest)
        positions = self.broker.positions()
        balances = self.broker.balances()
        if state.bad_rows:
            ticks, positions, balances = self._inject(now, state.bad_rows, ticks, positions, balances)
        return Snapshot(
            ts=now,
            ticks=ticks,
            bars=bars,
            positions=positions,
            balances=balances,
            connected=not state.disconnected,
            last_tick_at=self._last_tick_at,
            scenario=state.labels,
        )

    # -- strategies -------------------------------------------------------------

    def _trade(self, now: datetime, n_bars: int) -> None:
        """Strategies propose orders; each passes the gate, the approved quantity goes to the broker."""
        if self.gate is None:
            return
        from risklib.adapters.brokers import Order

        cfg = self.config
        rng = self._strat_rng
        n = len(self._account_ids)
        count = rng.binomial(n_bars, cfg.trade_probability, size=n)
        who = np.repeat(np.arange(n), count)
        rng.shuffle(who)
        who = who[: self.max_orders_per_snapshot]
        if who.size == 0:
            return
        chosen = [str(self._account_ids[a]) for a in who]
        book = self.broker.positions().filter(pl.col("account_id").is_in(chosen))
        by_account = {k[0]: v for k, v in book.partition_by("account_id", as_dict=True).items()}
        quotes = {r["instrument"]: r["mid"] for r in self.market.quotes(now).iter_rows(named=True) if r["mid"]}
        placed: list[Order] = []
        for account in chosen:  # bounded by max_orders_per_snapshot
            mine = by_account.get(account)
            if mine is not None and mine.height and rng.random() < 0.5:
                row = mine.row(int(rng.integers(mine.height)), named=True)
                strategy, instrument = row["strategy"], row["instrument"]
                side = "SELL" if row["quantity"] > 0 else "BUY"
                qty = abs(row["quantity"])
            else:
                strategy = str(cfg.strategies[int(rng.integers(len(cfg.strategies)))])
                instrument = str(self.instruments[int(rng.integers(len(self.instruments)))])
                side = "BUY" if rng.random() < 0.5 else "SELL"
                typical = float(mine["quantity"].abs().median()) if mine is not None and mine.height else 10_000.0
                qty = max(1_000.0, round(typical * float(rng.uniform(0.2, 0.6)), 0))
            order = Order(account, strategy, instrument, side, float(qty), price=quotes.get(instrument))
            decision = self.gate(order)
            approved = bool(getattr(decision, "approved", False))
            q = float(getattr(decision, "quantity", 0.0) or 0.0)
            if not approved or q <= 0:
                why = getattr(decision, "reasons", None) or getattr(decision, "reason", None) or "denied"
                if not isinstance(why, str):
                    why = "; ".join(str(getattr(r, "message", r)) for r in why)
                self._denials.append((now, account, strategy, instrument, side, float(qty), q, why))
                continue
            placed.append(Order(account, strategy, instrument, side, min(q, float(qty)), price=order.price))
        if placed:
            report = self.broker.submit_many(placed, now)
            self._orders.append(report.orders)
            self._fills.append(report.fills)

    def take_activity(self) -> StrategyActivity:
        """Strategy orders, fills and gate denials since the last call (for the warehouse)."""
        from risklib.adapters.brokers import BROKER_FILLS, BROKER_ORDERS

        act = StrategyActivity(
            orders=pl.concat(self._orders) if self._orders else frames.empty(BROKER_ORDERS),
            fills=pl.concat(self._fills) if self._fills else frames.empty(BROKER_FILLS),
            denials=pl.DataFrame(self._denials, schema=DENIALS, orient="row") if self._denials else frames.empty(DENIALS),
        )
        self._orders, self._fills, self._denials = [], [], []
        return act

    # -- bad data ---------------------------------------------------------------

    def _inject(
        self,
        now: datetime,
        kinds: tuple[str, ...],
        ticks: pl.DataFrame,
        positions: pl.DataFrame,
        balances: pl.DataFrame,
    ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """Add the ``kinds`` of bad rows. Tick kinds each spoil a different instrument, from the end of the list."""
        tick_kinds = [k for k in ("nan_price", "negative_price", "duplicate_key", "future_timestamp") if k in kinds]
        targets = dict(zip(tick_kinds, reversed(self.instruments)))
        if ticks.height:
            for kind, inst in targets.items():
                sel = pl.col("instrument") == inst
                if kind == "nan_price":
                    ticks = ticks.with_columns(
                        [pl.when(sel).then(float("nan")).otherwise(pl.col(c)).alias(c) for c in ("bid", "ask", "mid")]
                    )
                elif kind == "negative_price":
                    ticks = ticks.with_columns(
                        [pl.when(sel).then(-pl.col(c)).otherwise(pl.col(c)).alias(c) for c in ("bid", "ask", "mid")]
                    )
                elif kind == "duplicate_key":
                    ticks = pl.concat([ticks, ticks.filter(sel).with_columns(pl.col("mid") * 1.01)])
                elif kind == "future_timestamp":
                    ticks = ticks.with_columns(
                        pl.when(sel).then(pl.lit(now + timedelta(hours=1), frames.UTC_TS)).otherwise(pl.col("ts")).alias("ts")
                    )
        if "unknown_instrument" in kinds:
            if ticks.height:
                ticks = pl.concat(
                    [ticks, pl.DataFrame([(now, "XAU/USD", 2000.0, 2000.5, 2000.25)], schema=frames.TICKS, orient="row")]
                )
            first = str(self._account_ids[0])
            positions = pl.concat(
                [positions, pl.DataFrame([(first, "Swing_MA", "XAU/USD", 10.0, 2000.0)], schema=frames.POSITIONS, orient="row")]
            )
        if "duplicate_key" in kinds and positions.height:
            second = str(self._account_ids[min(1, len(self._account_ids) - 1)])
            positions = pl.concat([positions, positions.filter(pl.col("account_id") == second).head(1)])
        if "orphan_position" in kinds:
            positions = pl.concat(
                [positions, pl.DataFrame([("ACC-ORPHAN", "Swing_MA", self.instruments[0], 1000.0, 1.0)], schema=frames.POSITIONS, orient="row")]
            )
        return ticks, positions, balances
