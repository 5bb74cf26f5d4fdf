"""POST /api/gate/check: the pre-trade gate over HTTP, fail closed, dead man's switch at the API's clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_builders import T0, make_client, record_cycle

pytestmark = pytest.mark.integration

BUY_A1 = {"account_id": "A1", "strategy": "trend", "instrument": "EUR/USD", "side": "BUY", "quantity": 1000}
SELL_A1 = {**BUY_A1, "side": "SELL"}


def test_fresh_state_approves_new_risk_within_limits(client):
    d = client.post("/api/gate/check", json=BUY_A1).json()
    assert d["approved"] is True and d["quantity"] == 1000 and d["reducing"] is False and d["codes"] == []
    assert d["cycle_id"] == "c2" and d["stale"] is False


def test_stale_heartbeat_refuses_new_risk_but_allows_a_reduction(client, clock):
    # Arrange: the pipeline stopped 11 minutes ago
    clock.advance(660)
    # Act
    buy = client.post("/api/gate/check", json=BUY_A1).json()
    sell = client.post("/api/gate/check", json=SELL_A1).json()
    # Assert
    assert buy["approved"] is False and buy["quantity"] == 0 and buy["codes"][0] == "STALE_STATE"
    assert "dead man's switch" in buy["reasons"][0]["message"]
    assert sell["approved"] is True and sell["quantity"] == 1000 and sell["reducing"] is True


def test_order_larger_than_the_position_is_cut_to_the_reducing_part_when_stale(client, clock):
    clock.advance(660)
    d = client.post("/api/gate/check", json={**SELL_A1, "quantity": 25_000}).json()
    assert d["approved"] is True and d["quantity"] == 10_000 and d["reducing"] is True  # A1 holds 10,000 EUR/USD


def test_account_without_risk_state_is_refused(client):
    d = client.post("/api/gate/check", json={**BUY_A1, "account_id": "ZZ"}).json()
    assert d["approved"] is False and d["codes"] == ["UNKNOWN_ACCOUNT"]


def test_unreadable_warehouse_fails_closed(tmp_path, clock):
    # Arrange: the warehouse connection is gone
    from risklib.warehouse import Warehouse

    w = Warehouse.open(tmp_path / "gone")
    c = make_client(w, clock)
    w.close()
    # Act
    new = c.post("/api/gate/check", json=BUY_A1).json()
    red = c.post("/api/gate/check", json={**SELL_A1, "reduce_only": True}).json()
    # Assert
    assert new["approved"] is False and new["codes"] == ["CHECK_ERROR"]
    assert red["approved"] is True and red["codes"] == ["CHECK_ERROR"]


def test_no_cycle_at_all_refuses_everything_but_reduce_only(tmp_path, clock):
    from risklib.warehouse import Warehouse

    with Warehouse.open(tmp_path / "empty") as w:
        c = make_client(w, clock)
        new = c.post("/api/gate/check", json=BUY_A1).json()
        red = c.post("/api/gate/check", json={**SELL_A1, "reduce_only": True}).json()
    assert new["approved"] is False and new["codes"][0] == "STALE_STATE"
    assert red["approved"] is True and red["reducing"] is True


def test_halted_mode_of_the_newest_cycle_blocks_entries(wh, client):
    # Arrange: a newer cycle halts A1
    record_cycle(wh, "c3", T0 + timedelta(seconds=5), state={"modes": ("HALTED", "ACTIVE")})
    # Act
    d = client.post("/api/gate/check", json=BUY_A1).json()
    red = client.post("/api/gate/check", json=SELL_A1).json()
    # Assert: the cached c2 state was replaced by c3's
    assert d["cycle_id"] == "c3" and d["approved"] is False and "TRADING_HALTED" in d["codes"]
    assert red["approved"] is True and red["reducing"] is True


def test_approvals_count_as_pending_exposure(client):
    # A1: equity 1,000,000 x max single position 2 % = 20,000 USD; it holds 10,850 USD of EUR/USD
    first = client.post("/api/gate/check", json={**BUY_A1, "quantity": 8000}).json()
    second = client.post("/api/gate/check", json={**BUY_A1, "quantity": 8000}).json()
    assert first["approved"] is True and first["quantity"] == 8000
    assert "POSITION_SIZE_CAP" in second["codes"] and second["quantity"] < 8000


@pytest.mark.parametrize("bad", [{"quantity": 0}, {"quantity": -5}, {"side": "HOLD"}, {"price": 0}, {"extra": 1}])
def test_malformed_orders_are_422(client, bad):
    assert client.post("/api/gate/check", json={**BUY_A1, **bad}).status_code == 422


def test_price_far_from_last_is_refused(client):
    d = client.post("/api/gate/check", json={**BUY_A1, "price": 1.2}).json()
    assert d["approved"] is False and "PRICE_BAND" in d["codes"]


def test_an_instrument_no_account_holds_is_priced_from_the_cycles_quotes(wh, client):
    # Arrange: the newest cycle quoted USD/JPY, which nobody holds, and not USD/CHF
    import polars as pl

    now = T0 + timedelta(seconds=5)
    quotes = pl.DataFrame({"ts": [now, now, now], "instrument": ["EUR/USD", "GBP/USD", "USD/JPY"],
                           "bid": [1.0849, 1.2699, 151.19], "ask": [1.0851, 1.2701, 151.21],
                           "mid": [1.085, 1.27, 151.2]})
    record_cycle(wh, "c3", now, extra={"market_quotes": quotes})
    # Act
    quoted = client.post("/api/gate/check", json={**BUY_A1, "instrument": "USD/JPY"}).json()
    limit = client.post("/api/gate/check", json={**BUY_A1, "instrument": "USD/JPY", "price": 190.0}).json()
    unquoted = client.post("/api/gate/check", json={**BUY_A1, "instrument": "USD/CHF"}).json()
    # Assert: the quote is the last price (a limit far from it is out of the band); no quote still refuses
    assert quoted["cycle_id"] == "c3" and quoted["approved"] is True and quoted["codes"] == []
    assert limit["approved"] is False and "PRICE_BAND" in limit["codes"]
    assert unquoted["approved"] is False and "MISSING_PRICE" in unquoted["codes"]
