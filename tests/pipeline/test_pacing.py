"""The monitor's pacing between cycles: the policy's interval, bounded by the machinery's rate."""

from __future__ import annotations

import pytest

from risklib.cycle.session import pacing

PERIOD = 0.27


@pytest.mark.parametrize(
    ("budget", "elapsed", "gap", "idle", "overran"),
    [
        (0.0, 0.10, 0.0, 0.17, False),   # continuous: the next cycle starts one period after this one did
        (0.0, 0.50, 0.0, 0.0, False),    # continuous, slower than the period: no pause at all
        (300.0, 0.50, 0.0, 299.5, False),  # normal cadence: sleep out the interval
        (0.30, 0.50, 0.0, 0.0, True),    # an interval the machinery allows, missed: reported
        (0.0, 0.50, 0.10, 0.10, False),  # an explicit gap is kept after every cycle
    ],
)
def test_pacing(budget, elapsed, gap, idle, overran):
    # Act
    got_idle, got_overran = pacing(budget, elapsed, PERIOD, gap)
    # Assert
    assert got_idle == pytest.approx(idle) and got_overran is overran
