"""The pure core (``risklib/core``) never touches I/O or reads the clock: time and data are passed in.

Read from the source, so a new module is checked as soon as it exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "risklib" / "core"

#: Modules whose import means I/O, the clock, or a layer above the core.
FORBIDDEN_MODULES = (
    "os", "io", "sys", "time", "pathlib", "tomllib", "json", "socket", "subprocess", "shutil", "tempfile",
    "logging", "threading", "asyncio", "duckdb", "prefect", "httpx", "requests", "twilio", "sendgrid",
    "risklib.adapters", "risklib.cycle", "risklib.api", "risklib.cli", "risklib.config", "risklib.config_files",
    "risklib.clock", "risklib.warehouse", "flows",
)
#: Calls that read the clock or a file, whatever they were imported as.
FORBIDDEN_CALLS = ("open", "now", "today", "utcnow", "read_text", "read_bytes", "write_text", "write_bytes",
                   "read_csv", "read_parquet", "write_parquet", "perf_counter", "monotonic")


def _core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        found += [f"line {node.lineno}: imports {n}" for n in names
                  if any(n == m or n.startswith(m + ".") for m in FORBIDDEN_MODULES)]
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: calls {name}()")
    return found


def test_the_checker_finds_file_reads_clock_reads_and_forbidden_imports(tmp_path):
    # Arrange: what the config modules did before their files were read outside the core
    bad = tmp_path / "bad.py"
    bad.write_text("import tomllib\nfrom pathlib import Path\nfrom datetime import datetime\n"
                   "def f(p):\n    return tomllib.loads(Path(p).read_text()), datetime.now()\n")
    # Act
    found = _problems(bad)
    # Assert
    assert sorted(found) == ["line 1: imports tomllib", "line 2: imports pathlib", "line 5: calls now()", "line 5: calls read_text()"]


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_does_no_io_and_reads_no_clock(path):
    assert _problems(path) == []
