"""File replay: prices and the book from Parquet or CSV, bar by bar; bad files named precisely."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from risklib.adapters.feeds import Feed, FileReplayFeed
from risklib.core import frames
from risklib.errors import ReplayFileError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def prices(n: int = 10) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=k) for k in range(n)],
            "EUR/USD": [1.08 + 0.001 * k for k in range(n)],
            "USD/JPY": [150.0 - 0.1 * k for k in range(n)],
        }
    )


POSITIONS = pl.DataFrame(
    [("A1", "Swing_MA", "EUR/USD", 10_000.0, 1.08), ("A2", "Carry", "USD/JPY", -5_000.0, 150.0)],
    schema=frames.POSITIONS,
    orient="row",
)
BALANCES = pl.DataFrame(
    [("A1", "moderate", 100_000.0, 100_000.0), ("A2", "moderate", 50_000.0, 50_000.0)],
    schema=frames.BALANCES,
    orient="row",
)


@pytest.fixture(params=["csv", "parquet"])
def files(request, tmp_path):
    ext = request.param
    paths = {}
    for name, frame in (("prices", prices()), ("positions", POSITIONS), ("balances", BALANCES)):
        p = tmp_path / f"{name}.{ext}"
        frame.write_csv(p) if ext == "csv" else frame.write_parquet(p)
        paths[name] = p
    return paths


def test_replays_bar_by_bar_as_now_advances(files):
    # Arrange
    feed = FileReplayFeed(files["prices"], files["positions"], files["balances"], start=T0 + timedelta(minutes=3))
    # Act
    hist = feed.warmup(3)
    first = feed.snapshot(T0 + timedelta(minutes=5, seconds=30))
    nothing = feed.snapshot(T0 + timedelta(minutes=5, seconds=50))
    second = feed.snapshot(T0 + timedelta(minutes=7))
    # Assert
    assert isinstance(feed, Feed)
    assert hist["ts"].to_list() == [T0 + timedelta(minutes=k) for k in (1, 2, 3)]
    assert first.bars["ts"].to_list() == [T0 + timedelta(minutes=k) for k in (4, 5)]
    assert nothing.bars.height == 0
    assert second.bars["ts"].to_list() == [T0 + timedelta(minutes=k) for k in (6, 7)]
    assert first.ticks.schema == pl.Schema(frames.TICKS)
    eur = first.ticks.filter(pl.col("instrument") == "EUR/USD").row(0, named=True)
    assert eur["mid"] == pytest.approx(1.085)
    assert eur["ts"] == T0 + timedelta(minutes=5)
    assert eur["bid"] < eur["mid"] < eur["ask"]
    assert first.last_tick_at == T0 + timedelta(minutes=5)
    assert first.positions.equals(POSITIONS)
    assert first.balances.equals(BALANCES)
    assert feed.bar_s == 60.0


def test_ticks_go_stale_after_the_last_bar(files):
    # Arrange
    feed = FileReplayFeed(files["prices"], files["positions"])
    # Act
    snap = feed.snapshot(T0 + timedelta(hours=1))
    # Assert
    assert feed.exhausted
    assert snap.silence_s == pytest.approx(60 * 60 - 9 * 60)


def test_without_a_balances_file_each_account_gets_default_cash(files):
    # Arrange / Act
    feed = FileReplayFeed(files["prices"], files["positions"], default_equity_usd=250_000.0)
    bal = feed.snapshot(T0).balances
    # Assert
    assert bal["account_id"].to_list() == ["A1", "A2"]
    assert bal["cash_usd"].to_list() == [250_000.0, 250_000.0]


def test_a_missing_quote_keeps_the_instruments_last_quote_with_its_time(tmp_path):
    # Arrange
    p = prices(4).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("USD/JPY")).alias("USD/JPY")
    )
    p.write_csv(tmp_path / "p.csv")
    POSITIONS.write_csv(tmp_path / "pos.csv")
    feed = FileReplayFeed(tmp_path / "p.csv", tmp_path / "pos.csv")
    # Act
    ticks = feed.snapshot(T0 + timedelta(minutes=3)).ticks
    # Assert
    jpy = ticks.filter(pl.col("instrument") == "USD/JPY").row(0, named=True)
    assert jpy["ts"] == T0 + timedelta(minutes=2)
    assert jpy["mid"] == pytest.approx(149.8)


def test_positions_with_timestamps_are_replayed_as_of_now(tmp_path):
    # Arrange: the book changes at minute 5
    later = POSITIONS.with_columns(pl.col("quantity") * 2)
    book = pl.concat(
        [
            POSITIONS.with_columns(pl.lit(T0).alias("ts")),
            later.with_columns(pl.lit(T0 + timedelta(minutes=5)).alias("ts")),
        ]
    )
    book.write_parquet(tmp_path / "pos.parquet")
    prices().write_parquet(tmp_path / "p.parquet")
    feed = FileReplayFeed(tmp_path / "p.parquet", tmp_path / "pos.parquet")
    # Act
    early = feed.snapshot(T0 + timedelta(minutes=4)).positions
    late = feed.snapshot(T0 + timedelta(minutes=6)).positions
    # Assert
    assert early["quantity"].to_list() == [10_000.0, -5_000.0]
    assert late["quantity"].to_list() == [20_000.0, -10_000.0]


def _write(tmp_path, text: str, name: str = "p.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ts,EUR/USD\n2026-03-02T09:00:00Z,1.08\n2026-03-02T09:01:00Z,abc\n",
            r"p\.csv: row 2 \(line 3\) column EUR/USD='abc': not a number",
        ),
        (
            "ts,EUR/USD\n2026-03-02T09:00:00Z,1.08\nyesterday,1.09\n",
            r"p\.csv: row 2 \(line 3\) column ts='yesterday': not a timestamp",
        ),
        (
            "ts,EUR/USD\n2026-03-02T09:01:00Z,1.08\n2026-03-02T09:00:00Z,1.09\n",
            r"p\.csv: row 2 \(line 3\) column ts=2026-03-02T09:00:00\+00:00: not after the previous row's",
        ),
        ("ts,XAU/USD\n2026-03-02T09:00:00Z,2000\n", r"p\.csv: column 'XAU/USD': not a known instrument"),
        ("time,EUR/USD\n2026-03-02T09:00:00Z,1.08\n", r"p\.csv: missing column 'ts'"),
    ],
)
def test_bad_price_files_are_named_by_row_column_and_value(tmp_path, text, message):
    # Arrange
    path = _write(tmp_path, text)
    POSITIONS.write_csv(tmp_path / "pos.csv")
    # Act / Assert
    with pytest.raises(ReplayFileError, match=message):
        FileReplayFeed(path, tmp_path / "pos.csv")


def test_bad_positions_file_names_the_missing_column_and_bad_value(tmp_path):
    # Arrange
    prices().write_csv(tmp_path / "p.csv")
    no_col = _write(tmp_path, "account_id,strategy,instrument,quantity\nA1,S,EUR/USD,1\n", "pos1.csv")
    bad_val = _write(tmp_path, "account_id,strategy,instrument,quantity,entry_price\nA1,S,EUR/USD,1e4x,1.08\n", "pos2.csv")
    # Act / Assert
    with pytest.raises(ReplayFileError, match=r"pos1\.csv: missing column\(s\) \['entry_price'\]"):
        FileReplayFeed(tmp_path / "p.csv", no_col)
    with pytest.raises(ReplayFileError, match=r"pos2\.csv: row 1 \(line 2\) column quantity='1e4x': not a number"):
        FileReplayFeed(tmp_path / "p.csv", bad_val)


def test_unreadable_paths_are_named(tmp_path):
    # Arrange
    (tmp_path / "p.json").write_text("{}")
    # Act / Assert
    with pytest.raises(ReplayFileError, match=r"p\.json: suffix '\.json': must be \.parquet or \.csv"):
        FileReplayFeed(tmp_path / "p.json", tmp_path / "pos.csv")
    with pytest.raises(ReplayFileError, match=r"nope\.csv: file not found"):
        FileReplayFeed(tmp_path / "nope.csv", tmp_path / "pos.csv")


def test_broker_book_mode_lets_actions_change_the_replayed_book(files):
    # Arrange
    feed = FileReplayFeed(files["prices"], files["positions"], files["balances"], book="broker")
    acts = pl.DataFrame(
        [("k1", "i", "A1", "CLOSE_ALL", 1.0, "backtest", T0 + timedelta(minutes=2))], schema=frames.ACTIONS, orient="row"
    )
    snap = feed.snapshot(T0 + timedelta(minutes=2))
    # Act
    feed.broker.execute(acts, snap.ticks, T0 + timedelta(minutes=2))
    later = feed.snapshot(T0 + timedelta(minutes=3))
    # Assert
    assert snap.positions.height == 2
    assert later.positions["account_id"].to_list() == ["A2"]
    assert later.balances.filter(pl.col("account_id") == "A1")["cash_usd"].item() != 100_000.0


def test_unknown_book_mode_is_refused(files):
    # Arrange / Act / Assert
    with pytest.raises(ReplayFileError, match=r"book='both': must be 'file' or 'broker'"):
        FileReplayFeed(files["prices"], files["positions"], book="both")
