"""Replay of recorded prices and positions from Parquet or CSV, for backtesting the policy on history."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from risklib.core import frames
from risklib.core.instruments import FX_MAJORS
from risklib.errors import ReplayFileError

from ._base import Snapshot, bars_schema, empty_bars
from ._config import BrokerConfig, SimulatorConfig

_NUMERIC = (pl.Float64, pl.Float32, pl.Int64, pl.Int32, pl.Int16, pl.Int8, pl.UInt64, pl.UInt32, pl.UInt16, pl.UInt8)


def _read(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            # every column as text first: type errors are then reported with their row and value
            return pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise ReplayFileError(f"{path}: file not found") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ReplayFileError(f"{path}: cannot read: {exc}") from None
    raise ReplayFileError(f"{path}: suffix {suffix!r}: must be .parquet or .csv")


def _row_label(path: Path, i: int) -> str:
    """Human row label: data row (1-based) and, for CSV, the line in the file."""
    return f"row {i + 1} (line {i + 2})" if path.suffix.lower() == ".csv" else f"row {i + 1}"


def _as_float(df: pl.DataFrame, col: str, path: Path) -> pl.Series:
    s = df[col]
    if s.dtype in _NUMERIC:
        return s.cast(pl.Float64)
    if s.dtype == pl.String:
        out = s.str.strip_chars().cast(pl.Float64, strict=False)
        bad = (out.is_null() & s.is_not_null() & (s.str.strip_chars() != "")).arg_true()
        if bad.len():
            i = int(bad[0])
            raise ReplayFileError(f"{path}: {_row_label(path, i)} column {col}={s[i]!r}: not a number")
        return out
    raise ReplayFileError(f"{path}: column {col} has type {s.dtype}: must be numeric")


def _as_ts(df: pl.DataFrame, col: str, path: Path) -> pl.Series:
    if col not in df.columns:
        raise ReplayFileError(f"{path}: missing column {col!r}; have {df.columns}")
    s = df[col]
    if isinstance(s.dtype, pl.Datetime):
        out = s if s.dtype.time_zone else s.dt.replace_time_zone("UTC")
        out = out.dt.convert_time_zone("UTC").cast(frames.UTC_TS)
    elif s.dtype == pl.Date:
        out = s.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    elif s.dtype == pl.String:
        txt = s.str.strip_chars()
        aware = txt.str.to_datetime(time_unit="us", time_zone="UTC", strict=False, format=None)
        out = aware
        bad = (out.is_null() & s.is_not_null()).arg_true()
        if bad.len():
            i = int(bad[0])
            raise ReplayFileError(f"{path}: {_row_label(path, i)} column {col}={s[i]!r}: not a timestamp (ISO 8601)")
    else:
        raise ReplayFileError(f"{path}: column {col} has type {s.dtype}: must be a timestamp")
    nulls = out.is_null().arg_true()
    if nulls.len():
        raise ReplayFileError(f"{path}: {_row_label(path, int(nulls[0]))} column {col}=None: timestamp missing")
    return out.alias(col)


def _require(df: pl.DataFrame, cols: list[str], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ReplayFileError(f"{path}: missing column(s) {missing}; have {df.columns}")


class FileReplayFeed:
    """Replays recorded prices, positions and balances bar by bar as ``now`` advances.

    Files are Parquet or CSV (by suffix). Structural problems (missing column,
    unparseable timestamp or number, timestamps not increasing, unknown
    instrument column) raise :class:`ReplayFileError` naming the file, row,
    column and value. Bad *values* (NaN, negative prices) are replayed as
    recorded: validation quarantines them, as it would from a live feed.

    Parameters
    ----------
    prices_path : path
        ``ts`` + one mid column per instrument (quote currency per base unit),
        one row per bar, timestamps strictly increasing. An empty cell means no
        quote for that instrument in that bar.
    positions_path : path
        :data:`frames.POSITIONS` columns, optionally ``ts``: with ``ts`` the book
        at ``now`` is the rows carrying the latest ``ts <= now`` (snapshots of
        the book); without it the book is static.
    balances_path : path, optional
        :data:`frames.BALANCES` columns (optionally ``ts``, as for positions).
        Without it every account of the positions file gets ``default_equity_usd``
        of cash, group ``replay``.
    start : datetime, optional
        Session start: bars up to ``start`` are history (``warmup``), later ones
        are replayed. Default: the first bar's time.
    spread_pips : dict, optional
        Quoted spread per instrument in pips (bid/ask = mid ∓ half of it);
        default the simulator's calm spreads.
    default_equity_usd : float
        Cash per account when there is no balances file.
    book : str
        ``file`` (default): positions and balances are replayed as recorded.
        ``broker``: the book as of ``start`` is loaded into a
        :class:`~risklib.adapters.brokers.PaperBroker` (``feed.broker``) and
        snapshots show that broker's book, so the policy's actions change it
        (backtesting the policy rather than replaying what happened).
    broker_config : BrokerConfig, optional
        Fills of that broker.
    seed : int
        Seeds that broker's partial fills.
    """

    def __init__(
        self,
        prices_path: str | Path,
        positions_path: str | Path,
        balances_path: str | Path | None = None,
        *,
        start: datetime | None = None,
        spread_pips: dict[str, float] | None = None,
        default_equity_usd: float = 1_000_000.0,
        book: str = "file",
        broker_config: BrokerConfig | None = None,
        seed: int = 0,
    ) -> None:
        if book not in ("file", "broker"):
            raise ReplayFileError(f"book={book!r}: must be 'file' or 'broker'")
        self.prices_path = Path(prices_path)
        raw = _read(self.prices_path)
        ts = _as_ts(raw, "ts", self.prices_path)
        inst = [c for c in raw.columns if c != "ts"]
        unknown = [c for c in inst if c not in FX_MAJORS]
        if unknown:
            raise ReplayFileError(f"{self.prices_path}: column {unknown[0]!r}: not a known instrument ({sorted(FX_MAJORS)})")
        if not inst:
            raise ReplayFileError(f"{self.prices_path}: no instrument columns; have {raw.columns}")
        t = ts.to_numpy()
        back = np.nonzero(t[1:] <= t[:-1])[0]
        if back.size:
            i = int(back[0]) + 1
            raise ReplayFileError(
                f"{self.prices_path}: {_row_label(self.prices_path, i)} column ts={ts[i].isoformat()}: "
                f"not after the previous row's {ts[i - 1].isoformat()}"
            )
        self.instruments: tuple[str, ...] = tuple(inst)
        self._prices = pl.DataFrame({"ts": ts, **{c: _as_float(raw, c, self.prices_path) for c in inst}})
        self._t = self._prices["ts"].cast(pl.Int64).to_numpy()  # microseconds since epoch
        self._mids = self._prices.select(inst).to_numpy()
        spreads = spread_pips or SimulatorConfig().spread_pips
        self._half = np.array([spreads.get(i, 1.0) * FX_MAJORS[i].pip / 2.0 for i in inst])
        self.start = start or ts[0]
        if self.start.tzinfo is None:
            raise ReplayFileError(f"start={self.start!r}: must be timezone-aware")
        self._delivered = self._index_at(self.start)  # rows <= delivered are history
        self.positions_path = Path(positions_path)
        self._positions = self._load_book(self.positions_path, frames.POSITIONS, ["quantity", "entry_price"])
        self.balances_path = Path(balances_path) if balances_path is not None else None
        if self.balances_path is not None:
            self._balances = self._load_book(self.balances_path, frames.BALANCES, ["cash_usd", "start_of_day_equity_usd"])
        else:
            ids = self._positions["account_id"].drop_nulls().unique(maintain_order=True)
            self._balances = pl.DataFrame(
                {
                    "account_id": ids,
                    "account_group": ["replay"] * ids.len(),
                    "cash_usd": [float(default_equity_usd)] * ids.len(),
                    "start_of_day_equity_usd": [float(default_equity_usd)] * ids.len(),
                },
                schema=frames.BALANCES,
            )
        self.book = book
        self.broker = None
        if book == "broker":
            from risklib.adapters.brokers import PaperBroker

            self.broker = PaperBroker(
                broker_config,
                seed=seed,
                positions=self._as_of(self._positions, self.start, frames.POSITIONS),
                balances=self._as_of(self._balances, self.start, frames.BALANCES),
            )
            start_ticks = self._ticks(self._index_at(self.start))
            if start_ticks.height:
                self.broker.update_prices(start_ticks)

    # -- loading ----------------------------------------------------------------

    def _load_book(self, path: Path, schema: dict[str, pl.DataType], numeric: list[str]) -> pl.DataFrame:
        raw = _read(path)
        _require(raw, list(schema), path)
        cols: dict[str, pl.Series] = {}
        for c, t in schema.items():
            cols[c] = _as_float(raw, c, path) if c in numeric else raw[c].cast(pl.String).alias(c)
        out = pl.DataFrame(cols, schema=schema)
        if "ts" in raw.columns:
            out = out.with_columns(_as_ts(raw, "ts", path))
        return out

    @staticmethod
    def _as_of(book: pl.DataFrame, now: datetime, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        if "ts" not in book.columns:
            return book
        seen = book.filter(pl.col("ts") <= frames.utc_lit(now))
        if seen.height == 0:
            return frames.empty(schema)
        latest = seen["ts"].max()
        return seen.filter(pl.col("ts") == latest).select(list(schema))

    # -- Feed -------------------------------------------------------------------

    def _index_at(self, now: datetime) -> int:
        """Index of the last bar with ``ts <= now`` (-1 if none)."""
        us = int(now.timestamp() * 1_000_000)
        return int(np.searchsorted(self._t, us, side="right")) - 1

    @property
    def exhausted(self) -> bool:
        """True once every recorded bar has been delivered."""
        return self._delivered >= len(self._t) - 1

    @property
    def bar_s(self) -> float | None:
        """Median spacing of the recorded bars, seconds (None with fewer than two bars)."""
        if len(self._t) < 2:
            return None
        return float(np.median(np.diff(self._t))) / 1e6

    def warmup(self, bars: int) -> pl.DataFrame:
        """The last ``bars`` recorded bars at or before ``start`` (fewer if the file holds fewer)."""
        if bars < 1:
            raise ReplayFileError(f"bars={bars}: must be >= 1")
        end = self._index_at(self.start) + 1
        return self._prices.slice(max(0, end - bars), min(bars, end))

    def snapshot(self, now: datetime) -> Snapshot:
        """Bars recorded since the previous snapshot up to ``now``; latest quote per instrument; the book as of ``now``."""
        idx = self._index_at(now)
        if idx > self._delivered:
            bars = self._prices.slice(self._delivered + 1, idx - self._delivered)
            self._delivered = idx
        else:
            bars = empty_bars(self.instruments)
        ticks = self._ticks(idx)
        last = ticks["ts"].max() if ticks.height else None
        if self.broker is not None:
            if ticks.height:
                self.broker.update_prices(ticks)
            positions, balances = self.broker.positions(), self.broker.balances()
        else:
            positions = self._as_of(self._positions, now, frames.POSITIONS)
            balances = self._as_of(self._balances, now, frames.BALANCES)
        return Snapshot(
            ts=now,
            ticks=ticks,
            bars=bars.cast(bars_schema(self.instruments)),  # type: ignore[arg-type]
            positions=positions,
            balances=balances,
            connected=True,
            last_tick_at=last,
        )

    def _ticks(self, idx: int) -> pl.DataFrame:
        """Latest recorded mid per instrument at or before row ``idx``, stamped with its bar time."""
        if idx < 0:
            return frames.empty(frames.TICKS)
        block = self._mids[: idx + 1]
        have = ~np.isnan(block)
        # last row with a value, per instrument
        last = np.where(have.any(axis=0), idx - np.argmax(have[::-1], axis=0), -1)
        rows = []
        for j, inst in enumerate(self.instruments):  # one row per instrument: a handful
            r = int(last[j])
            if r < 0:
                continue
            mid = float(block[r, j])
            ts = datetime.fromtimestamp(self._t[r] / 1e6, tz=timezone.utc)
            rows.append((ts, inst, mid - self._half[j], mid + self._half[j], mid))
        return pl.DataFrame(rows, schema=frames.TICKS, orient="row") if rows else frames.empty(frames.TICKS)
