"""Notifiers (console, SendGrid email, Twilio SMS/voice) and the outbox sender.

:func:`build_notifiers` chooses, in one place, the real providers when their
credentials are present and the console/file notifier otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from risklib.adapters.notifiers._base import Credentials, Notifier, OutboundMessage, Secret, load_credentials, redact
from risklib.adapters.notifiers._console import ConsoleNotifier
from risklib.adapters.notifiers._dispatch import PageDispatcher
from risklib.adapters.notifiers._local import LocalOutbox, OutboxInUse, claim_outbox, outbox_directory
from risklib.adapters.notifiers._outbox import DrainReport, OutboxSender, PlannedSends
from risklib.adapters.notifiers._render import email_parts, voice_twiml
from risklib.adapters.notifiers._state import (
    EscalationStateCache,
    append_many,
    incident_view,
    incidents_for_code,
    known_incidents,
    load_escalation_state,
    record_ack,
    record_plan,
    record_rejection,
    run_escalation,
)
from risklib.core.escalation import EscalationConfig

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def build_notifiers(
    config: EscalationConfig,
    credentials: Credentials | None = None,
    *,
    twilio_api_base: str | None = None,
    sendgrid_api_base: str | None = None,
    console_path: str | Path | None = None,
) -> dict[str, Notifier]:
    """Notifier per channel: Twilio for sms/voice and SendGrid for email when configured, console otherwise.

    The console notifier prints exactly what would be sent and appends it to
    ``console_path`` (default ``config.console_jsonl`` under the project).
    """
    from risklib.adapters.notifiers._sendgrid import SendGridNotifier
    from risklib.adapters.notifiers._twilio import TwilioNotifier

    creds = credentials if credentials is not None else load_credentials(config)
    path = Path(console_path) if console_path is not None else PROJECT_ROOT / config.console_jsonl
    base = config.public_base_url.rstrip("/")
    console = ConsoleNotifier(path, gather_url=base + "/webhooks/twilio/voice/gather?code={code}&nid={nid}",
                              digit=config.ack.voice_ack_digit)
    out: dict[str, Notifier] = {"console": console}
    if creds.has_twilio:
        tw = TwilioNotifier(creds, public_base_url=base, api_base=twilio_api_base,
                            timeout_s=config.retry.request_timeout_s, digit=config.ack.voice_ack_digit)
        out["sms"] = tw
        out["voice"] = tw
    if creds.has_sendgrid:
        out["email"] = SendGridNotifier(creds, api_base=sendgrid_api_base, timeout_s=config.retry.request_timeout_s)
    return out


def make_sender(warehouse, config: EscalationConfig, notifiers: Mapping[str, Notifier] | None = None,
                credentials: Credentials | None = None) -> OutboxSender:
    """An :class:`OutboxSender` with :func:`build_notifiers`' choice and secret redaction wired in."""
    creds = credentials if credentials is not None else load_credentials(config)
    return OutboxSender(warehouse, notifiers if notifiers is not None else build_notifiers(config, creds), config,
                        secrets=creds.secrets())


__all__ = [
    "ConsoleNotifier",
    "Credentials",
    "DrainReport",
    "EscalationStateCache",
    "LocalOutbox",
    "OutboxInUse",
    "claim_outbox",
    "outbox_directory",
    "Notifier",
    "OutboundMessage",
    "OutboxSender",
    "PageDispatcher",
    "PlannedSends",
    "Secret",
    "append_many",
    "build_notifiers",
    "email_parts",
    "incident_view",
    "incidents_for_code",
    "known_incidents",
    "load_credentials",
    "load_escalation_state",
    "make_sender",
    "record_ack",
    "record_plan",
    "record_rejection",
    "redact",
    "run_escalation",
    "voice_twiml",
]
