"""Paper broker: risk actions, idempotency, halts, partial fills, rejects and the book."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from risklib.adapters.brokers import BROKER_FILLS, BROKER_ORDERS, Broker, Order, PaperBroker
from risklib.adapters.feeds import BrokerConfig
from risklib.core import frames
from risklib.errors import BrokerError


def test_paper_broker_satisfies_the_broker_protocol(broker):
    # Arrange / Act / Assert
    assert isinstance(broker, Broker)


def test_reduce_cuts_every_position_of_the_account_by_the_fraction(broker, quotes, now, make_actions, held):
    # Arrange
    acts = make_actions(("k1", "A1", "REDUCE", 0.2))
    # Act
    report = broker.execute(acts, quotes, now)
    # Assert
    assert held(broker, "A1", "EUR/USD") == pytest.approx(80_000.0)
    assert held(broker, "A1", "USD/JPY") == pytest.approx(-40_000.0)
    assert held(broker, "A2", "GBP/USD") == pytest.approx(20_000.0)  # other account untouched
    assert report.orders.schema == pl.Schema(BROKER_ORDERS)
    assert report.fills.schema == pl.Schema(BROKER_FILLS)
    assert sorted(report.orders["side"].to_list()) == ["BUY", "SELL"]
    assert set(report.orders["status"]) == {"FILLED"}
    assert set(report.orders["idempotency_key"]) == {"k1"}
    assert report.executed_keys == ("k1",)


def test_close_all_flattens_the_account_and_realizes_pnl_into_cash(broker, quotes, now, make_actions):
    # Arrange: EUR/USD long 100k from 1.08, sold at the bid 1.0899; USD/JPY short 50k from 150 bought at the ask 150.01
    acts = make_actions(("k1", "A1", "CLOSE_ALL", 0.0))
    expected = 100_000 * (1.0899 - 1.08) + (-50_000) * (150.01 - 150.00) / 150.01
    # Act
    broker.execute(acts, quotes, now)
    # Assert
    assert broker.positions().filter(pl.col("account_id") == "A1").height == 0
    cash = broker.balances().filter(pl.col("account_id") == "A1")["cash_usd"].item()
    assert cash == pytest.approx(100_000.0 + expected)
    realized = broker.realized_pnl().filter(pl.col("account_id") == "A1")["realized_pnl_usd"].item()
    assert realized == pytest.approx(expected)


def test_close_fraction_then_reduce_compound_in_order(broker, quotes, now, make_actions, held):
    # Arrange: two actions for one account in one batch apply one after the other
    acts = make_actions(("k1", "A1", "CLOSE", 0.5), ("k2", "A1", "REDUCE", 0.5))
    # Act
    broker.execute(acts, quotes, now)
    # Assert
    assert held(broker, "A1", "EUR/USD") == pytest.approx(25_000.0)


def test_replaying_the_same_keys_never_acts_twice(broker, quotes, now, make_actions, held):
    # Arrange
    acts = make_actions(("k1", "A1", "REDUCE", 0.5))
    broker.execute(acts, quotes, now)
    # Act
    again = broker.execute(acts, quotes, now)
    # Assert
    assert held(broker, "A1", "EUR/USD") == pytest.approx(50_000.0)
    assert again.orders.height == 0
    assert again.skipped["idempotency_key"].to_list() == ["k1"]
    assert again.skipped["reason"][0].startswith("DUPLICATE")


def test_duplicate_keys_inside_one_batch_act_once(broker, quotes, now, make_actions, held):
    # Arrange
    acts = make_actions(("k1", "A1", "REDUCE", 0.5), ("k1", "A1", "REDUCE", 0.5))
    # Act
    report = broker.execute(acts, quotes, now)
    # Assert
    assert held(broker, "A1", "EUR/USD") == pytest.approx(50_000.0)
    assert report.skipped.height == 1


def test_keys_reloaded_after_a_restart_are_skipped(exact_config, quotes, now, make_actions, make_book, held):
    # Arrange: a first broker acted; a new one starts from the same book with the keys reloaded
    positions, balances = make_book()
    first = PaperBroker(exact_config, positions=positions, balances=balances)
    keys = first.execute(make_actions(("k1", "A1", "CLOSE_ALL", 0.0)), quotes, now).executed_keys
    restarted = PaperBroker(exact_config, positions=positions, balances=balances)
    restarted.seen_keys(keys)
    also = PaperBroker(exact_config, positions=positions, balances=balances, seen_keys=keys)
    # Act
    r1 = restarted.execute(make_actions(("k1", "A1", "CLOSE_ALL", 0.0)), quotes, now)
    r2 = also.execute(make_actions(("k1", "A1", "CLOSE_ALL", 0.0)), quotes, now)
    # Assert
    assert r1.orders.height == r2.orders.height == 0
    assert held(restarted, "A1", "EUR/USD") == pytest.approx(100_000.0)
    assert held(also, "A1", "EUR/USD") == pytest.approx(100_000.0)


def test_halt_entries_blocks_orders_that_grow_but_lets_exits_through(broker, quotes, now, make_actions, held):
    # Arrange
    report = broker.execute(make_actions(("h1", "A1", "HALT_ENTRIES", 0.0)), quotes, now)
    grow = Order("A1", "Swing_MA", "EUR/USD", "BUY", 10_000.0)
    shrink = Order("A1", "Swing_MA", "EUR/USD", "SELL", 10_000.0)
    # Act
    denied = broker.submit(grow, now)
    allowed = broker.submit(shrink, now)
    # Assert
    assert report.mode_changes.select("account_id", "mode_before", "mode_after").row(0) == ("A1", "ACTIVE", "HALT_ENTRIES")
    assert denied.orders["status"].to_list() == ["REJECTED"]
    assert denied.orders["reason"][0].startswith("HALTED_ENTRIES: account_id=A1")
    assert allowed.orders["status"].to_list() == ["FILLED"]
    assert held(broker, "A1", "EUR/USD") == pytest.approx(90_000.0)


def test_halt_all_blocks_every_strategy_order_until_resume(broker, quotes, now, make_actions, held):
    # Arrange
    broker.execute(make_actions(("h1", "A1", "HALT_ALL", 0.0)), quotes, now)
    exit_order = Order("A1", "Swing_MA", "EUR/USD", "SELL", 10_000.0)
    # Act
    blocked = broker.submit(exit_order, now)
    broker.execute(make_actions(("r1", "A1", "RESUME", 0.0)), quotes, now)
    resumed = broker.submit(Order("A1", "Swing_MA", "EUR/USD", "SELL", 10_000.0), now)
    # Assert
    assert blocked.orders["reason"][0] == "HALTED: account_id=A1 mode=HALT_ALL"
    assert resumed.orders["status"].to_list() == ["FILLED"]
    assert broker.mode("A1") == "ACTIVE"
    assert held(broker, "A1", "EUR/USD") == pytest.approx(90_000.0)


def test_risk_actions_go_through_a_halt(broker, quotes, now, make_actions, held):
    # Arrange
    broker.execute(make_actions(("h1", "A1", "HALT_ALL", 0.0)), quotes, now)
    # Act
    broker.execute(make_actions(("c1", "A1", "CLOSE", 0.5)), quotes, now)
    # Assert
    assert held(broker, "A1", "EUR/USD") == pytest.approx(50_000.0)


def test_fill_prices_are_the_touch_moved_by_slippage(quotes, now, make_actions, make_book):
    # Arrange
    positions, balances = make_book()
    b = PaperBroker(BrokerConfig(slippage_bps=2.0, partial_fill_p=0.0), positions=positions, balances=balances)
    # Act
    fills = b.execute(make_actions(("k1", "A1", "CLOSE_ALL", 0.0)), quotes, now).fills
    # Assert
    sell = fills.filter(pl.col("instrument") == "EUR/USD")
    buy = fills.filter(pl.col("instrument") == "USD/JPY")
    assert sell["price"].item() == pytest.approx(1.0899 * (1 - 2e-4))
    assert sell["quantity"].item() == pytest.approx(-100_000.0)
    assert buy["price"].item() == pytest.approx(150.01 * (1 + 2e-4))
    assert buy["quantity"].item() == pytest.approx(50_000.0)


def test_partial_fill_remainder_is_resubmitted_then_kept_pending(quotes, now, make_actions, make_book, held):
    # Arrange: every order fills half; one immediate re-submission
    positions, balances = make_book()
    cfg = BrokerConfig(slippage_bps=0.0, partial_fill_p=1.0, partial_fill_fraction=(0.5, 0.5), max_resubmits=1)
    b = PaperBroker(cfg, positions=positions, balances=balances)
    # Act
    first = b.execute(make_actions(("k1", "A2", "CLOSE_ALL", 0.0)), quotes, now)
    later = b.execute(make_actions(), quotes, now)
    # Assert: 20k -> 10k filled, re-submitted 10k -> 5k filled, 5k pending; next call fills 2.5k more
    assert first.orders["status"].to_list() == ["PARTIALLY_FILLED", "PARTIALLY_FILLED"]
    assert first.orders["quantity"].to_list() == pytest.approx([20_000.0, 10_000.0])
    assert first.orders["order_id"].n_unique() == 2
    assert first.pending["quantity"].to_list() == pytest.approx([5_000.0])
    assert first.pending["idempotency_key"].to_list() == ["k1"]
    assert later.orders["quantity"].to_list() == pytest.approx([5_000.0, 2_500.0])
    assert held(b, "A2", "GBP/USD") == pytest.approx(20_000.0 - 10_000 - 5_000 - 2_500 - 1_250)


def test_no_quote_rejects_and_the_risk_order_waits_for_a_price(broker, quotes, now, make_actions, held):
    # Arrange: GBP/USD has no quote (liquidity gap)
    gap = quotes.filter(pl.col("instrument") != "GBP/USD")
    # Act
    rejected = broker.execute(make_actions(("k1", "A2", "CLOSE_ALL", 0.0)), gap, now)
    retried = broker.execute(make_actions(), quotes, now)
    # Assert
    assert rejected.orders["status"].to_list() == ["REJECTED"]
    assert rejected.orders["reason"][0] == "NO_QUOTE: instrument=GBP/USD has no usable quote"
    assert rejected.pending.height == 1
    assert retried.orders["status"].to_list() == ["FILLED"]
    assert retried.orders["idempotency_key"].to_list() == ["k1"]
    assert held(broker, "A2", "GBP/USD") == 0.0
    assert broker.pending().height == 0


def test_one_sided_quote_rejects_the_side_it_lacks(broker, now, make_actions):
    # Arrange: the bid is gone; selling needs a bid
    one_sided = pl.DataFrame({"instrument": ["GBP/USD"], "bid": [None], "ask": [1.2701], "mid": [None]})
    # Act
    report = broker.execute(make_actions(("k1", "A2", "CLOSE_ALL", 0.0)), one_sided, now)
    # Assert
    assert report.orders["status"].to_list() == ["REJECTED"]


def test_market_closed_rejects(broker, quotes, now):
    # Arrange
    broker.market_open = False
    # Act
    report = broker.submit(Order("A1", "Swing_MA", "EUR/USD", "SELL", 1_000.0), now, quotes)
    # Assert
    assert report.orders["reason"].to_list() == ["MARKET_CLOSED"]


def test_strategy_order_opens_a_position_at_the_ask(broker, quotes, now, held):
    # Arrange
    order = Order("A2", "Breakout", "EUR/USD", "BUY", 5_000.0, idempotency_key="s-1")
    # Act
    report = broker.submit(order, now, quotes)
    replay = broker.submit(order, now, quotes)
    # Assert
    row = broker.positions().filter((pl.col("account_id") == "A2") & (pl.col("strategy") == "Breakout")).row(0, named=True)
    assert row["quantity"] == pytest.approx(5_000.0)
    assert row["entry_price"] == pytest.approx(1.0901)
    assert report.executed_keys == ("s-1",)
    assert replay.orders.height == 0 and replay.skipped.height == 1


def test_a_call_with_nothing_to_do_changes_nothing_but_the_quotes(broker, quotes, now, make_actions):
    # Arrange: EUR/USD moved; no action and nothing pending
    before = broker.positions()
    moved = quotes.with_columns(
        pl.when(pl.col("instrument") == "EUR/USD").then(pl.col(c) + 0.01).otherwise(pl.col(c)).alias(c)
        for c in ("bid", "ask", "mid")
    )
    # Act
    report = broker.execute(make_actions(), moved, now)
    broker.submit(Order("A2", "Breakout", "EUR/USD", "BUY", 5_000.0, idempotency_key="s-1"), now)  # no prices given
    # Assert: an empty report, the book as it was, and the next order filled at the new ask
    assert (report.orders.height, report.fills.height, report.mode_changes.height, report.pending.height) == (0, 0, 0, 0)
    assert report.executed_keys == ()
    assert before.equals(broker.positions().filter(pl.col("strategy") != "Breakout"))
    row = broker.positions().filter(pl.col("strategy") == "Breakout").row(0, named=True)
    assert row["entry_price"] == pytest.approx(1.0901 + 0.01)


def test_adding_averages_the_entry_and_flipping_resets_it(broker, quotes, now):
    # Arrange
    add = Order("A1", "Swing_MA", "EUR/USD", "BUY", 100_000.0)
    flip = Order("A1", "Swing_MA", "EUR/USD", "SELL", 300_000.0)
    # Act
    broker.submit(add, now, quotes)
    entry_after_add = broker.positions().filter(pl.col("instrument") == "EUR/USD")["entry_price"].item()
    broker.submit(flip, now, quotes)
    after_flip = broker.positions().filter(pl.col("instrument") == "EUR/USD").row(0, named=True)
    # Assert
    assert entry_after_add == pytest.approx((1.08 + 1.0901) / 2)
    assert after_flip["quantity"] == pytest.approx(-100_000.0)
    assert after_flip["entry_price"] == pytest.approx(1.0899)


def test_unknown_account_strategy_order_is_rejected(broker, quotes, now):
    # Arrange / Act
    report = broker.submit(Order("NOPE", "Swing_MA", "EUR/USD", "BUY", 1_000.0), now, quotes)
    # Assert
    assert report.orders["reason"][0] == "UNKNOWN_ACCOUNT: account_id=NOPE has no balance"


def test_bad_actions_raise_naming_the_field(broker, quotes, now, make_actions):
    # Arrange
    bad_fraction = make_actions(("k1", "A1", "REDUCE", 1.5))
    bad_action = make_actions(("k2", "A1", "SELL_EVERYTHING", 0.0))
    # Act / Assert
    with pytest.raises(BrokerError, match=r"fraction=1\.5 for key 'k1': must be in \[0, 1\]"):
        broker.execute(bad_fraction, quotes, now)
    with pytest.raises(BrokerError, match=r"action='SELL_EVERYTHING': must be one of"):
        broker.execute(bad_action, quotes, now)


def test_order_rejects_bad_side_and_quantity():
    # Arrange / Act / Assert
    with pytest.raises(BrokerError, match=r"side='HOLD': must be BUY or SELL"):
        Order("A1", "S", "EUR/USD", "HOLD", 1.0)
    with pytest.raises(BrokerError, match=r"quantity=0\.0: must be > 0"):
        Order("A1", "S", "EUR/USD", "BUY", 0.0)


def test_prices_may_be_a_mapping(broker, now, make_actions, held):
    # Arrange / Act
    broker.execute(make_actions(("k1", "A2", "CLOSE_ALL", 0.0)), {"GBP/USD": 1.27}, now)
    # Assert
    assert held(broker, "A2", "GBP/USD") == 0.0


def test_same_seed_gives_the_same_partial_fills(quotes, now, make_actions, make_book):
    # Arrange
    cfg = BrokerConfig(partial_fill_p=0.5)
    positions, balances = make_book()
    runs = []
    for _ in range(2):
        b = PaperBroker(cfg, seed=7, positions=positions, balances=balances)
        runs.append(b.execute(make_actions(("k1", "A1", "CLOSE_ALL", 0.0)), quotes, now).orders)
    # Act / Assert
    assert runs[0].equals(runs[1])


@settings(max_examples=40, deadline=None)
@given(
    q=st.floats(min_value=-1e6, max_value=1e6).filter(lambda x: abs(x) > 10),
    fractions=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=4),
)
def test_reductions_compound_and_never_flip_the_position(q, fractions):
    # Arrange
    from datetime import datetime, timezone

    now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    positions = pl.DataFrame([("A", "S", "EUR/USD", q, 1.1)], schema=frames.POSITIONS, orient="row")
    balances = pl.DataFrame([("A", "g", 1e6, 1e6)], schema=frames.BALANCES, orient="row")
    b = PaperBroker(BrokerConfig(slippage_bps=0.0, partial_fill_p=0.0, min_quantity=1e-9), positions=positions, balances=balances)
    acts = pl.DataFrame(
        [(f"k{i}", "i", "A", "REDUCE", f, "r", now) for i, f in enumerate(fractions)], schema=frames.ACTIONS, orient="row"
    )
    # Act
    b.execute(acts, {"EUR/USD": 1.1}, now)
    b.execute(acts, {"EUR/USD": 1.1}, now)  # replay: no effect
    # Assert
    left = b.positions()["quantity"].sum()
    expected = q * math.prod(1 - f for f in fractions)
    assert left == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert left == 0 or np.sign(left) == np.sign(q)


def test_submit_many_is_one_batch_with_per_order_halts(broker, quotes, now, make_actions, held):
    # Arrange: A1 may only reduce; A2 trades freely
    broker.execute(make_actions(("h1", "A1", "HALT_ENTRIES", 0.0)), quotes, now)
    orders = [
        Order("A1", "Swing_MA", "EUR/USD", "BUY", 1_000.0),  # grows: blocked
        Order("A1", "Swing_MA", "EUR/USD", "SELL", 1_000.0),  # shrinks: allowed
        Order("A2", "Swing_MA", "GBP/USD", "BUY", 1_000.0),
        Order("A2", "Swing_MA", "GBP/USD", "BUY", 1_000.0, idempotency_key="dup"),
        Order("A2", "Swing_MA", "GBP/USD", "BUY", 1_000.0, idempotency_key="dup"),
    ]
    # Act
    report = broker.submit_many(orders, now, quotes)
    # Assert
    assert report.orders["status"].to_list() == ["REJECTED", "FILLED", "FILLED", "FILLED"]
    assert report.skipped["idempotency_key"].to_list() == ["dup"]
    assert held(broker, "A1", "EUR/USD") == pytest.approx(99_000.0)
    assert held(broker, "A2", "GBP/USD") == pytest.approx(22_000.0)


def test_untouched_accounts_keep_their_positions_exactly(broker, quotes, now, make_actions, make_book):
    # Arrange
    before = broker.positions().filter(pl.col("account_id") == "A2")
    # Act
    broker.execute(make_actions(("k1", "A1", "CLOSE_ALL", 0.0)), quotes, now)
    # Assert
    assert broker.positions().filter(pl.col("account_id") == "A2").equals(before)
    assert broker.balances().filter(pl.col("account_id") == "A2")["cash_usd"].item() == 50_000.0


@settings(max_examples=30, deadline=None)
@given(
    p=st.floats(0.0, 1.0),
    lo=st.floats(0.05, 0.95),
    resubmits=st.integers(0, 4),
    seed=st.integers(0, 10_000),
)
def test_filled_plus_pending_is_always_what_was_ordered(p, lo, resubmits, seed):
    # Arrange
    from datetime import datetime, timezone

    now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    positions = pl.DataFrame(
        [("A", "S", "EUR/USD", 123_456.0, 1.1), ("A", "T", "USD/JPY", -54_321.0, 150.0)],
        schema=frames.POSITIONS,
        orient="row",
    )
    balances = pl.DataFrame([("A", "g", 1e6, 1e6)], schema=frames.BALANCES, orient="row")
    cfg = BrokerConfig(partial_fill_p=p, partial_fill_fraction=(lo, min(0.99, lo + 0.2)), max_resubmits=resubmits)
    b = PaperBroker(cfg, seed=seed, positions=positions, balances=balances)
    acts = pl.DataFrame([("k", "i", "A", "CLOSE_ALL", 1.0, "r", now)], schema=frames.ACTIONS, orient="row")
    # Act
    report = b.execute(acts, {"EUR/USD": 1.1, "USD/JPY": 150.0}, now)
    # Assert
    filled = report.fills.group_by("instrument").agg(pl.col("quantity").sum())
    pending = report.pending.group_by("instrument").agg(pl.col("quantity").sum())
    got = dict(filled.iter_rows())
    wait = dict(pending.iter_rows())
    assert got.get("EUR/USD", 0.0) - wait.get("EUR/USD", 0.0) == pytest.approx(-123_456.0)
    assert got.get("USD/JPY", 0.0) + wait.get("USD/JPY", 0.0) == pytest.approx(54_321.0)
    left = dict(b.positions().select("instrument", "quantity").iter_rows())
    assert left.get("EUR/USD", 0.0) == pytest.approx(wait.get("EUR/USD", 0.0))


def test_risk_fills_booked_by_position_row_match_booking_by_key(quotes, now, monkeypatch):
    # Arrange: a book of many accounts, cut with partial fills and re-submissions. Risk orders carry
    # their position's row and are booked by it; the keyed booking (group by and join on the
    # position's keys, what strategy orders use) is the reference.
    rng = np.random.default_rng(5)
    n, per = 60, 3
    instruments = quotes["instrument"].to_list()
    positions = pl.DataFrame(
        {
            "account_id": [f"A{i:02d}" for i in range(n) for _ in range(per)],
            "strategy": [f"S{j}" for _ in range(n) for j in range(per)],
            "instrument": [instruments[(i + j) % len(instruments)] for i in range(n) for j in range(per)],
            "quantity": rng.choice([-1.0, 1.0], n * per) * rng.uniform(1e3, 1e5, n * per),
            "entry_price": [0.0] * (n * per),
        },
        schema=frames.POSITIONS,
    ).join(quotes.select("instrument", "mid"), on="instrument").with_columns(
        (pl.col("mid") * pl.Series(rng.uniform(0.97, 1.03, n * per))).alias("entry_price")
    ).drop("mid")
    balances = pl.DataFrame(
        {"account_id": [f"A{i:02d}" for i in range(n)], "account_group": "g", "cash_usd": 1e6,
         "start_of_day_equity_usd": 1e6},
        schema=frames.BALANCES,
    )
    cfg = BrokerConfig(partial_fill_p=0.5, partial_fill_fraction=(0.2, 0.8), max_resubmits=2)
    kinds = ["REDUCE", "CLOSE", "CLOSE_ALL"]
    acts = pl.DataFrame(
        [(f"k{i}", f"inc{i}", f"A{i:02d}", kinds[i % 3], float(rng.uniform(0.1, 0.9)), "drawdown", now) for i in range(n)],
        schema=frames.ACTIONS,
        orient="row",
    )
    by_row = PaperBroker(cfg, seed=9, positions=positions, balances=balances)
    by_key = PaperBroker(cfg, seed=9, positions=positions, balances=balances)
    monkeypatch.setattr(by_key, "_apply_by_row", lambda fills: by_key._apply(fills.drop("_pos")))
    # Act
    row_report = by_row.execute(acts, quotes, now)
    key_report = by_key.execute(acts, quotes, now)
    # Assert: the same orders and fills, and the same book, cash and realized P&L after them
    assert row_report.fills.equals(key_report.fills)
    assert row_report.orders["status"].n_unique() == 2  # partial fills happened
    keys = ["account_id", "strategy", "instrument"]
    assert_frame_equal(by_row.positions().sort(keys), by_key.positions().sort(keys), rel_tol=1e-12)
    assert_frame_equal(by_row.balances().sort("account_id"), by_key.balances().sort("account_id"), rel_tol=1e-12)
    assert_frame_equal(
        by_row.realized_pnl().sort("account_id"), by_key.realized_pnl().sort("account_id"), rel_tol=1e-12
    )
    assert by_row.realized_pnl().height == n
