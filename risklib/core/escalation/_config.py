"""Escalation policy as data: channels per level, teams, escalation tiers, timers, delivery.

Defaults follow the real-time risk design ("RT", "Alert Levels", "Drawdown
Management", "Emergency Stop Protocol") and the institutional architecture
("INST", "Contact Hierarchy"). Values the spec does not give are marked
"chosen". Where the spec's prose and listings disagree the more protective
reading is the default and the comment beside it says so.

Units: seconds are seconds; counts are counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from risklib.errors import ConfigError

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: Channels a message can go out on. ``dashboard`` is written to the warehouse only
#: (the dashboard and ``GET /api/alerts/active`` read it); the others call a provider.
ChannelName = Literal["email", "sms", "voice", "dashboard"]
PROVIDER_CHANNELS: tuple[str, ...] = ("voice", "sms", "email")
TeamName = str


class Member(BaseModel):
    """One person on the rota. Addresses are placeholders in the shipped defaults."""

    model_config = _FROZEN
    name: str = Field(min_length=1)
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(None, pattern=r"^\+[1-9][0-9]{6,14}$")  # E.164

    def address(self, channel: str) -> str | None:
        """The member's address on ``channel`` (phone for sms/voice, email for email)."""
        if channel in ("sms", "voice"):
            return self.phone
        if channel == "email":
            return self.email
        return None


class LevelPolicy(BaseModel):
    """How one alert level is delivered and escalated.

    ``tiers`` is the escalation chain: tier 1 is notified when the incident opens
    (or rises to this level); each later tier is added after ``ack_wait_s`` more
    seconds without an acknowledgement. ``ack_wait_s=None`` means the level needs
    no acknowledgement (no chain, no repeats).
    """

    model_config = _FROZEN
    name: str
    channels: tuple[ChannelName, ...] = Field(min_length=1)
    tiers: tuple[tuple[TeamName, ...], ...] = Field(min_length=1)
    ack_wait_s: float | None = Field(None, gt=0.0)
    repeat_interval_s: float | None = Field(None, gt=0.0)
    automated_action: bool = False  # documentation: the policy engine orders the action, not escalation

    @property
    def provider_channels(self) -> tuple[str, ...]:
        return tuple(c for c in self.channels if c != "dashboard")


def _default_levels() -> dict[int, LevelPolicy]:
    return {
        # RT "Level 1: Informational (Email/Dashboard)". The drawdown ladder says "alert risk
        # team via dashboard" only; email + dashboard is the more protective reading.
        1: LevelPolicy(name="informational", channels=("email", "dashboard"), tiers=(("risk",),)),
        # RT "Level 2: Warning (SMS + Dashboard)"; drawdown level 2 "SMS alerts to senior
        # management", so management is in tier 1 (more protective than the risk team alone).
        2: LevelPolicy(
            name="warning",
            channels=("sms", "dashboard"),
            tiers=(("risk", "management"), ("trading",), ("technical",)),
            ack_wait_s=900.0,  # chosen: 15 min
            repeat_interval_s=1800.0,  # chosen: 30 min
        ),
        # RT "Level 3: Critical (Phone + SMS + Dashboard)"; drawdown level 3 "phone calls to
        # management team". INST contact hierarchy: risk manager -> senior trader -> CTO.
        3: LevelPolicy(
            name="critical",
            channels=("voice", "sms", "dashboard"),
            tiers=(("risk", "management"), ("trading",), ("technical",)),
            ack_wait_s=300.0,  # chosen: 5 min
            repeat_interval_s=600.0,  # chosen: 10 min
        ),
        # RT "Level 4: Emergency (All channels + Automated action)".
        4: LevelPolicy(
            name="emergency",
            channels=("voice", "sms", "email", "dashboard"),
            tiers=(("risk", "trading", "management"), ("technical",)),
            ack_wait_s=120.0,  # chosen: the spec's emergency stop completes within 60 s
            repeat_interval_s=300.0,
            automated_action=True,
        ),
        # RT "Level 5: Crisis (Emergency stop + Management notification)": everyone at once.
        5: LevelPolicy(
            name="crisis",
            channels=("voice", "sms", "email", "dashboard"),
            tiers=(("risk", "trading", "technical", "management"),),
            ack_wait_s=120.0,
            repeat_interval_s=300.0,
            automated_action=True,
        ),
    }


def _default_teams() -> dict[str, tuple[Member, ...]]:
    # Placeholders (RFC 2606 domains, +1 555 01xx fictional numbers). Real rotas come from the config file.
    return {
        "risk": (Member(name="Risk Manager", email="risk.manager@example.com", phone="+15555550101"),),
        "trading": (Member(name="Senior Trader", email="senior.trader@example.com", phone="+15555550102"),),
        "technical": (Member(name="CTO", email="cto@example.com", phone="+15555550103"),),
        "management": (Member(name="Chief Risk Officer", email="cro@example.com", phone="+15555550104"),),
    }


class RetryPolicy(BaseModel):
    """Retries of retryable provider errors (429, 5xx, timeouts, refused connections)."""

    model_config = _FROZEN
    base_s: float = Field(1.0, gt=0.0)  # first backoff; doubles each attempt
    max_backoff_s: float = Field(300.0, gt=0.0)
    max_retry_after_s: float = Field(3600.0, gt=0.0)  # a larger Retry-After is clamped to this
    jitter: float = Field(0.2, ge=0.0, le=1.0)  # +- fraction, deterministic per notification
    fallback_after_attempts: int = Field(3, ge=1)  # after this many failures, also try the next channel
    max_attempts: int = Field(20, ge=1)  # then the message is marked failed (and surfaced)
    in_doubt_after_s: float = Field(30.0, gt=0.0)  # an attempt without outcome (crash) is reconciled after this
    request_timeout_s: float = Field(10.0, gt=0.0)
    drain_budget_s: float = Field(5.0, ge=0.0)  # inline retries within one drain stop after this many seconds
    fallback_order: tuple[ChannelName, ...] = ("voice", "sms", "email")


class AckPolicy(BaseModel):
    """Inbound acknowledgements (SMS replies, key presses, API)."""

    model_config = _FROZEN
    reply_prefix: str = "ACK"
    voice_ack_digit: str = Field("1", pattern=r"^[0-9*#]$")
    max_replies_per_number: int = Field(5, ge=1)  # per window, per phone number
    reply_window_s: float = Field(60.0, gt=0.0)


class OperatorToken(BaseModel):
    """One operator of the control plane: who, the highest authority level held, where the token is."""

    model_config = _FROZEN
    name: str = Field(min_length=1, max_length=100)  # recorded as the operator of every write made with the token
    authority_level: int = Field(ge=1, le=5)  # spec "Override Authority Levels": 1 Risk Manager .. 5 Board
    token_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # environment variable holding the bearer token


class CredentialNames(BaseModel):
    """Where credentials are read from: environment variables first, then Prefect Secret blocks.

    Only the *names* live in config; values never do, and are never logged.
    """

    model_config = _FROZEN
    twilio_account_sid_env: str = "TWILIO_ACCOUNT_SID"
    twilio_auth_token_env: str = "TWILIO_AUTH_TOKEN"
    twilio_from_number_env: str = "TWILIO_FROM_NUMBER"
    sendgrid_api_key_env: str = "SENDGRID_API_KEY"
    sendgrid_from_email_env: str = "SENDGRID_FROM_EMAIL"
    api_token_env: str = "RISK_API_TOKEN"  # bearer token for POST /api/alerts/acknowledge (optional)
    # The control plane's operators, each with a token of their own: the token names who acts and
    # bounds the authority level they may act under. With any configured, the shared token above
    # no longer carries authority (a write that states one needs an operator's own token).
    operators: tuple[OperatorToken, ...] = ()
    use_prefect_secrets: bool = True
    twilio_account_sid_block: str = "twilio-account-sid"
    twilio_auth_token_block: str = "twilio-auth-token"
    sendgrid_api_key_block: str = "sendgrid-api-key"

    @model_validator(mode="after")
    def _distinct_operators(self) -> CredentialNames:
        for attr in ("name", "token_env"):
            values = [getattr(o, attr) for o in self.operators]
            if len(set(values)) != len(values):
                raise ValueError(f"operators: {attr} must be distinct; have {values}")
        return self


class EscalationConfig(BaseModel):
    """The ``[escalation]`` section."""

    model_config = _FROZEN
    levels: dict[int, LevelPolicy] = Field(default_factory=_default_levels)
    teams: dict[str, tuple[Member, ...]] = Field(default_factory=_default_teams)
    # RT "Emergency Stop Protocol": system disconnect notifies the technical team + management;
    # these teams join tier 1 of every level for the rule (more protective than level-4 only).
    rule_teams: dict[str, tuple[TeamName, ...]] = Field(
        default_factory=lambda: {"feed": ("technical", "management"), "data": ("technical",)}
    )
    inhibit_from_level: int = Field(4, ge=1, le=5)  # open incident at >= this level holds back lower ones
    group_min_accounts: int = Field(2, ge=2)  # incidents sharing a group become one message from this many
    group_list_max: int = Field(50, ge=1)  # accounts listed in an email (SMS lists as many as fit)
    sms_max_chars: int = Field(160, ge=40, le=160)  # one GSM-7 segment
    dashboard_url: str = "http://localhost:8000/dashboard/incidents/{incident_key}"
    public_base_url: str = "http://localhost:8000"  # where providers reach the webhooks
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    ack: AckPolicy = Field(default_factory=AckPolicy)
    credentials: CredentialNames = Field(default_factory=CredentialNames)
    console_jsonl: str = "warehouse/data/outbox.jsonl"  # console notifier's file, relative to the project

    @model_validator(mode="after")
    def _check(self) -> EscalationConfig:
        if sorted(self.levels) != [1, 2, 3, 4, 5]:
            raise ValueError(f"levels={sorted(self.levels)}: must define exactly levels 1..5")
        for lvl, pol in self.levels.items():
            for i, tier in enumerate(pol.tiers):
                for team in tier:
                    if team not in self.teams:
                        raise ValueError(f"levels.{lvl}.tiers[{i}]={team!r}: unknown team; have {sorted(self.teams)}")
        for rule, teams in self.rule_teams.items():
            for team in teams:
                if team not in self.teams:
                    raise ValueError(f"rule_teams.{rule}={team!r}: unknown team; have {sorted(self.teams)}")
        return self

    def rota_phones(self) -> frozenset[str]:
        """Every phone number on the rota (replies from others are refused)."""
        return frozenset(m.phone for ms in self.teams.values() for m in ms if m.phone)

    def member_for(self, address: str) -> tuple[str, Member] | None:
        """The (team, member) whose phone or email is ``address``."""
        for team, members in self.teams.items():
            for m in members:
                if address in (m.phone, m.email):
                    return team, m
        return None


def escalation_from_dict(section: Mapping[str, Any] | None = None) -> EscalationConfig:
    """Validate an ``[escalation]`` table into an :class:`EscalationConfig` (``None``: the built-in
    defaults, which equal the shipped ``risklib/defaults/escalation.toml``). Files are read by
    :func:`risklib.config.load_escalation_config`.

    Raises
    ------
    ConfigError
        An unknown or out-of-range key; the message names the key and the value.
    """
    data = dict(section or {})
    if "levels" in data:  # TOML keys are strings
        data["levels"] = {int(k) if str(k).isdigit() else k: v for k, v in data["levels"].items()}
    try:
        return EscalationConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(["escalation", *map(str, err["loc"])])
        raise ConfigError(f"{key}={err.get('input')!r}: {err['msg']}") from None
