"""Analyst notebooks run top to bottom against a warehouse a real session filled."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from flows.monitor import risk_monitor

pytestmark = pytest.mark.integration

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def filled_warehouse(tmp_path_factory, prefect_api):
    """A flash-crash session's audit history: incidents, pages, actions, quarantine."""
    import io

    from risklib.config import load_config
    from risklib.cycle.config import MonitorConfig
    from risklib.cycle.session import Session

    root = tmp_path_factory.mktemp("nb")
    cfg = load_config()
    cfg = cfg.model_copy(update={"monitor": MonitorConfig(min_cycle_gap_s=0.0, min_cycle_period_s=0.0)})
    session = Session.build(
        config=cfg, scenario="flash-crash", accounts=10, seed=5, speed=1e9,
        warehouse=root / "wh", console_path=root / "console.jsonl", notify_stream=io.StringIO(),
    )
    try:
        risk_monitor(session, max_cycles=6)
    finally:
        session.close()
    return root / "wh"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_clean_against_a_filled_warehouse(path, filled_warehouse, monkeypatch):
    # Arrange
    monkeypatch.setenv("RISK_WAREHOUSE", str(filled_warehouse))
    nb = nbformat.read(path, as_version=4)
    # Act
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    # Assert: every code cell ran, none raised, and the consistency checks printed their verdict
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "audit chain intact" in text


def test_there_is_at_least_one_notebook():
    assert NOTEBOOKS, "notebooks/ holds no analyst notebook"
