"""The simulated world runs between cycles: advancing first, then reading, sees the same market."""

from __future__ import annotations

from datetime import timedelta

from risklib.adapters.feeds import SimulatedFeed
from risklib.config import load_config
from risklib.cycle.session import SIM_START


def _feed(seed: int = 3) -> SimulatedFeed:
    sim = load_config().pipeline.simulator
    return SimulatedFeed(sim, scenario="flash-crash", seed=seed, start=SIM_START, accounts=20)


def test_advancing_before_the_snapshot_gives_the_snapshot_a_direct_read_gives():
    direct, ahead = _feed(), _feed()
    for k in range(1, 5):
        now = SIM_START + timedelta(minutes=5 * k)
        a = direct.snapshot(now)
        ahead.advance(now)
        ahead.advance(now)  # a second call for the same time does nothing
        b = ahead.snapshot(now)
        assert a.ticks.equals(b.ticks)
        assert a.bars.equals(b.bars)
        assert a.positions.sort(["account_id", "strategy", "instrument"]).equals(
            b.positions.sort(["account_id", "strategy", "instrument"])
        )
        assert a.bars.height > 0
