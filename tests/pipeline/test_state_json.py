"""The risk state's bookkeeping columns survive the trip through ``state_json`` exactly."""

from __future__ import annotations

import json
import math

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from risklib.cycle.stages import to_json_rows

_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
_rows = st.lists(
    st.tuples(_floats, st.one_of(st.none(), st.integers(-(2**40), 2**40)), st.one_of(st.none(), st.text(max_size=8)), st.booleans()),
    min_size=1,
    max_size=30,
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


@settings(max_examples=60, deadline=None)
@given(_rows)
def test_every_row_reads_back_as_json_dumps_would_write_it(rows):
    frame = pl.DataFrame(rows, schema={"t": pl.Float64, "n": pl.Int64, "why": pl.String, "ok": pl.Boolean}, orient="row")
    encoded = to_json_rows(frame).to_list()
    assert len(encoded) == frame.height
    for text, row in zip(encoded, frame.iter_rows(named=True)):
        back = json.loads(text)
        expected = json.loads(json.dumps(row))
        assert back.keys() == expected.keys()
        assert all(_same(back[k], expected[k]) for k in back), (text, row)


def test_nan_and_infinity_are_kept_not_turned_into_null():
    frame = pl.DataFrame({"t": [1.5, float("nan"), float("inf"), None]})
    back = [json.loads(x)["t"] for x in to_json_rows(frame).to_list()]
    assert back[0] == 1.5 and math.isnan(back[1]) and back[2] == math.inf and back[3] is None


def test_bookkeeping_nan_is_written_as_null_and_infinity_kept():
    frame = pl.DataFrame({"t": [1.5, float("nan"), float("inf"), None], "n": [1, 2, 3, None]})
    back = [json.loads(x) for x in to_json_rows(frame, nan_as_null=True).to_list()]
    assert [b["t"] for b in back] == [1.5, None, math.inf, None]
    assert [b["n"] for b in back] == [1, 2, 3, None]
