"""Escalation rules (pure): who is told what, on which channel, and when.

Levels map to channels and recipient tiers (config); an incident is one
conversation (first message, update when its level rises, one resolution
notice); unacknowledged incidents climb the escalation chain and repeat;
level 4-5 incidents inhibit lower-level noise for the same account; many
accounts tripping the same rule in one cycle become one message.
"""

from risklib.core.escalation._config import (
    PROVIDER_CHANNELS,
    AckPolicy,
    EscalationConfig,
    LevelPolicy,
    Member,
    RetryPolicy,
    escalation_from_dict,
)
from risklib.core.escalation._format import (
    email_html,
    format_email,
    format_sms,
    format_voice,
    parse_ack,
    reply_code,
    to_gsm7,
)
from risklib.core.escalation._plan import (
    ACKS,
    DASHBOARD_CHANNEL,
    DASHBOARD_RECIPIENT,
    INCIDENT_EVENTS,
    KINDS_NEEDING_ACK,
    NOTIFICATION_EVENTS,
    NOTIFICATIONS,
    OPEN_INCIDENTS,
    EscalationPlan,
    plan_escalation,
)
from risklib.core.escalation._retry import backoff_s

__all__ = [
    "ACKS",
    "DASHBOARD_CHANNEL",
    "DASHBOARD_RECIPIENT",
    "INCIDENT_EVENTS",
    "KINDS_NEEDING_ACK",
    "NOTIFICATIONS",
    "NOTIFICATION_EVENTS",
    "OPEN_INCIDENTS",
    "PROVIDER_CHANNELS",
    "AckPolicy",
    "EscalationConfig",
    "EscalationPlan",
    "LevelPolicy",
    "Member",
    "RetryPolicy",
    "backoff_s",
    "email_html",
    "escalation_from_dict",
    "format_email",
    "format_sms",
    "format_voice",
    "parse_ack",
    "plan_escalation",
    "reply_code",
    "to_gsm7",
]
