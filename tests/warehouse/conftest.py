"""Fixtures for warehouse tests: a migrated warehouse per test, copied from one template."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from risklib.clock import FixedClock
from risklib.warehouse import Warehouse
from warehouse_builders import T0


@pytest.fixture(scope="session")
def template_warehouse(tmp_path_factory) -> Path:
    """A freshly migrated, empty warehouse folder (migrating once per session keeps tests fast)."""
    root = tmp_path_factory.mktemp("wh-template") / "wh"
    Warehouse.open(root, clock=FixedClock(T0)).close()
    return root


@pytest.fixture
def wh_path(template_warehouse, tmp_path) -> Path:
    dest = tmp_path / "wh"
    shutil.copytree(template_warehouse, dest)
    return dest


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def wh(wh_path, clock):
    w = Warehouse.open(wh_path, clock=clock)
    yield w
    w.close()
