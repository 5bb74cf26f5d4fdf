"""One Great Expectations context for the whole validation test session, and snapshot builders."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from risklib.adapters.validation import SnapshotValidator
from risklib.core import frames

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Snap:
    ticks: pl.DataFrame
    positions: pl.DataFrame
    balances: pl.DataFrame
    connected: bool = True


def clean_snapshot() -> Snap:
    ticks = pl.DataFrame(
        [
            (NOW - timedelta(seconds=1), "EUR/USD", 1.0899, 1.0901, 1.0900),
            (NOW - timedelta(seconds=1), "GBP/USD", 1.2699, 1.2701, 1.2700),
            (NOW - timedelta(seconds=2), "USD/JPY", 149.99, 150.01, 150.00),
        ],
        schema=frames.TICKS,
        orient="row",
    )
    positions = pl.DataFrame(
        [
            ("A1", "Swing_MA", "EUR/USD", 10_000.0, 1.08),
            ("A1", "Carry", "USD/JPY", -5_000.0, 150.0),
            ("A2", "Swing_MA", "GBP/USD", 2_000.0, 1.26),
            ("A3", "Swing_MA", "EUR/USD", -1_000.0, 1.09),
        ],
        schema=frames.POSITIONS,
        orient="row",
    )
    balances = pl.DataFrame(
        [("A1", "moderate", 100_000.0, 100_000.0), ("A2", "moderate", 50_000.0, 50_000.0), ("A3", "aggressive", 20_000.0, 20_000.0)],
        schema=frames.BALANCES,
        orient="row",
    )
    return Snap(ticks, positions, balances)


@pytest.fixture(scope="session")
def validator() -> SnapshotValidator:
    """Built once: importing GX and building the suites takes seconds."""
    return SnapshotValidator(staleness_s=10.0)


@pytest.fixture(scope="session")
def gx_always(validator) -> SnapshotValidator:
    """Same GX context, suites run every time (for agreement tests)."""
    v = SnapshotValidator(staleness_s=10.0, gx_mode="always", eager=False)
    v._gx = validator.suites
    return v


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def snap() -> Snap:
    return clean_snapshot()


@pytest.fixture
def with_rows():
    """``with_rows(snap, ticks=[...], positions=[...], balances=[...])`` appends raw rows."""

    def add(s: Snap, **rows) -> Snap:
        out = {}
        for name in ("ticks", "positions", "balances"):
            frame = getattr(s, name)
            extra = rows.get(name)
            out[name] = pl.concat([frame, pl.DataFrame(extra, schema=frame.schema, orient="row")]) if extra else frame
        return replace(s, **out)

    return add
