"""Local fake provider servers (Twilio, SendGrid) for tests and benchmarks."""

from tests.fakes._server import Behaviour, FakeServer, Recorded
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio

__all__ = ["Behaviour", "FakeSendGrid", "FakeServer", "FakeTwilio", "Recorded"]
