"""Warehouse settings: location, retention tiers, inlining and compaction.

Defaults live in ``risklib/defaults/warehouse.toml`` (the ``[warehouse]`` section);
:func:`load_config` validates them into a frozen :class:`WarehouseConfig`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, ValidationError, model_validator

from risklib.config_files import read_section
from risklib.errors import ConfigError

#: The project's root (the folder holding ``warehouse/`` and ``risklib/``).
PROJECT_ROOT = Path(__file__).resolve().parents[3]
#: SQL shipped with the project: migrations and analyst views.
SQL_ROOT = PROJECT_ROOT / "warehouse"
MIGRATIONS_DIR = SQL_ROOT / "migrations"
VIEWS_DIR = SQL_ROOT / "views"
#: Where the data lives when nothing else says.
DEFAULT_LOCATION = SQL_ROOT / "data"
ENV_LOCATION = "RISK_WAREHOUSE"


class RetentionConfig(BaseModel):
    """Retention tiers in days (spec: metrics 1 y, alerts 2 y, emergency actions 5 y, audit complete)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    risk_metrics_days: PositiveInt = 365
    alerts_days: PositiveInt = 730
    emergency_actions_days: PositiveInt = 1825
    quarantine_days: PositiveInt = 365
    audit_days: NonNegativeInt = 0  # 0 = keep forever
    rollup_after_days: PositiveInt = 30

    @model_validator(mode="after")
    def _check_order(self) -> "RetentionConfig":
        if self.rollup_after_days >= self.risk_metrics_days:
            raise ValueError(
                f"rollup_after_days={self.rollup_after_days}: must be < risk_metrics_days={self.risk_metrics_days}"
            )
        longest = max(self.risk_metrics_days, self.alerts_days, self.emergency_actions_days, self.quarantine_days)
        if self.audit_days and self.audit_days < longest:
            # The audit trail must outlive every record it explains.
            raise ValueError(f"audit_days={self.audit_days}: must be 0 (forever) or >= the longest tier ({longest})")
        return self


class CompactionConfig(BaseModel):
    """DuckLake maintenance run by the retention flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    flush_inlined: bool = True
    merge_adjacent_files: bool = True
    expire_snapshots_older_than_days: NonNegativeInt = 7
    cleanup_files_older_than_days: NonNegativeInt = 1


class WarehouseConfig(BaseModel):
    """The ``[warehouse]`` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    location: str = ""
    data_path: str = ""
    data_inlining_row_limit: NonNegativeInt = 0  # see risklib/defaults/warehouse.toml
    writer_lock_timeout_s: PositiveFloat = 10.0
    threads: NonNegativeInt = 0
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)


def load_config(path: str | Path | None = None) -> WarehouseConfig:
    """Read and validate the ``[warehouse]`` section of ``path`` (default: the shipped defaults).

    Raises
    ------
    ConfigError
        The file is missing or malformed, or a key is unknown or out of range; the
        message names the file, the key and the value.
    """
    section, file = read_section(path, "warehouse")
    try:
        return WarehouseConfig.model_validate(section)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(["warehouse", *map(str, err["loc"])])
        raise ConfigError(f"{file.name}: {key}={err.get('input')!r}: {err['msg']}") from exc


def resolve_location(location: str | Path | None, config: WarehouseConfig) -> str:
    """The warehouse location in force: explicit argument, then ``$RISK_WAREHOUSE``, then config, then default."""
    for candidate in (location, os.environ.get(ENV_LOCATION), config.location):
        if candidate not in (None, ""):
            return str(candidate)
    return str(DEFAULT_LOCATION)
