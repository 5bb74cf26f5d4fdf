"""The feed interface every input source implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import polars as pl

from risklib.core import frames


@dataclass(frozen=True)
class Snapshot:
    """What a feed sees at one moment.

    Attributes
    ----------
    ts : datetime
        Feed time (UTC), the ``now`` the snapshot was taken at.
    ticks : pl.DataFrame
        :data:`frames.TICKS`, the latest quote per instrument. In scenarios a
        quote may be stale, missing, one-sided (null side and null mid) or
        crazy; validation sorts that out.
    bars : pl.DataFrame
        ``ts`` + one mid column per instrument (quote currency per base unit):
        the price bars completed since the previous snapshot, oldest first.
    positions : pl.DataFrame
        :data:`frames.POSITIONS`, the broker's book.
    balances : pl.DataFrame
        :data:`frames.BALANCES`.
    connected : bool
        False while the feed is disconnected (then ``ticks`` and ``bars`` are empty).
    last_tick_at : datetime | None
        Time of the newest tick actually received; feed silence in seconds is
        ``ts - last_tick_at``. None before the first tick.
    scenario : tuple[str, ...]
        Names of the scenario effects in force (empty for a calm market or a replay).
    """

    ts: datetime
    ticks: pl.DataFrame
    bars: pl.DataFrame
    positions: pl.DataFrame
    balances: pl.DataFrame
    connected: bool
    last_tick_at: datetime | None
    scenario: tuple[str, ...] = ()

    @property
    def silence_s(self) -> float | None:
        """Seconds since the newest tick, None before the first tick."""
        if self.last_tick_at is None:
            return None
        return (self.ts - self.last_tick_at).total_seconds()


@runtime_checkable
class Feed(Protocol):
    """An input source: prices, positions and balances as the pipeline sees them."""

    instruments: tuple[str, ...]

    def warmup(self, bars: int) -> pl.DataFrame:
        """``ts`` + one mid column per instrument: ``bars`` rows of history before the session, oldest first."""
        ...

    def snapshot(self, now: datetime) -> Snapshot:
        """Advance to ``now`` and return what the feed sees."""
        ...


def bars_schema(instruments: tuple[str, ...]) -> dict[str, pl.DataType]:
    """Schema of a bars frame: ``ts`` then one Float64 mid column per instrument."""
    return {"ts": frames.UTC_TS, **{i: pl.Float64 for i in instruments}}


def empty_bars(instruments: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(schema=bars_schema(instruments))
