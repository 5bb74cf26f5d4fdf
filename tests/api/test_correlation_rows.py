"""correlation_rows: the pairs a cycle records for GET /api/risk/correlation-matrix (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risklib.core.frames import CORRELATION
from risklib.core.metrics import correlation_rows

TS = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def slow_pairs(names, m):
    out = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a < b:
                out[(a, b)] = None if np.isnan(m[i, j]) else float(m[i, j])
    return out


def test_upper_triangle_sorted_by_name_nan_as_null():
    # Arrange
    names = ["USD/JPY", "EUR/USD", "GBP/USD"]
    m = np.array([[1.0, -0.3, np.nan], [-0.3, 1.0, 0.8], [np.nan, 0.8, 1.0]])
    # Act
    out = correlation_rows(names, m, TS)
    # Assert
    assert dict(out.schema) == CORRELATION
    assert out.select("instrument_a", "instrument_b", "correlation").rows() == [
        ("EUR/USD", "GBP/USD", 0.8), ("EUR/USD", "USD/JPY", -0.3), ("GBP/USD", "USD/JPY", None)]


def test_bad_shapes_and_duplicates_are_named():
    with pytest.raises(ValueError, match=r"matrix.shape=\(2, 2\): must be \(3, 3\) for 3 instruments"):
        correlation_rows(["A", "B", "C"], np.eye(2), TS)
    with pytest.raises(ValueError, match=r"instruments: 'A' appears more than once"):
        correlation_rows(["A", "A"], np.eye(2), TS)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7).flatmap(lambda n: st.tuples(
    st.permutations([f"I{k}" for k in range(n)]),
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=n * n, max_size=n * n))))
def test_property_equals_slow_loop(args):
    names, flat = args
    n = len(names)
    m = np.array(flat).reshape(n, n)
    m = (m + m.T) / 2
    out = correlation_rows(list(names), m, TS)
    got = {(a, b): c for a, b, c in out.select("instrument_a", "instrument_b", "correlation").rows()}
    assert out.height == n * (n - 1) // 2
    assert got == slow_pairs(list(names), m)  # values are copied, not computed: exact
