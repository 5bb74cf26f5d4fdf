"""Fixtures for the control-plane API: a real DuckLake warehouse holding two recorded cycles."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

from api_builders import T0, make_client, record_cycle  # noqa: F401
from risklib.clock import FixedClock
from risklib.warehouse import Warehouse


@pytest.fixture(scope="session")
def wh_template(tmp_path_factory):
    """A migrated warehouse with two cycles, built once; each test works on its own copy."""
    path = tmp_path_factory.mktemp("api") / "wh"
    with Warehouse.open(path) as w:
        # An older cycle with other numbers, then the newest one the API must serve.
        record_cycle(w, "c1", T0 - timedelta(seconds=300), metrics={"equity": (900_000.0, 1_900_000.0),
                                                                     "var_99": (0.003, 0.003)})
        record_cycle(w, "c2", T0)
    return path


@pytest.fixture
def wh(tmp_path, wh_template):
    shutil.copytree(wh_template, tmp_path / "wh")
    w = Warehouse.open(tmp_path / "wh")
    yield w
    w.close()


@pytest.fixture
def clock():
    return FixedClock(T0 + timedelta(seconds=10))


@pytest.fixture
def client(wh, clock):
    return make_client(wh, clock)
