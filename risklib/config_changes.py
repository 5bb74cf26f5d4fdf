"""Threshold and config changes made at run time (``PUT /api/risk/thresholds``, ``PUT /api/risk/config``).

A change names a setting by its dotted path in :class:`~risklib.config.RiskConfig`
(``policy.drawdown.levels[1].threshold``; ``policy.drawdown.levels.1.threshold``
is the same key) and gives a new JSON value. A change is valid only if the whole
config, with it applied, validates again; the error names key and value in the
config loaders' words (``policy.var.levels[0].threshold=15: must be a fraction in
(0, 1); did you mean 0.15?``).

Changes are recorded in the ``threshold_changes`` table (``key``, ``old_value``,
``new_value`` as JSON text, ``operator``, ``reason``, ``at``, ``authority_level``).
The pipeline calls :func:`apply_threshold_changes` each cycle to pick up changes
made since it started. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import polars as pl
from pydantic import ValidationError

from risklib.config import SECTIONS, RiskConfig
from risklib.core.policy import PolicyConfig
from risklib.errors import AuthorityError, ConfigError

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
#: Keys under these prefixes change who may do what: only the highest authority may change them.
_AUTHORITY_KEYS = ("policy.authority", "policy.breaker.reset_authority")


def parse_key(key: str) -> tuple[str | int, ...]:
    """Split a dotted key into path parts; ``[i]`` and ``.i`` both give the integer ``i``
    (a list index, or an integer dict key such as an authority level).

    Raises
    ------
    ConfigError
        For an empty or malformed key, or a first part that is not a config section.
    """
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"key={key!r}: must be a dotted path such as 'policy.drawdown.levels[1].threshold'")
    pos, parts = 0, []
    for m in _PART.finditer(key):
        gap = key[pos:m.start()]
        if gap not in ("", "."):
            raise ConfigError(f"key={key!r}: malformed near {gap!r}")
        name = m.group(1)
        parts.append(int(name) if name is not None and name.isdigit() else name if name is not None else int(m.group(2)))
        pos = m.end()
    if key[pos:] or not parts:
        raise ConfigError(f"key={key!r}: malformed near {key[pos:]!r}")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"key={key!r}: unknown section {parts[0]!r}; known: {list(SECTIONS)}")
    return tuple(parts)


def format_key(path: tuple[str | int, ...]) -> str:
    """The canonical spelling of a key (``[i]`` for list indices)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _child(node: Any, part: str | int, key: str) -> Any:
    if isinstance(node, list):
        i = part if isinstance(part, int) else int(part) if str(part).isdigit() else None
        if i is None or not 0 <= i < len(node):
            raise ConfigError(f"key={key!r}: index {part!r} out of range (list of {len(node)})")
        return i
    if isinstance(node, dict):
        name = str(part)
        if name not in node:
            known = sorted(map(str, node))[:20]
            raise ConfigError(f"key={key!r}: unknown setting {name!r}; known here: {known}")
        return name
    raise ConfigError(f"key={key!r}: {part!r} is below a plain value")


def get_value(doc: dict, key: str) -> Any:
    """The JSON value at ``key`` in a ``RiskConfig.model_dump(mode='json')`` document."""
    node: Any = doc
    for part in parse_key(key):
        node = node[_child(node, part, key)]
    return node


def _set_value(doc: dict, key: str, value: Any) -> None:
    path = parse_key(key)
    node: Any = doc
    for part in path[:-1]:
        node = node[_child(node, part, key)]
    node[_child(node, path[-1], key)] = value


def _format_errors(exc: ValidationError, changed: dict[str, Any]) -> str:
    """One line per error: ``key=value: problem`` (our validators already start with ``field=value``)."""
    lines = []
    for err in exc.errors():
        path = format_key(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        head = msg.split(":")[0]
        if err["type"] == "value_error" and ("=" in head or head.isidentifier()):
            lines.append(f"{path}.{msg}" if path else msg)
        else:
            value = changed.get(path, err.get("input"))
            lines.append(f"{path}={json.dumps(value, default=str)}: {msg}")
    return "; ".join(lines)


def apply_changes(config: RiskConfig, changes: list[tuple[str, Any]]) -> RiskConfig:
    """Apply ``(key, value)`` changes in order and re-validate the whole config.

    Parameters
    ----------
    config
        The config in force.
    changes
        Keys as in :func:`parse_key`, values as JSON-compatible Python values.

    Returns
    -------
    RiskConfig
        The new config (``config`` itself when ``changes`` is empty).

    Raises
    ------
    ConfigError
        Naming key and value: unknown key, or a value the config's validators refuse.
    """
    if not changes:
        return config
    doc = config.model_dump(mode="json")
    changed: dict[str, Any] = {}
    for key, value in changes:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: must be a finite number")
        _set_value(doc, key, value)
        changed[format_key(parse_key(key))] = value
    try:
        return RiskConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, changed)) from None


def apply_threshold_changes(config: RiskConfig, changes: pl.DataFrame) -> RiskConfig:
    """The config in force after the recorded changes (rows of ``threshold_changes``).

    Parameters
    ----------
    config
        The config the pipeline started with (defaults or the loaded file).
    changes
        Rows with ``key`` and ``new_value`` (JSON text), applied in ``at`` order when
        that column is present (later changes of a key win), else in row order.

    Returns
    -------
    RiskConfig
        The effective config; ``config`` itself when there are no changes.

    Raises
    ------
    ConfigError
        A recorded change no longer applies (key and value named); the caller keeps the
        config it has rather than guess.
    """
    if changes.height == 0:
        return config
    rows = changes.sort("at", maintain_order=True) if "at" in changes.columns else changes
    pairs = []
    for key, text in zip(rows["key"].to_list(), rows["new_value"].to_list()):  # few rows: one per change
        try:
            pairs.append((key, json.loads(text) if text is not None else None))
        except json.JSONDecodeError:
            raise ConfigError(f"{key}={text!r}: recorded new_value is not JSON") from None
    return apply_changes(config, pairs)


def check_change_authority(key: str, old: Any, new: Any, authority_level: int, policy: PolicyConfig) -> None:
    """Refuse a change beyond the authority of its level (spec "Override Authority Levels").

    Numeric settings may move by at most the level's ``max_threshold_change`` (relative:
    Level 1 Risk Manager "threshold adjustments up to 20%"). A change that cannot be
    measured that way (non-numeric, or from 0) needs the level with the largest
    ``max_threshold_change`` (Level 4 by default, "complete system override"); keys that
    change who may do what (``policy.authority``, ``policy.breaker.reset_authority``)
    need Level 5.

    Raises
    ------
    AuthorityError
        Naming key, values and level.
    """
    if authority_level not in policy.authority:
        raise AuthorityError(f"authority_level={authority_level!r}: must be 1-5")
    auth = policy.authority[authority_level]
    canon = format_key(parse_key(key))
    if canon.startswith(_AUTHORITY_KEYS):
        top = max(policy.authority)
        if authority_level < top:
            raise AuthorityError(f"{canon}: changing authority settings needs authority_level={top}, "
                                 f"got {authority_level} ({auth.role})")
        return
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if numeric and old != 0:
        change = abs(new / old - 1.0)
        if change > auth.max_threshold_change + 1e-12:
            raise AuthorityError(f"{canon}={new!r}: change of {change:.0%} from {old!r} exceeds "
                                 f"{auth.max_threshold_change:.0%} for authority_level={authority_level} ({auth.role})")
        return
    if old == new:
        return
    widest = max(a.max_threshold_change for a in policy.authority.values())
    need = min(lvl for lvl, a in policy.authority.items() if a.max_threshold_change >= widest)
    if authority_level < need:
        raise AuthorityError(f"{canon}={json.dumps(new, default=str)}: a change not measurable as a percentage "
                             f"(from {json.dumps(old, default=str)}) needs authority_level>={need}, "
                             f"got {authority_level} ({auth.role})")
