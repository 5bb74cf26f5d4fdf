"""The one risk config file: every threshold, ladder, channel and retention tier.

A config file is TOML with one table per area; every table is optional and
falls back to the shipped defaults (the spec's values, each documented with its
source in ``risklib/defaults/<area>.toml``)::

    [metrics]     windows, annualisation, risk-score mappings
    [policy]      ladders, breaker, risk levels, sizing, gate limits
    [escalation]  levels → channels, teams, tiers, waits, retries
    [warehouse]   location, retention tiers, compaction
    [pipeline]    staleness, simulator, paper broker, validation
    [monitor]     loop bounds (gap between cycles, warm-up, heartbeat age)

A bad value fails at load with a :class:`~risklib.errors.ConfigError` naming
the key and the value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from risklib.adapters.feeds import PipelineConfig, load_pipeline_config
from risklib.adapters.warehouse import WarehouseConfig
from risklib.adapters.warehouse import load_config as load_warehouse_config
from risklib.config_files import DEFAULTS_DIR, read_section, read_toml
from risklib.core.escalation import EscalationConfig, escalation_from_dict
from risklib.core.metrics import MetricsConfig
from risklib.core.policy import PolicyConfig, policy_from_dict
from risklib.cycle.config import MonitorConfig
from risklib.errors import ConfigError

SECTIONS = ("metrics", "policy", "escalation", "warehouse", "pipeline", "monitor")


class RiskConfig(BaseModel):
    """Every area's settings, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    metrics: MetricsConfig = MetricsConfig()
    policy: PolicyConfig
    escalation: EscalationConfig
    warehouse: WarehouseConfig
    pipeline: PipelineConfig
    monitor: MonitorConfig = MonitorConfig()

    def fingerprint(self) -> str:
        """A short hash of the effective settings (recorded with every session)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]

    def flat(self) -> dict[str, str]:
        """Every setting as ``section.key.path -> JSON value`` (for threshold-change audits)."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: object) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}", v)
            else:
                out[prefix] = json.dumps(value, sort_keys=True, default=str)

        for section in SECTIONS:
            walk(section, getattr(self, section).model_dump(mode="json"))
        return out


def load_policy_config(source: Mapping[str, Any] | Path | str | None = None) -> PolicyConfig:
    """The policy: ``None`` for the shipped defaults (``risklib/defaults/policy.toml``), a path to a
    TOML file whose ``[policy]`` table is read, or the ``[policy]`` table itself as a dict.

    A file or dict is complete on its own; to change a few values start from
    :func:`default_policy_dict`.

    Raises
    ------
    ConfigError
        The file is missing, not TOML or has no ``[policy]`` table, or a key/value is
        invalid (named, e.g. ``policy.drawdown.levels[2].threshold=15: ...``).
    """
    if source is None:
        source = DEFAULTS_DIR / "policy.toml"
    if isinstance(source, (str, Path)):
        doc = read_toml(source)
        if "policy" not in doc:
            raise ConfigError(f"config={str(source)!r}: no [policy] table")
        source = doc["policy"]
    return policy_from_dict(source)


def default_policy_dict() -> dict[str, Any]:
    """The shipped ``[policy]`` table as a plain dict (a starting point for edited configs)."""
    return read_toml(DEFAULTS_DIR / "policy.toml")["policy"]


def load_escalation_config(path: str | Path | None = None) -> EscalationConfig:
    """The ``[escalation]`` section of ``path`` (default: the shipped defaults).

    Raises
    ------
    ConfigError
        Missing or malformed file, or an unknown or out-of-range key; the message names
        the file, the key and the value.
    """
    section, file = read_section(path, "escalation")
    try:
        return escalation_from_dict(section)
    except ConfigError as exc:
        raise ConfigError(f"{file.name}: {exc}") from None


def _section_model(model: type[BaseModel], data: dict, name: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errs = "; ".join(f"{name}.{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in exc.errors())
        raise ConfigError(errs) from None


def load_config(path: str | Path | None = None) -> RiskConfig:
    """Load the risk config from ``path`` (None: the shipped defaults).

    Raises
    ------
    ConfigError
        Missing or malformed file, unknown table, or a bad key/value (named).
    """
    doc: dict = {}
    if path is not None:
        p = Path(path)
        doc = read_toml(p)
        unknown = sorted(set(doc) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"config={str(p)!r}: unknown table(s) {unknown}; known: {list(SECTIONS)}")
    src = Path(path) if path is not None else None
    return RiskConfig(
        metrics=_section_model(MetricsConfig, doc.get("metrics", {}), "metrics"),
        policy=load_policy_config(doc["policy"] if "policy" in doc else None),
        escalation=load_escalation_config(src if "escalation" in doc else None),
        warehouse=load_warehouse_config(src if "warehouse" in doc else None),
        pipeline=load_pipeline_config(src if "pipeline" in doc else None),
        monitor=_section_model(MonitorConfig, doc.get("monitor", {}), "monitor"),
    )
