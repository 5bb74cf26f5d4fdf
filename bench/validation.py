"""Input validation on a 10k-account x 20-position book (200k position rows).

Figures (milliseconds, medians of repeated calls in this process):

* ``gx_positions_200k_ms`` - the Great Expectations positions suite alone on
  200k rows (pandas conversion + batch + suite with row-level COMPLETE results);
* ``gx_snapshot_10k_ms`` - a whole snapshot with every GX suite run (``gx_mode="always"``);
* ``screen_snapshot_10k_ms`` - a whole clean snapshot as the cycle runs it
  (``on_suspect``: vectorized screen, GX not needed);
* ``screen_snapshot_10k_bad_ms`` - the same with one bad position row (the
  screen flags it, the positions suite runs and decides the quarantine);
* ``screen_snapshot_100_ms`` / ``gx_snapshot_100_ms`` - the same for 100 accounts;
* ``gx_over_screen_10k`` - how much the always-GX mode costs relative to the screen.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

from bench._harness import ms, p, time_calls

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _snapshot(accounts: int, positions_each: int):
    from risklib.adapters.feeds import SimulatedFeed, SimulatorConfig

    cfg = SimulatorConfig(positions_per_account=(positions_each, positions_each))
    feed = SimulatedFeed(cfg, seed=1, start=START, accounts=accounts)
    now = START + timedelta(minutes=1)
    return feed.snapshot(now), now


def run() -> dict[str, float]:
    from risklib.adapters.validation import SnapshotValidator
    from risklib.adapters.validation._gx import GxSuites

    screen = SnapshotValidator(gx_mode="on_suspect")
    always = SnapshotValidator(gx_mode="always", eager=False)
    always._gx = screen.suites  # one GX context, built once
    suites: GxSuites = screen.suites

    big, now = _snapshot(10_000, 20)
    small, _ = _snapshot(100, 5)
    bad_pos = big.positions.with_columns(
        pl.when(pl.int_range(pl.len()) == 12_345).then(-1.0).otherwise(pl.col("entry_price")).alias("entry_price")
    )
    big_bad = replace(big, positions=bad_pos)
    assert screen.validate(big, now).ok, "the benchmark book must be clean"
    assert screen.validate(big_bad, now).quarantine.height == 1

    pos, _ = screen._with_accounts(big.positions, big.balances, big.ticks)
    values = {"known_instruments": screen.known_instruments}
    gx_pos = time_calls(lambda: suites.run("positions", pos, values), repeat=5)
    gx_10k = time_calls(lambda: always.validate(big, now), repeat=3)
    scr_10k = time_calls(lambda: screen.validate(big, now), repeat=15)
    scr_10k_bad = time_calls(lambda: screen.validate(big_bad, now), repeat=5)
    scr_100 = time_calls(lambda: screen.validate(small, now), repeat=30)
    gx_100 = time_calls(lambda: always.validate(small, now), repeat=10)
    return {
        "gx_positions_200k_ms": ms(p(gx_pos, 50)),
        "gx_snapshot_10k_ms": ms(p(gx_10k, 50)),
        "screen_snapshot_10k_ms": ms(p(scr_10k, 50)),
        "screen_snapshot_10k_p99_ms": ms(p(scr_10k, 99)),
        "screen_snapshot_10k_bad_ms": ms(p(scr_10k_bad, 50)),
        "screen_snapshot_100_ms": ms(p(scr_100, 50)),
        "screen_snapshot_100_p99_ms": ms(p(scr_100, 99)),
        "gx_snapshot_100_ms": ms(p(gx_100, 50)),
        "gx_over_screen_10k": round(float(np.median(gx_10k) / np.median(scr_10k)), 2),
    }
