"""Builders for feed tests: a session start and small simulated feeds."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from risklib.adapters.feeds import SimulatedFeed, SimulatorConfig

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def start() -> datetime:
    return START


@pytest.fixture
def make_feed():
    """``make_feed(scenario="calm", seed=0, accounts=20, gate=None, **config)``."""

    def build(scenario="calm", seed=0, accounts=20, gate=None, **config):
        return SimulatedFeed(SimulatorConfig(**config), scenario=scenario, seed=seed, start=START, accounts=accounts, gate=gate)

    return build
