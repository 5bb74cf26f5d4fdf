"""Fixtures for policy tests (builders live in ``policy_builders``)."""

from __future__ import annotations

import pytest
from policy_builders import T0

from risklib.config import load_policy_config


@pytest.fixture(scope="session")
def cfg():
    return load_policy_config(None)


@pytest.fixture
def now():
    return T0
