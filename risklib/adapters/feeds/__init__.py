"""Feeds: the :class:`Feed` interface, the simulated market (the embedded default) and file replay."""

from ._base import Feed, Snapshot, bars_schema, empty_bars
from ._config import (
    BrokerConfig,
    GroupConfig,
    PipelineConfig,
    SimulatorConfig,
    ValidationConfig,
    load_pipeline_config,
)
from ._market import MarketSimulator, breakdown_correlation, calm_correlation, stress_correlation
from ._replay import FileReplayFeed
from ._simulated import DENIALS, Gate, SimulatedFeed, StrategyActivity, generate_book, var99_quantile

__all__ = [
    "DENIALS",
    "BrokerConfig",
    "Feed",
    "FileReplayFeed",
    "Gate",
    "GroupConfig",
    "MarketSimulator",
    "PipelineConfig",
    "SimulatedFeed",
    "SimulatorConfig",
    "Snapshot",
    "StrategyActivity",
    "ValidationConfig",
    "bars_schema",
    "breakdown_correlation",
    "calm_correlation",
    "empty_bars",
    "generate_book",
    "load_pipeline_config",
    "stress_correlation",
    "var99_quantile",
]
