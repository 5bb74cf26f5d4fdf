"""Rolling window of instrument price bars, from which each cycle reads its returns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from risklib.errors import DataError


class ReturnsWindow:
    """The last ``capacity`` bar mids per instrument, oldest first.

    A bar with a missing or non-positive mid for an instrument carries the
    previous mid forward (a zero return for that bar): a hole in the bars must
    not become a NaN that poisons every VaR that holds the instrument. The
    feed's own quote problems are caught by validation, not here.
    """

    def __init__(self, instruments: Sequence[str], capacity: int) -> None:
        if capacity < 2:
            raise DataError(f"capacity={capacity}: must be >= 2")
        self.instruments = tuple(instruments)
        self.capacity = capacity
        self._mids = np.empty((0, len(self.instruments)))
        self.last_ts = None

    def __len__(self) -> int:
        return self._mids.shape[0]

    def extend(self, bars: pl.DataFrame) -> int:
        """Append ``bars`` (``ts`` + one mid column per instrument); return how many were added."""
        if bars.height == 0:
            return 0
        missing = [i for i in self.instruments if i not in bars.columns]
        if missing:
            raise DataError(f"bars: missing instrument column(s) {missing}")
        new = bars[list(self.instruments)].to_numpy().astype(float, copy=True)
        bad = ~np.isfinite(new) | (new <= 0)
        if bad.any():
            prev = self._mids[-1] if len(self) else np.full(len(self.instruments), np.nan)
            for row in range(new.shape[0]):  # forward fill, bars are few per cycle
                new[row] = np.where(bad[row], prev, new[row])
                prev = new[row]
        self._mids = np.vstack([self._mids, new])[-self.capacity :]
        self.last_ts = bars["ts"][-1]
        return new.shape[0]

    def returns(self) -> np.ndarray:
        """Simple per-bar returns ``mid[t] / mid[t-1] - 1``, shape ``(len - 1, n_instruments)``."""
        m = self._mids
        if m.shape[0] < 2:
            return np.empty((0, len(self.instruments)))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = m[1:] / m[:-1] - 1.0
        return np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)

    def last_mids(self) -> np.ndarray:
        return self._mids[-1].copy() if len(self) else np.full(len(self.instruments), np.nan)
