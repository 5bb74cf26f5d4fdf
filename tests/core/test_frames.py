"""Shared frame helpers of the core."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from risklib.core import frames
from risklib.errors import SchemaError

ZONES = [timezone.utc, timezone(timedelta(hours=-5)), ZoneInfo("Europe/Paris"), ZoneInfo("Asia/Tokyo")]


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)), st.sampled_from(ZONES))
def test_the_utc_literal_is_the_instant_polars_would_make(naive, zone):
    at = naive.replace(tzinfo=zone)
    got = pl.select(frames.utc_lit(at).alias("t"))
    assert got.schema["t"] == frames.UTC_TS
    assert got["t"][0] == at  # the same instant, to the microsecond
    if at.year < 2037:  # later, Polars' own conversion drops daylight saving time (Python's keeps it)
        assert got["t"][0] == pl.select(pl.lit(at).cast(frames.UTC_TS).alias("t"))["t"][0]


def test_the_utc_literal_compares_and_fills_like_the_datetime_itself():
    base = datetime(2026, 3, 2, 8, 11, 16, 200_000, tzinfo=timezone.utc)
    df = pl.DataFrame({"t": [base + timedelta(microseconds=i) for i in range(-2, 3)] + [None]},
                      schema={"t": frames.UTC_TS})
    assert df.filter(pl.col("t") <= frames.utc_lit(base)).equals(df.filter(pl.col("t") <= base))
    assert df.with_columns(pl.col("t").fill_null(frames.utc_lit(base)))["t"][-1] == base


def test_a_naive_timestamp_is_refused_naming_it():
    with pytest.raises(SchemaError, match=r"2026, 3, 2, 8, 0\).*timezone-aware"):
        frames.utc_lit(datetime(2026, 3, 2, 8, 0))


def test_each_empty_frame_is_its_own_copy():
    first = frames.empty(frames.TICKS)
    first.insert_column(0, pl.Series("extra", [], pl.Int64))  # an in-place change by one caller
    assert frames.empty(frames.TICKS).schema == pl.Schema(frames.TICKS)
    assert frames.conform(pl.DataFrame(schema=frames.TICKS), frames.TICKS, "ticks").schema == pl.Schema(frames.TICKS)
