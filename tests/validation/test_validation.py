"""Validation: Great Expectations suites, quarantine, fail-closed accounts, the rest goes on."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risklib.adapters.validation import FAILED_ACCOUNTS, QUARANTINE, SnapshotValidator, validate_snapshot
from risklib.errors import DataError


def failed(result) -> dict[str, str]:
    return dict(result.failed_accounts.iter_rows())


def test_a_clean_snapshot_passes_untouched(validator, snap, now):
    # Arrange / Act
    r = validator.validate(snap, now)
    # Assert
    assert r.ok
    assert r.ticks.equals(snap.ticks)
    assert r.positions.equals(snap.positions)
    assert r.balances.equals(snap.balances)
    assert r.quarantine.schema == pl.Schema(QUARANTINE)
    assert r.failed_accounts.schema == pl.Schema(FAILED_ACCOUNTS)
    assert r.summary["positions"] == {
        "rows": 4,
        "passed": 4,
        "failed": 0,
        "by_rule": {k: 0 for k in r.summary["positions"]["by_rule"]},
        "engine": "screen",
    }


def test_nan_price_quarantines_the_tick_and_fails_its_holders_closed(validator, snap, now):
    # Arrange
    bad = replace(snap, ticks=snap.ticks.with_columns(
        pl.when(pl.col("instrument") == "EUR/USD").then(float("nan")).otherwise(pl.col("mid")).alias("mid")
    ))
    # Act
    r = validator.validate(bad, now)
    # Assert
    q = r.quarantine.row(0, named=True)
    assert q["source"] == "ticks" and q["row_key"] == "EUR/USD"
    assert q["rule"] == "expect_column_values_to_not_be_null(mid)"
    assert q["detail"] == "mid=nan: must not be null or NaN"
    assert json.loads(q["raw_row"])["mid"] == "nan"
    assert failed(r) == {"A1": "no valid quote: instrument=EUR/USD", "A3": "no valid quote: instrument=EUR/USD"}
    assert r.positions["account_id"].to_list() == ["A1", "A2"]  # A1's JPY, A2 untouched
    assert r.summary["ticks"]["engine"] == "great_expectations"


def test_negative_and_infinite_prices_fail_the_bounds(validator, snap, now):
    # Arrange
    bad = replace(snap, ticks=snap.ticks.with_columns(
        pl.when(pl.col("instrument") == "GBP/USD").then(-1.27)
        .when(pl.col("instrument") == "USD/JPY").then(float("inf"))
        .otherwise(pl.col("mid")).alias("mid")
    ))
    # Act
    r = validator.validate(bad, now)
    # Assert
    rules = r.quarantine.filter(pl.col("rule") == "expect_column_values_to_be_between(mid)")
    assert rules["row_key"].to_list() == ["GBP/USD", "USD/JPY"]
    assert rules["detail"][0] == "mid=-1.27: must be > 0.0 and <= 1000000000.0 (price > 0 and finite)"
    assert set(failed(r)) == {"A1", "A2"}
    assert r.ticks["instrument"].to_list() == ["EUR/USD"]


def test_stale_and_future_ticks_are_quarantined(validator, snap, now):
    # Arrange
    bad = replace(snap, ticks=snap.ticks.with_columns(
        pl.when(pl.col("instrument") == "EUR/USD").then(now - timedelta(seconds=11))
        .when(pl.col("instrument") == "GBP/USD").then(now + timedelta(minutes=5))
        .otherwise(pl.col("ts")).alias("ts")
    ))
    # Act
    r = validator.validate(bad, now)
    # Assert
    q = r.quarantine.filter(pl.col("rule") == "expect_column_values_to_be_between(ts)")
    assert q["row_key"].to_list() == ["EUR/USD", "GBP/USD"]
    assert "not stale, not in the future" in q["detail"][0]
    assert set(failed(r)) == {"A1", "A2", "A3"}


def test_staleness_limit_is_a_parameter(validator, snap, now):
    # Arrange
    old = replace(snap, ticks=snap.ticks.with_columns(pl.col("ts") - timedelta(seconds=30)))
    # Act
    strict = validator.validate(old, now)
    lenient = validator.validate(old, now, staleness_s=60)
    # Assert
    assert strict.ticks.height == 0
    assert lenient.ok


def test_unknown_instrument_duplicate_keys_and_orphans(validator, snap, now, with_rows):
    # Arrange
    bad = with_rows(
        snap,
        ticks=[(now, "XAU/USD", 1999.0, 2001.0, 2000.0)],
        positions=[
            ("A2", "Gold", "XAU/USD", 1.0, 2000.0),
            ("A3", "Swing_MA", "EUR/USD", -1_000.0, 1.09),  # duplicate key
            ("GHOST", "Swing_MA", "EUR/USD", 1.0, 1.0),
        ],
    )
    # Act
    r = validator.validate(bad, now)
    # Assert
    rules = set(zip(r.quarantine["row_key"], r.quarantine["rule"]))
    assert ("XAU/USD", "expect_column_values_to_be_in_set(instrument)") in rules
    assert ("A2|Gold|XAU/USD", "expect_column_values_to_be_in_set(instrument)") in rules
    assert ("A3|Swing_MA|EUR/USD", "expect_compound_columns_to_be_unique(account_id,strategy,instrument)") in rules
    assert ("GHOST|Swing_MA|EUR/USD", "expect_column_values_to_not_be_null(balance_account_id)") in rules
    orphan = r.quarantine.filter(pl.col("row_key") == "GHOST|Swing_MA|EUR/USD")["detail"][0]
    assert orphan == "account_id='GHOST': the position's account has no balance row"
    assert set(failed(r)) == {"A2", "A3", "GHOST"}
    assert "A1" not in failed(r)
    assert r.positions.filter(pl.col("account_id") == "A1").height == 2
    assert r.ticks.height == 3


def test_bad_balance_rows_fail_their_account(validator, snap, now):
    # Arrange: A2's cash is NaN, A3 is blown out (equity <= 0)
    bad = replace(snap, balances=snap.balances.with_columns(
        pl.when(pl.col("account_id") == "A2").then(float("nan"))
        .when(pl.col("account_id") == "A3").then(-50_000.0)
        .otherwise(pl.col("cash_usd")).alias("cash_usd")
    ))
    # Act
    r = validator.validate(bad, now)
    # Assert
    rules = dict(zip(r.quarantine["row_key"] + ":" + r.quarantine["rule"], r.quarantine["detail"]))
    assert "A2:expect_column_values_to_not_be_null(cash_usd)" in rules
    assert "A3:expect_column_values_to_be_between(equity_usd)" in rules
    assert rules["A3:expect_column_values_to_be_between(equity_usd)"].startswith("equity_usd=-")
    assert set(failed(r)) == {"A2", "A3"}
    assert r.balances["account_id"].to_list() == ["A1"]


@pytest.mark.parametrize("repeated_balance", [False, True], ids=["one-row-per-account", "an-account-twice"])
@pytest.mark.parametrize("margin, passes", [(0.01, True), (-0.01, False)])
def test_equity_is_cash_plus_the_positions_pnl_at_the_clean_mids(validator, snap, now, repeated_balance, margin, passes):
    # Arrange: A1 is up 100 USD on EUR/USD (USD quoted) and 5,000 JPY on USD/JPY (USD base: 5,000 / 150 USD);
    # its cash leaves equity just above or just below zero. A repeated balance row (of A2) is quarantined
    # and takes the general path; A1's equity must come out the same either way.
    pnl = 10_000.0 * (1.09 - 1.08) + (-5_000.0) * (150.0 - 151.0) / 150.0
    positions = snap.positions.with_columns(
        pl.when(pl.col("instrument") == "USD/JPY").then(151.0).otherwise(pl.col("entry_price")).alias("entry_price")
    )
    balances = snap.balances.with_columns(
        pl.when(pl.col("account_id") == "A1").then(-pnl + margin).otherwise(pl.col("cash_usd")).alias("cash_usd")
    )
    if repeated_balance:
        balances = pl.concat([balances, balances.filter(pl.col("account_id") == "A2")])
    # Act
    r = validator.validate(replace(snap, positions=positions, balances=balances), now)
    # Assert
    a1 = r.quarantine.filter(pl.col("row_key") == "A1")
    if passes:
        assert a1.height == 0
        assert "A1" not in failed(r)
        assert r.positions.filter(pl.col("account_id") == "A1").height == 2
    else:
        assert a1["rule"].to_list() == ["expect_column_values_to_be_between(equity_usd)"]
        assert a1["detail"][0].startswith("equity_usd=-")
        assert "A1" in failed(r)
    assert ("A2" in failed(r)) == repeated_balance


def test_missing_column_quarantines_the_whole_frame_without_crashing(validator, snap, now):
    # Arrange
    bad = replace(snap, positions=snap.positions.drop("entry_price"))
    # Act
    r = validator.validate(bad, now)
    # Assert
    q = r.quarantine.filter(pl.col("source") == "positions")
    assert q.height == 4
    assert set(q["rule"]) == {"expect_table_columns_to_match_set"}
    assert q["detail"][0].startswith("missing column(s) ['entry_price']")
    assert set(failed(r)) == {"A1", "A2", "A3"}
    assert r.positions.height == 0
    assert r.summary["positions"]["engine"] == "schema"


def test_uncastable_column_type_is_named(validator, snap, now):
    # Arrange
    bad = replace(snap, balances=snap.balances.with_columns(pl.lit("lots").alias("cash_usd")))
    # Act
    r = validator.validate(bad, now)
    # Assert
    q = r.quarantine.filter(pl.col("source") == "balances")
    assert set(q["rule"]) == {"expect_column_values_to_be_of_type"}
    assert q["detail"][0].startswith("column cash_usd=String: cannot be read as Float64")


def test_a_disconnected_feed_fails_every_holder_closed(validator, snap, now):
    # Arrange
    dark = replace(snap, ticks=snap.ticks.clear(), connected=False)
    # Act
    r = validator.validate(dark, now)
    # Assert
    assert set(failed(r)) == {"A1", "A2", "A3"}
    assert failed(r)["A2"] == "feed disconnected: instrument=GBP/USD"
    assert r.quarantine.height == 0


def test_validate_snapshot_uses_the_given_validator(validator, snap, now):
    # Arrange / Act
    r = validate_snapshot(snap, now, known_instruments=("EUR/USD", "GBP/USD"), staleness_s=10, validator=validator)
    # Assert
    assert r.quarantine["row_key"].to_list() == ["USD/JPY", "A1|Carry|USD/JPY"]  # not a known instrument
    assert set(failed(r)) == {"A1"}


def test_summary_markdown_lists_failing_rules(validator, snap, now, with_rows):
    # Arrange
    bad = with_rows(snap, positions=[("GHOST", "S", "EUR/USD", 1.0, 1.0)])
    # Act
    md = validator.validate(bad, now).summary_markdown()
    # Assert
    assert "| positions | 5 | 4 | 1 | great_expectations | expect_column_values_to_not_be_null(balance_account_id): 1 |" in md
    assert "Accounts failing closed: 1" in md


def test_validation_prints_no_progress_bars(validator, snap, now, with_rows, capfd):
    # Arrange
    bad = with_rows(snap, positions=[("GHOST", "S", "EUR/USD", 1.0, 1.0)])
    # Act
    validator.validate(bad, now)
    out, err = capfd.readouterr()
    # Assert
    assert out == "" and err == ""


def test_the_simulators_bad_rows_are_all_caught(validator):
    # Arrange
    from risklib.adapters.feeds import SimulatedFeed

    start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    feed = SimulatedFeed(scenario="bad-data", seed=3, start=start, accounts=30)
    now = start + timedelta(minutes=1)
    # Act
    r = validator.validate(feed.snapshot(now), now)
    # Assert
    rules = set(r.quarantine["rule"])
    assert {
        "expect_column_values_to_not_be_null(mid)",
        "expect_column_values_to_be_between(mid)",
        "expect_column_values_to_be_in_set(instrument)",
        "expect_column_values_to_be_unique(instrument)",
        "expect_column_values_to_be_between(ts)",
        "expect_compound_columns_to_be_unique(account_id,strategy,instrument)",
        "expect_column_values_to_not_be_null(balance_account_id)",
    } <= rules
    ok_accounts = set(r.balances["account_id"]) - set(r.failed_accounts["account_id"])
    assert ok_accounts  # the rest of the book goes on
    assert r.positions.filter(pl.col("account_id").is_in(list(ok_accounts))).height > 0


def test_bad_settings_are_refused():
    # Arrange / Act / Assert
    with pytest.raises(DataError, match=r"staleness_s=0: must be > 0"):
        SnapshotValidator(staleness_s=0, eager=False)
    with pytest.raises(DataError, match=r"gx_mode='sometimes': must be one of"):
        SnapshotValidator(gx_mode="sometimes", eager=False)


# --- the screen and Great Expectations agree row for row ------------------------------------

_CORRUPT = st.sampled_from(["nan", "neg", "inf", "null", "unknown", "dup", "stale", "future", "orphan", "ok"])


def _corrupt_ticks(ticks: pl.DataFrame, i: int, kind: str, now) -> pl.DataFrame:
    row = dict(ticks.row(i, named=True))
    if kind == "dup":
        return pl.concat([ticks, pl.DataFrame([row], schema=ticks.schema)])
    change = {
        "nan": {"mid": math.nan},
        "neg": {"mid": -row["mid"], "bid": -row["bid"]},
        "inf": {"mid": math.inf, "ask": math.inf},
        "null": {"instrument": None},
        "unknown": {"instrument": "XAU/USD"},
        "stale": {"ts": now - timedelta(hours=1)},
        "future": {"ts": now + timedelta(hours=1)},
    }.get(kind, {})
    row.update(change)
    rows = ticks.to_dicts()
    rows[i] = row
    return pl.DataFrame(rows, schema=ticks.schema)


def _corrupt_positions(pos: pl.DataFrame, i: int, kind: str) -> pl.DataFrame:
    row = dict(pos.row(i, named=True))
    if kind == "dup":
        return pl.concat([pos, pl.DataFrame([row], schema=pos.schema)])
    change = {
        "nan": {"entry_price": math.nan},
        "neg": {"entry_price": -1.0},
        "inf": {"quantity": math.inf},
        "null": {"account_id": None},
        "unknown": {"instrument": "XAU/USD"},
        "orphan": {"account_id": "GHOST"},
    }.get(kind, {})
    row.update(change)
    rows = pos.to_dicts()
    rows[i] = row
    return pl.DataFrame(rows, schema=pos.schema)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tick_bad=st.lists(st.tuples(st.integers(0, 2), _CORRUPT), max_size=3),
    pos_bad=st.lists(st.tuples(st.integers(0, 3), _CORRUPT), max_size=3),
)
def test_screen_and_great_expectations_agree_row_for_row(gx_always, snap, now, tick_bad, pos_bad):
    # Arrange
    ticks, positions = snap.ticks, snap.positions
    for i, kind in tick_bad:
        ticks = _corrupt_ticks(ticks, i, kind, now)
    for i, kind in pos_bad:
        positions = _corrupt_positions(positions, i, kind)
    bad = replace(snap, ticks=ticks, positions=positions)
    # Act: a disagreement between GX and the screen would warn; make it fail the test
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = gx_always.validate(bad, now)
    # Assert
    assert {v["engine"] for k, v in r.summary.items() if isinstance(v, dict)} == {"great_expectations"}
    assert r.ticks.height + r.summary["ticks"]["failed"] == ticks.height
    assert r.positions["instrument"].is_in(r.ticks["instrument"].to_list()).all()
    assert np.isfinite(r.positions["entry_price"].to_numpy()).all() and (r.positions["entry_price"] > 0).all()
    bad_position_accounts = set(
        r.quarantine.filter(pl.col("source") == "positions")["row_key"].str.split("|").list.first()
    ) - {"<null>"}
    assert bad_position_accounts <= set(r.failed_accounts["account_id"])


def test_a_calm_simulated_session_never_quarantines_anything(validator):
    # Arrange: no false alarms on good data, snapshot after snapshot
    from risklib.adapters.feeds import SimulatedFeed

    start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    feed = SimulatedFeed(seed=9, start=start, accounts=40)
    # Act
    results = [validator.validate(feed.snapshot(t), t) for t in (start + timedelta(seconds=45 * k) for k in range(1, 25))]
    # Assert
    assert all(r.ok for r in results)


def test_a_liquidity_gap_fails_closed_only_the_holders_of_the_gapped_pairs(validator):
    # Arrange
    from risklib.adapters.feeds import SimulatedFeed

    start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    feed = SimulatedFeed(scenario="liquidity-gap", seed=4, start=start, accounts=60)
    now = start + timedelta(minutes=12)
    # Act
    snap = feed.snapshot(now)
    r = validator.validate(snap, now)
    # Assert
    gapped = set(feed.instruments) - set(r.ticks["instrument"])
    assert gapped  # this seed gaps at least one pair at minute 12
    holders = set(snap.positions.filter(pl.col("instrument").is_in(list(gapped)))["account_id"])
    assert set(r.failed_accounts["account_id"]) == holders
    one_sided = snap.ticks.filter(pl.col("mid").is_null())["instrument"].to_list()
    assert set(r.quarantine.filter(pl.col("rule") == "expect_column_values_to_not_be_null(mid)")["row_key"]) == set(one_sided)


def test_validator_from_the_pipeline_config():
    # Arrange
    from risklib.adapters.feeds import PipelineConfig

    cfg = PipelineConfig.model_validate({"staleness_s": 30.0, "validation": {"gx_mode": "always"}})
    # Act
    v = SnapshotValidator.from_config(cfg, ("EUR/USD",), eager=False)
    # Assert
    assert (v.staleness_s, v.gx_mode, v.known_instruments) == (30.0, "always", ("EUR/USD",))
