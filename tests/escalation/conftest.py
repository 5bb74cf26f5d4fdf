"""Fixtures for escalation tests: a migrated warehouse per test, fake providers, notifiers wired to them."""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.fakes` importable under any rootdir

from esc_builders import T0  # noqa: E402
from risklib.adapters.notifiers import Credentials, OutboxSender, Secret, build_notifiers  # noqa: E402
from risklib.clock import FixedClock  # noqa: E402
from risklib.core.escalation import EscalationConfig, RetryPolicy  # noqa: E402
from tests.fakes import FakeSendGrid, FakeTwilio  # noqa: E402


@pytest.fixture(scope="session")
def esc_template_warehouse(tmp_path_factory) -> Path:
    from risklib.warehouse import Warehouse

    root = tmp_path_factory.mktemp("esc-wh-template") / "wh"
    Warehouse.open(root, clock=FixedClock(T0)).close()
    return root


@pytest.fixture
def wh_path(esc_template_warehouse, tmp_path) -> Path:
    dest = tmp_path / "wh"
    shutil.copytree(esc_template_warehouse, dest)
    return dest


@pytest.fixture
def wh(wh_path):
    from risklib.warehouse import Warehouse

    w = Warehouse.open(wh_path, clock=FixedClock(T0))
    yield w
    w.close()


@pytest.fixture(scope="session")
def creds() -> Credentials:
    """Random credentials per session (the secret scan looks for exactly these)."""
    return Credentials(
        twilio_account_sid=Secret("AC" + secrets.token_hex(16)),
        twilio_auth_token=Secret(secrets.token_hex(16)),
        twilio_from_number="+15555550199",
        sendgrid_api_key=Secret("SG." + secrets.token_urlsafe(24)),
        sendgrid_from_email="risk-alerts@example.com",
    )


@pytest.fixture
def twilio(creds):
    fake = FakeTwilio(creds.twilio_account_sid.get(), creds.twilio_auth_token.get())
    yield fake
    fake.down()


@pytest.fixture
def sendgrid(creds):
    fake = FakeSendGrid(creds.sendgrid_api_key.get())
    yield fake
    fake.down()


@pytest.fixture
def config() -> EscalationConfig:
    # Short timeouts and no inline sleeping: tests drive retries with explicit `now`s.
    return EscalationConfig(retry=RetryPolicy(request_timeout_s=0.5, drain_budget_s=0.0))


@pytest.fixture
def notifiers(config, creds, twilio, sendgrid, tmp_path):
    return build_notifiers(config, creds, twilio_api_base=twilio.url, sendgrid_api_base=sendgrid.url,
                           console_path=tmp_path / "outbox.jsonl")


@pytest.fixture
def sender(wh, notifiers, config, creds) -> OutboxSender:
    return OutboxSender(wh, notifiers, config, secrets=creds.secrets(), sleep=lambda s: None)
