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
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from risklib.adapters.feeds import PipelineConfig, load_pipeline_config
from risklib.adapters.warehouse import WarehouseConfig
from risklib.adapters.warehouse import load_config as load_warehouse_config
from risklib.core.escalation import EscalationConfig
from risklib.core.escalation import load_config as load_escalation_config
from risklib.core.metrics import MetricsConfig
from risklib.core.policy import PolicyConfig, load_policy_config
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
        try:
            doc = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config={str(p)!r}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config={str(p)!r}: not valid TOML: {exc}") from None
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
