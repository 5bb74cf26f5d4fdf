"""Reading the TOML config files: one reader for every area, with the same errors.

The core validates plain data (``policy_from_dict``, ``escalation_from_dict``) and
never opens a file; the loaders outside it read the file here and hand it the
area's table.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from risklib.errors import ConfigError

#: The shipped defaults: one file per area, the spec's values, each with its source.
DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"


def read_toml(path: str | Path) -> dict[str, Any]:
    """The whole TOML document at ``path``.

    Raises
    ------
    ConfigError
        ``config='<path>': file not found`` or ``config='<path>': not valid TOML: ...``.
    """
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config={str(p)!r}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config={str(p)!r}: not valid TOML: {exc}") from None


def read_section(path: str | Path | None, section: str) -> tuple[dict[str, Any], Path]:
    """The ``[section]`` table of ``path`` (None: the shipped ``<section>.toml``), ``{}`` when absent;
    and the file it came from (for error messages)."""
    p = Path(path) if path is not None else DEFAULTS_DIR / f"{section}.toml"
    return dict(read_toml(p).get(section, {})), p
