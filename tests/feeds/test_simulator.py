"""Simulated market and book: reproducibility, correlations, calibration, scenarios, strategies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risklib.adapters.feeds import (
    Feed,
    MarketSimulator,
    SimulatedFeed,
    SimulatorConfig,
    Snapshot,
    calm_correlation,
    var99_quantile,
)
from risklib.core import frames
from risklib.core.instruments import FX_MAJORS, notional_usd
from risklib.core.scenarios import SCENARIOS, ScenarioStep
from risklib.errors import ConfigError, DataError


def exposures(feed: SimulatedFeed) -> tuple[np.ndarray, np.ndarray]:
    """(accounts x instruments) USD exposure to each instrument's return, and equity per account."""
    pos = feed.broker.positions()
    bal = feed.broker.balances()
    inst = list(feed.instruments)
    mids = dict(zip(inst, feed.market.mids))
    price = np.array([mids[i] for i in pos["instrument"]])
    usdq = np.array([FX_MAJORS[i].usd_is_quote for i in pos["instrument"]])
    n = notional_usd(pos["quantity"].to_numpy(), price, usdq)
    acc = {a: k for k, a in enumerate(bal["account_id"])}
    rows = np.array([acc[a] for a in pos["account_id"]])
    cols = np.array([inst.index(i) for i in pos["instrument"]])
    e = np.zeros((len(acc), len(inst)))
    np.add.at(e, (rows, cols), n)
    return e, bal["start_of_day_equity_usd"].to_numpy()  # the equity the book was sized on


def position_gross(feed: SimulatedFeed, equity: np.ndarray) -> np.ndarray:
    """Sum of |USD notional| over every position row (strategies not netted), per account / equity."""
    pos = feed.broker.positions()
    mids = dict(zip(feed.instruments, feed.market.mids))
    price = np.array([mids[i] for i in pos["instrument"]])
    usdq = np.array([FX_MAJORS[i].usd_is_quote for i in pos["instrument"]])
    n = np.abs(notional_usd(pos["quantity"].to_numpy(), price, usdq))
    acc = {a: k for k, a in enumerate(feed.broker.balances()["account_id"])}
    rows = np.array([acc[a] for a in pos["account_id"]])
    return np.bincount(rows, weights=n, minlength=len(acc)) / equity


def returns_in_state(steps, bars: int, seed: int = 11) -> np.ndarray:
    """Simple returns of ``bars`` bars drawn with ``steps`` in force the whole time."""
    from datetime import datetime, timezone

    forever = [ScenarioStep(0, 10**9, s.effect, s.params) for s in steps]
    m = MarketSimulator(scenario=forever, seed=seed, start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    prev = m.mids.copy()
    out = np.empty((bars, len(m.instruments)))
    for k in range(bars):
        _, mids = m.step()
        out[k] = mids / prev - 1
        prev = mids
    return out


def historical_var99(returns: np.ndarray, e: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """VaR99 over the simulator's VaR horizon (sqrt-of-time from one bar), fraction of equity."""
    pnl = returns @ e.T / equity  # bars x accounts, fraction of equity
    return np.quantile(-pnl, 0.99, axis=0) * np.sqrt(SimulatorConfig().var_horizon_bars)


# --- the Feed contract ------------------------------------------------------------


def test_simulated_feed_is_a_feed_and_its_frames_match_the_contract(make_feed, start):
    # Arrange
    feed = make_feed()
    # Act
    snap = feed.snapshot(start + timedelta(minutes=3, seconds=20))
    # Assert
    assert isinstance(feed, Feed)
    assert isinstance(snap, Snapshot)
    assert snap.ticks.schema == pl.Schema(frames.TICKS)
    assert snap.positions.schema == pl.Schema(frames.POSITIONS)
    assert snap.balances.schema == pl.Schema(frames.BALANCES)
    assert snap.bars.columns == ["ts", *feed.instruments]
    assert snap.bars.height == 3
    assert snap.connected and snap.last_tick_at is not None
    assert snap.silence_s is not None and 0 <= snap.silence_s <= 0.5


def test_at_least_the_five_majors_are_simulated(make_feed):
    # Arrange / Act
    feed = make_feed()
    # Assert
    assert {"EUR/USD", "GBP/USD", "USD/JPY", "AUD/USD", "USD/CHF"} <= set(feed.instruments)


def test_same_seed_same_session_different_seed_different_session(make_feed, start):
    # Arrange
    a, b, c = make_feed(seed=5), make_feed(seed=5), make_feed(seed=6)
    t = start + timedelta(minutes=30)
    # Act
    sa, sb, sc = a.snapshot(t), b.snapshot(t), c.snapshot(t)
    # Assert
    assert sa.bars.equals(sb.bars) and sa.ticks.equals(sb.ticks) and sa.positions.equals(sb.positions)
    assert not sa.bars.equals(sc.bars)
    assert not sa.positions.equals(sc.positions)


def test_bars_are_delivered_once_in_order(make_feed, start):
    # Arrange
    feed = make_feed()
    # Act
    first = feed.snapshot(start + timedelta(seconds=150))
    same = feed.snapshot(start + timedelta(seconds=170))
    later = feed.snapshot(start + timedelta(minutes=5))
    # Assert
    assert first.bars["ts"].to_list() == [start + timedelta(minutes=1), start + timedelta(minutes=2)]
    assert same.bars.height == 0
    assert later.bars["ts"].to_list() == [start + timedelta(minutes=k) for k in (3, 4, 5)]


def test_time_going_backwards_is_refused(make_feed, start):
    # Arrange
    feed = make_feed()
    feed.snapshot(start + timedelta(minutes=2))
    # Act / Assert
    with pytest.raises(DataError, match=r"now=2026-03-02T09:01:00\+00:00: before the previous snapshot"):
        feed.snapshot(start + timedelta(minutes=1))


def test_warmup_ends_at_the_start_prices_and_does_not_change_the_session(make_feed, start):
    # Arrange
    plain, warmed = make_feed(seed=3), make_feed(seed=3)
    # Act
    hist = warmed.warmup(120)
    again = warmed.warmup(120)
    s1 = plain.snapshot(start + timedelta(minutes=10))
    s2 = warmed.snapshot(start + timedelta(minutes=10))
    # Assert
    assert hist.height == 120
    assert hist["ts"][-1] == start and hist["ts"].is_sorted()
    assert hist.row(-1)[1:] == pytest.approx(tuple(SimulatorConfig().start_price[i] for i in warmed.instruments))
    assert hist.equals(again)
    assert s1.bars.equals(s2.bars)


def test_ticks_have_positive_spreads_and_recent_timestamps(make_feed, start):
    # Arrange
    feed = make_feed()
    now = start + timedelta(minutes=2)
    # Act
    ticks = feed.snapshot(now).ticks
    # Assert
    assert ticks.height == len(feed.instruments)
    assert (ticks["ask"] > ticks["bid"]).all()
    assert ((ticks["bid"] + ticks["ask"]) / 2 - ticks["mid"]).abs().max() < 1e-12
    assert ticks["ts"].max() <= now and ticks["ts"].min() >= now - timedelta(seconds=0.5)


def test_calm_correlations_are_realistic():
    # Arrange
    inst = list(FX_MAJORS)
    c = calm_correlation(inst)
    ix = {i: k for k, i in enumerate(inst)}
    # Act
    r = returns_in_state((), 4000)
    realized = np.corrcoef(r.T)
    # Assert
    assert np.all(np.linalg.eigvalsh(c) > 0)
    assert c[ix["EUR/USD"], ix["GBP/USD"]] > 0.5
    assert c[ix["EUR/USD"], ix["USD/CHF"]] < -0.6
    assert c[ix["AUD/USD"], ix["NZD/USD"]] > 0.7
    assert np.abs(realized - c).max() < 0.1


def test_relative_vols_follow_the_config():
    # Arrange
    r = returns_in_state((), 4000)
    inst = list(FX_MAJORS)
    # Act
    vol = r.std(axis=0)
    # Assert: JPY and AUD swing more than EUR, CAD least
    assert vol[inst.index("AUD/USD")] > vol[inst.index("EUR/USD")]
    assert vol[inst.index("USD/JPY")] > vol[inst.index("EUR/USD")]
    assert vol[inst.index("USD/CAD")] == pytest.approx(vol.min())


# --- calibration against the spec's VaR zones ----------------------------------------


@pytest.fixture(scope="module")
def book_exposure():
    from datetime import datetime, timezone

    feed = SimulatedFeed(seed=21, accounts=200, start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    return exposures(feed)


def test_calm_var99_stays_in_the_green_zone(book_exposure):
    # Arrange
    e, equity = book_exposure
    r = returns_in_state((), 3000)
    # Act
    var = historical_var99(r, e, equity)
    # Assert: green zone is VaR < 0.1 % of equity
    assert var.max() < 0.001


def test_vol_spike_x3_pushes_var_into_orange_and_x5_past_the_breach(book_exposure):
    # Arrange
    e, equity = book_exposure
    x3, x5 = SCENARIOS["vol-spike"]
    # Act
    v3 = historical_var99(returns_in_state((x3,), 3000), e, equity)
    v5 = historical_var99(returns_in_state((x5,), 3000), e, equity)
    # Assert: orange starts at 0.2 %, the VaR breach trigger at 0.5 %
    assert np.median(v3) > 0.002
    assert np.mean(v3 > 0.002) > 0.75
    assert np.median(v5) > 0.005
    assert np.mean(v5 > 0.005) > 0.6


def test_flash_crash_breaches_var_for_most_accounts(make_feed, start):
    # Arrange
    feed = make_feed("flash-crash", accounts=100, seed=4)
    e, equity = exposures(feed)
    hist = feed.warmup(60)
    # Act
    session = feed.snapshot(start + timedelta(minutes=20)).bars
    mids = pl.concat([hist, session]).select(feed.instruments).to_numpy()
    r = mids[1:] / mids[:-1] - 1
    pnl = np.cumsum((r @ e.T) / equity, axis=0)  # bars x accounts, fraction of equity
    loss = (np.maximum.accumulate(pnl, axis=0) - pnl).max(axis=0)
    # Assert: the crash's peak-to-trough loss exceeds the 0.5 % VaR breach level for most accounts
    assert np.mean(loss > 0.005) > 0.6


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), accounts=st.integers(1, 40))
def test_every_account_is_sized_to_its_groups_calm_var_target(seed, accounts):
    # Arrange
    from datetime import datetime, timezone

    feed = SimulatedFeed(seed=seed, accounts=accounts, start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    e, equity = exposures(feed)
    cov = feed.market.calm_covariance()
    groups = feed.broker.balances()["account_group"].to_list()
    cfg = feed.config
    # Act
    one_bar = var99_quantile(cfg.tail_df) * np.sqrt(np.einsum("ni,ij,nj->n", e, cov, e)) / equity
    var = one_bar * np.sqrt(cfg.var_horizon_bars)
    gross = position_gross(feed, equity)
    # Assert: on target, or below it where the gross-exposure cap binds (never above)
    lo = np.array([cfg.groups[g].var99_target[0] for g in groups])
    hi = np.array([cfg.groups[g].var99_target[1] for g in groups])
    capped = np.isclose(gross, cfg.max_gross_leverage, rtol=1e-6)
    assert np.all(var <= hi * (1 + 1e-9))
    assert np.all((var >= lo * (1 - 1e-9)) | capped)
    assert np.all(gross <= cfg.max_gross_leverage * (1 + 1e-9))


# --- scenarios ---------------------------------------------------------------------------


def test_flash_crash_moves_the_dollar_and_rebounds(make_feed, start):
    # Arrange
    feed = make_feed("flash-crash")
    # Act
    bars = feed.snapshot(start + timedelta(minutes=20)).bars
    eur = bars["EUR/USD"].to_numpy()
    jpy = bars["USD/JPY"].to_numpy()
    # Assert: bars 10..15 is the fall (dollar up 3 %), then it gives 70 % back
    assert eur[12] / eur[9] - 1 < -0.02
    assert jpy[12] / jpy[9] - 1 > 0.02
    assert eur[-1] > eur[12]


def test_correlation_breakdown_moves_every_pair_together(make_feed, start):
    # Arrange
    step = SCENARIOS["correlation-breakdown"][0]
    # Act
    r = returns_in_state((step,), 2000)
    c = np.corrcoef(r.T)
    off = c[~np.eye(len(c), dtype=bool)]
    # Assert: the spec's correlation breakdown trigger is 0.8
    assert off.mean() > 0.8


def test_liquidity_gap_widens_spreads_and_drops_or_halves_quotes(make_feed, start):
    # Arrange
    calm = make_feed(seed=1)
    gap = make_feed("liquidity-gap", seed=1)
    # Act
    seen = [gap.snapshot(start + timedelta(minutes=10, seconds=s)).ticks for s in range(0, 290, 10)]
    calm_ticks = calm.snapshot(start + timedelta(minutes=11)).ticks
    quotes = pl.concat(seen)
    wide = quotes.group_by("instrument").agg((pl.col("ask") - pl.col("bid")).min().alias("gap"))
    normal = calm_ticks.select("instrument", (pl.col("ask") - pl.col("bid")).alias("calm"))
    ratio = wide.join(normal, on="instrument").select(pl.col("gap") / pl.col("calm")).to_series().drop_nulls()
    # Assert
    assert quotes["mid"].null_count() > 0  # one-sided quotes
    assert sum(t.height < len(gap.instruments) for t in seen) > 0  # missing quotes
    assert ratio.to_numpy() == pytest.approx(np.full(ratio.len(), 15.0))


def test_feed_disconnect_goes_silent_for_more_than_two_minutes_then_backfills(make_feed, start):
    # Arrange
    feed = make_feed("feed-disconnect")
    feed.snapshot(start + timedelta(minutes=9, seconds=59))
    # Act
    during = feed.snapshot(start + timedelta(minutes=12, seconds=59))
    after = feed.snapshot(start + timedelta(minutes=13, seconds=30))
    # Assert
    assert not during.connected
    assert during.ticks.height == 0 and during.bars.height == 0
    assert during.silence_s > 120
    assert during.positions.height > 0  # the book is still known
    assert after.connected and after.silence_s < 1
    assert after.bars["ts"].to_list() == [start + timedelta(minutes=k) for k in (10, 11, 12, 13)]


def test_bad_rows_scenario_emits_every_kind(start):
    # Arrange
    feed = SimulatedFeed(scenario="bad-data", seed=2, start=start, accounts=5)
    # Act
    snap = feed.snapshot(start + timedelta(minutes=1))
    t = snap.ticks
    # Assert
    assert t["mid"].is_nan().sum() == 1
    assert (t["mid"] < 0).sum() == 1
    assert "XAU/USD" in t["instrument"].to_list()
    assert t["instrument"].is_duplicated().sum() == 2
    assert (t["ts"] > start + timedelta(minutes=30)).sum() == 1
    assert "ACC-ORPHAN" in snap.positions["account_id"].to_list()
    assert "XAU/USD" in snap.positions["instrument"].to_list()
    assert snap.positions.select("account_id", "strategy", "instrument").is_duplicated().sum() == 2


def test_scripted_steps_are_accepted_as_a_scenario(make_feed, start):
    # Arrange
    steps = [ScenarioStep(60, 120, "disconnect")]
    feed = make_feed(steps)
    # Act
    snap = feed.snapshot(start + timedelta(minutes=2))
    # Assert
    assert not snap.connected and snap.scenario == ("disconnect",)


def test_bad_config_is_refused_naming_the_key():
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match=r"instruments=\['XAU/USD'\]: not in FX_MAJORS"):
        SimulatorConfig(instruments=("EUR/USD", "XAU/USD"))
    with pytest.raises(ValueError, match=r"groups: shares sum to 0.5, must sum to 1"):
        SimulatorConfig(groups={"a": {"share": 0.5, "var99_target": (0.0005, 0.0006)}})


def test_pipeline_config_file_loads_and_rejects_unknown_keys(tmp_path):
    # Arrange
    from risklib.adapters.feeds import load_pipeline_config

    bad = tmp_path / "p.toml"
    bad.write_text("[pipeline]\nstaleness_s = 10\n[pipeline.broker]\nslipage_bps = 1\n")
    # Act
    cfg = load_pipeline_config()
    # Assert
    assert cfg.staleness_s == 10.0 and cfg.simulator.bar_s == 60.0
    with pytest.raises(ConfigError, match=r"pipeline\.broker\.slipage_bps=1: Extra inputs are not permitted"):
        load_pipeline_config(bad)


# --- strategies and the gate --------------------------------------------------------------


@dataclass
class Decision:
    approved: bool
    quantity: float
    reasons: tuple[str, ...] = ()


def test_without_a_gate_strategies_place_no_orders(make_feed, start):
    # Arrange
    feed = make_feed(trade_probability=1.0)
    before = feed.broker.positions()
    # Act
    feed.snapshot(start + timedelta(minutes=5))
    activity = feed.take_activity()
    # Assert
    assert feed.broker.positions().equals(before)
    assert activity.orders.height == 0 and activity.denials.height == 0


def test_every_strategy_order_passes_the_gate_and_denials_are_recorded(make_feed, start):
    # Arrange
    seen = []

    def deny_all(order):
        seen.append(order)
        return Decision(False, 0.0, ("MAX_LEVERAGE: leverage=9.0 > max_leverage=5.0",))

    feed = make_feed(trade_probability=1.0, gate=deny_all)
    before = feed.broker.positions()
    # Act
    feed.snapshot(start + timedelta(minutes=2))
    activity = feed.take_activity()
    # Assert
    assert len(seen) > 0
    assert {o.account_id for o in seen} <= set(feed.broker.balances()["account_id"])
    assert feed.broker.positions().equals(before)
    assert activity.denials.height == len(seen)
    assert activity.denials["reason"][0] == "MAX_LEVERAGE: leverage=9.0 > max_leverage=5.0"
    assert feed.take_activity().denials.height == 0  # taken once


def test_approved_quantity_is_what_reaches_the_broker(make_feed, start):
    # Arrange: the gate approves a tenth of each order
    feed = make_feed(trade_probability=1.0, gate=lambda o: Decision(True, o.quantity / 10))
    # Act
    feed.snapshot(start + timedelta(minutes=1))
    activity = feed.take_activity()
    # Assert
    assert activity.orders.height > 0
    assert activity.fills.height > 0
    assert set(activity.orders["status"]) <= {"FILLED", "PARTIALLY_FILLED", "REJECTED"}
    assert activity.orders["quantity"].min() >= 100.0  # a tenth of the smallest 1,000-unit order


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 1800), min_size=1, max_size=8), scenario=st.sampled_from(["calm", "vol-spike", "flash-crash"]))
def test_prices_do_not_depend_on_when_the_feed_is_asked(cuts, scenario):
    # Arrange
    from datetime import datetime, timezone

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    end = start + timedelta(seconds=1800)
    once = SimulatedFeed(scenario=scenario, seed=13, start=start, accounts=3)
    often = SimulatedFeed(scenario=scenario, seed=13, start=start, accounts=3)
    # Act
    whole = once.snapshot(end).bars
    pieces = [often.snapshot(start + timedelta(seconds=c)).bars for c in sorted(cuts)]
    pieces.append(often.snapshot(end).bars)
    # Assert
    assert pl.concat(pieces).equals(whole)


def test_gross_leverage_cap_bounds_every_account(start):
    # Arrange
    feed = SimulatedFeed(SimulatorConfig(max_gross_leverage=0.2), seed=2, start=start, accounts=50)
    uncapped = SimulatedFeed(SimulatorConfig(max_gross_leverage=None), seed=2, start=start, accounts=50)
    _, equity = exposures(feed)
    # Act
    gross = position_gross(feed, equity)
    # Assert
    assert gross.max() <= 0.2 * (1 + 1e-9)
    assert position_gross(uncapped, equity).max() > 0.2  # the cap did bind
