"""Pre-trade gate: every check with its reason code; fail closed; reductions always allowed."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from gate_builders import T0, T1, config, gate_state, order, positions

from risklib.core.gate import check, check_and_record, check_batch, decode_reasons


def test_plain_order_is_approved():
    # Arrange
    st = gate_state()
    # Act
    d = check(order(qty=100), st)
    # Assert
    assert d.approved and d.quantity == 100 and d.reasons == () and not d.reducing


@pytest.mark.parametrize(
    ("kwargs", "state_kw", "code", "text"),
    [
        (dict(account="ZZ"), {}, "UNKNOWN_ACCOUNT", "account_id='ZZ': no risk state"),
        (dict(ts=T0 + timedelta(seconds=700)), {}, "STALE_STATE", "dead man's switch"),
        ({}, dict(state_edit={"valid": pl.lit(False)}), "MISSING_METRIC", "metrics missing or invalid"),
        (dict(inst="GBP/USD"), dict(prices={"EUR/USD": 1.1}), "MISSING_PRICE", "no last price"),
        (dict(inst="XAU/EUR"), {}, "MISSING_PRICE", "unknown, no price"),
        ({}, dict(state_edit={"breaker_state": pl.lit("OPEN")}), "BREAKER_OPEN", "circuit breaker OPEN"),
        ({}, dict(state_edit={"trading_mode": pl.lit("HALTED")}), "TRADING_HALTED", "HALTED"),
        ({}, dict(state_edit={"trading_mode": pl.lit("FLATTEN")}), "TRADING_HALTED", "FLATTEN"),
        ({}, dict(state_edit={"trading_mode": pl.lit("REDUCE_ONLY")}), "ENTRIES_HALTED", "REDUCE_ONLY"),
        # a mode the gate does not know, or none at all, fails closed
        ({}, dict(state_edit={"trading_mode": pl.lit("PAUSED")}), "TRADING_HALTED", "HALTED"),
        ({}, dict(state_edit={"trading_mode": pl.lit(None, pl.String)}), "TRADING_HALTED", "HALTED"),
        ({}, dict(cfg=config(restricted_instruments=["EUR/USD"])), "RESTRICTED_INSTRUMENT", "restricted"),
        (dict(price=1.2), {}, "PRICE_BAND", "price=1.2 is 9.09% from last=1.1 > band=1.00%"),
        (dict(inst="USD/JPY"), dict(state_edit={"max_positions": pl.lit(1)}), "MAX_POSITIONS",
         "open positions incl. pending=1 >= max=1"),
        (dict(qty=1000), dict(cfg=config(max_notional_usd=500.0, resize_to_fit=False)), "NOTIONAL_CAP",
         "limit 500 USD"),
        (dict(qty=2000), dict(cfg=config(resize_to_fit=False)), "POSITION_SIZE_CAP", "limit 2000 USD"),
        (dict(qty=1000, inst="USD/JPY"), dict(state_edit={"max_leverage": pl.lit(0.01)},
                                            cfg=config(resize_to_fit=False)), "LEVERAGE_CAP", "gross exposure"),
        (dict(qty=1000, inst="USD/JPY"), dict(cfg=config(max_gross_exposure=0.01, resize_to_fit=False)),
         "GROSS_EXPOSURE_CAP", "gross exposure incl. pending"),
        (dict(qty=1000, inst="USD/JPY"), dict(cfg=config(max_net_exposure=0.01, resize_to_fit=False)),
         "NET_EXPOSURE_CAP", "|net exposure|"),
        (dict(qty=1000), dict(cfg=config(instrument_max_usd={"EUR/USD": 1500.0}, resize_to_fit=False)),
         "INSTRUMENT_LIMIT", "limit 1500 USD"),
        (dict(qty=1000), dict(cfg=config(strategy_max_usd={"swing": 1500.0}, resize_to_fit=False)),
         "STRATEGY_LIMIT", "strategy"),
        (dict(qty=1000), dict(cfg=config(firm_max_gross_usd=1500.0, resize_to_fit=False)), "FIRM_GROSS_CAP",
         "firm gross"),
        (dict(qty=-5), {}, "INVALID_ORDER", "quantity > 0"),
        (dict(side="HOLD"), {}, "INVALID_ORDER", "side='HOLD'"),
        (dict(price=float("nan")), {}, "INVALID_ORDER", "price > 0"),
    ],
)
def test_each_check_has_its_reason(kwargs, state_kw, code, text):
    # Arrange
    st = gate_state(**state_kw)
    # Act
    d = check(order(**kwargs), st)
    batch = check_batch([order(**kwargs)], st, record=False)
    # Assert
    assert not d.approved and d.quantity == 0.0
    assert code in d.codes
    assert any(text in r.message for r in d.reasons), d.reasons
    assert not batch.approved[0] and code in decode_reasons(int(batch.reason_bits[0]))


def test_rate_limit_counts_orders_in_the_window():
    # Arrange
    st = gate_state(cfg=config(rate_limit_orders=2, rate_window_s=1.0))
    # Act
    first = [check_and_record(order(qty=1, ts=T1), st) for _ in range(3)]
    later = check_and_record(order(qty=1, ts=T1 + timedelta(seconds=1.5)), st)
    # Assert
    assert [d.approved for d in first] == [True, True, False]
    assert first[2].codes == ("RATE_LIMIT",)
    assert later.approved


def test_exception_inside_a_check_denies_new_risk_but_not_reductions():
    # Arrange: corrupt state (a check raises)
    st = gate_state()
    st.account_static[0] = None
    # Act
    new = check(order(qty=10), st)
    red = check(order(side="SELL", qty=10, reduce_only=True), st)
    # Assert
    assert not new.approved and new.codes == ("CHECK_ERROR",)
    assert red.approved


@pytest.mark.parametrize(
    "state_kw",
    [dict(state_edit={"trading_mode": pl.lit("HALTED")}), dict(state_edit={"breaker_state": pl.lit("OPEN")}),
     dict(state_edit={"trading_mode": pl.lit("FLATTEN")}), dict(state_edit={"valid": pl.lit(False)}),
     dict(prices={}), dict(cfg=config(restricted_instruments=["EUR/USD"]))],
)
def test_reducing_orders_always_pass(state_kw):
    # Arrange: long 1000 EUR/USD
    st = gate_state(**state_kw)
    # Act
    d = check(order(side="SELL", qty=600), st)
    stale = check(order(side="SELL", qty=1000, ts=T0 + timedelta(days=1)), st)
    # Assert
    assert d.approved and d.quantity == 600 and d.reducing
    assert stale.approved and stale.reducing


def test_reductions_already_approved_are_netted():
    # Arrange: long 1000; a first sell of 800 is approved and pending
    st = gate_state(state_edit={"trading_mode": pl.lit("HALTED")})
    first = check_and_record(order(side="SELL", qty=800), st)
    # Act: a second sell of 800 would flip the account short under a halt
    second = check_and_record(order(side="SELL", qty=800), st)
    # Assert: only the 200 still reducing go through
    assert first.approved and first.quantity == 800
    assert second.approved and second.quantity == 200 and "TRADING_HALTED" in second.codes


def test_flip_order_is_new_risk_beyond_the_position():
    # Arrange: long 1000 EUR/USD (1100 USD); cap 2 % of 100k = 2000 USD
    st = gate_state()
    # Act: sell 4000 = reduce 1000 + open 3000 short (3300 USD > 2000)
    d = check(order(side="SELL", qty=4000), st)
    # Assert: resized to reduce 1000 + 1818 new
    assert d.approved and d.quantity == 1000 + 1818
    assert d.codes == ("POSITION_SIZE_CAP", "RESIZED")


def test_resize_to_fit_and_refusal_when_off():
    # Arrange
    on = gate_state()
    off = gate_state(cfg=config(resize_to_fit=False))
    # Act: buy 2000 on top of 1000 long (3300 USD vs 2000 USD cap)
    d_on = check(order(qty=2000), on)
    d_off = check(order(qty=2000), off)
    # Assert
    assert d_on.approved and d_on.quantity == 818 and "RESIZED" in d_on.codes
    assert not d_off.approved and d_off.codes == ("POSITION_SIZE_CAP",)


def test_pending_orders_count_in_exposure():
    # Arrange
    st = gate_state(cfg=config(resize_to_fit=False))
    # Act: 1000 long held (1100 USD); each buy of 400 adds 440 USD; cap 2000 USD
    ds = [check_and_record(order(qty=400), st) for _ in range(3)]
    # Assert
    assert [d.approved for d in ds] == [True, True, False]


def test_pending_from_frames_counts():
    # Arrange: an open buy order of 800 EUR/USD already pending
    import risklib.core.gate as g

    from gate_builders import CFG, PRICES, metrics
    from risklib.core.policy import MarketInputs, evaluate

    m = metrics("A1")
    st = evaluate(T0, m, None, CFG, market=MarketInputs(feed_silent_s=1.0)).state
    pend = pl.DataFrame({"account_id": ["A1"], "strategy": ["swing"], "instrument": ["EUR/USD"], "quantity": [800.0]})
    gs = g.GateState.from_frames(T0, st, m, positions(("A1", "swing", "EUR/USD", 1000)), PRICES, CFG, pending=pend)
    # Act: 1000 + 800 held/pending = 1980 USD; 100 more = 2090 > 2000
    d = check(order(qty=100), gs)
    # Assert
    assert d.quantity == 18


def test_unknown_account_reduce_only_goes_through():
    # Act
    d = check(order(account="ZZ", side="SELL", reduce_only=True), gate_state())
    # Assert: the broker enforces reduce-only; the gate never blocks a reduction
    assert d.approved and d.reducing


def test_reduce_only_that_would_increase_is_refused():
    # Act
    d = check(order(side="BUY", reduce_only=True), gate_state())
    # Assert
    assert not d.approved and d.codes == ("INVALID_ORDER",)


def test_halved_sizing_multiplier_halves_the_cap():
    # Arrange
    st = gate_state(state_edit={"sizing_multiplier": pl.lit(0.5)}, pos=positions())
    # Act: cap 100k * 2 % * 0.5 = 1000 USD = 909 EUR at 1.1
    d = check(order(qty=5000), st)
    # Assert
    assert d.quantity == 909


def test_batch_from_frame():
    # Arrange
    st = gate_state()
    frame = pl.DataFrame({"account_id": ["A1", "ZZ"], "strategy": ["swing", "swing"], "instrument": ["EUR/USD"] * 2,
                          "side": ["BUY", "BUY"], "quantity": [10.0, 10.0], "price": [None, None],
                          "ts": [T1, T1]})
    # Act
    res = check_batch(frame, st).to_frame()
    # Assert
    assert res["approved"].to_list() == [True, False]
    assert res["reasons"].to_list() == ["", "UNKNOWN_ACCOUNT"]


def test_positions_of_accounts_without_risk_state_do_not_count_in_the_known_accounts_exposures():
    # Arrange
    own = positions(("A1", "swing", "EUR/USD", 1000))
    with_stranger = positions(("A1", "swing", "EUR/USD", 1000), ("GHOST", "swing", "EUR/USD", 5_000_000))
    # Act
    plain, mixed = gate_state(pos=own), gate_state(pos=with_stranger)
    # Assert
    assert mixed.accounts == plain.accounts == ("A1",)
    assert mixed.gross == plain.gross and mixed.net == plain.net and mixed.firm_gross == plain.firm_gross
    assert plain.gross[0] == pytest.approx(1000 * 1.1)
