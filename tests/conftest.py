"""Fixtures shared by every test area: a fixed clock and one real Prefect API for the session."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

# Quiet, fast Prefect for tests: no flow-run heartbeat thread (it costs ~1 s per
# flow run), no progress bars from validation, logs to the console only on warnings.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Two test workers run side by side: a monitor placing its cycles on "its" CPU would put both on
# the same one. The placement tests set RISK_MONITOR_CPUS themselves.
os.environ.setdefault("RISK_MONITOR_CPUS", "0")

from risklib.clock import FixedClock  # noqa: E402

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def fixed_clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API (temporary server with its own SQLite database) for the whole session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield
