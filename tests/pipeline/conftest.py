"""Builders for pipeline tests: small simulated sessions on real DuckLake warehouses under tmp_path."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from risklib.config import load_config
from risklib.cycle.config import MonitorConfig


@pytest.fixture
def fast_config():
    """The shipped config, but no wall-clock gap between cycles (tests run at full speed)."""
    cfg = load_config()
    return cfg.model_copy(update={"monitor": MonitorConfig(min_cycle_gap_s=0.0, min_cycle_period_s=0.0)})


@pytest.fixture
def make_session(tmp_path: Path, fast_config):
    """Build a simulated session; closes every session built at teardown."""
    from risklib.cycle.session import Session

    built = []

    def build(scenario: str = "calm", *, accounts: int = 12, seed: int = 3, config=None, warehouse: Path | None = None):
        session = Session.build(
            config=config or fast_config,
            scenario=scenario,
            accounts=accounts,
            seed=seed,
            speed=1e9,  # simulated time runs as fast as the cycles do
            warehouse=warehouse or tmp_path / f"wh-{len(built)}",
            console_path=tmp_path / "console.jsonl",
            notify_stream=io.StringIO(),
        )
        built.append(session)
        return session

    yield build
    for s in built:
        s.close()
