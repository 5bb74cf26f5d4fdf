"""The notifier interface, the message handed to it, credentials and redaction."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from risklib.core.escalation import EscalationConfig


@dataclass(frozen=True)
class OutboundMessage:
    """One provider message taken from the outbox.

    Attributes
    ----------
    notification_id
        Outbox row id; also carried in status-callback URLs.
    channel
        ``email`` | ``sms`` | ``voice``.
    recipient
        E.164 phone number or email address.
    subject, body
        Texts as planned (SMS body fits one segment; voice body is what the call says).
    reply_code
        Short code the recipient can reply with (``ACK 4821A``), or None.
    dashboard_url
        Link to the incident's dashboard (email).
    """

    notification_id: str
    channel: str
    recipient: str
    subject: str
    body: str
    reply_code: str | None = None
    incident_key: str | None = None
    group_key: str | None = None
    level: int = 0
    dashboard_url: str = ""


@runtime_checkable
class Notifier(Protocol):
    """Sends one message. Returns the provider's message id.

    Raises
    ------
    risklib.errors.DeliveryError
        ``retryable=True`` for 429, 5xx, timeouts and refused connections (with
        ``retry_after_s`` when the provider said); ``False`` for permanent refusals.
    """

    provider: str

    def send(self, message: OutboundMessage) -> str: ...


class Reconciler(Protocol):
    """A notifier that can tell whether an in-doubt message (sent, outcome not recorded) went out."""

    def lookup(self, message: OutboundMessage, since: datetime) -> str | None: ...


class Secret:
    """A credential value that never shows in ``repr``/``str``/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Credentials:
    """Provider credentials found in the environment or in Prefect Secret blocks (None when absent)."""

    twilio_account_sid: Secret | None = None
    twilio_auth_token: Secret | None = None
    twilio_from_number: str | None = None
    sendgrid_api_key: Secret | None = None
    sendgrid_from_email: str | None = None
    api_token: Secret | None = field(default=None)
    operator_tokens: tuple[tuple[Secret, str, int], ...] = ()  # (token, operator name, authority level)

    @property
    def has_twilio(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from_number)

    @property
    def has_sendgrid(self) -> bool:
        return bool(self.sendgrid_api_key and self.sendgrid_from_email)

    def secrets(self) -> list[str]:
        """The raw secret values (for redaction only)."""
        shared = (self.twilio_account_sid, self.twilio_auth_token, self.sendgrid_api_key, self.api_token)
        return [s.get() for s in shared if s] + [t.get() for t, _, _ in self.operator_tokens]


def _prefect_secret(name: str) -> str | None:
    """The value of Prefect Secret block ``name``; None without a configured Prefect API or block."""
    try:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():  # no server configured: do not start an ephemeral one
            return None
        from prefect.blocks.system import Secret as PrefectSecret

        return str(PrefectSecret.load(name, _sync=True).get())
    except Exception:  # noqa: BLE001 - a missing block or server means "not configured"
        return None


def load_credentials(config: EscalationConfig, env: Mapping[str, str] | None = None, *, prefect: bool | None = None) -> Credentials:
    """Read credentials: environment variables first, then (optionally) Prefect Secret blocks.

    Parameters
    ----------
    config
        Names of the variables and blocks (``config.credentials``).
    env
        Environment to read; default ``os.environ``.
    prefect
        Look up Prefect Secret blocks for what the environment lacks; default
        ``config.credentials.use_prefect_secrets`` when ``env`` is the real environment.
    """
    names = config.credentials
    real_env = env is None
    env = os.environ if env is None else env
    use_prefect = names.use_prefect_secrets and real_env if prefect is None else prefect

    def get(var: str, block: str | None = None) -> str | None:
        value = env.get(var) or None
        if value is None and block and use_prefect:
            value = _prefect_secret(block)
        return value

    def sec(value: str | None) -> Secret | None:
        return Secret(value) if value else None

    return Credentials(
        twilio_account_sid=sec(get(names.twilio_account_sid_env, names.twilio_account_sid_block)),
        twilio_auth_token=sec(get(names.twilio_auth_token_env, names.twilio_auth_token_block)),
        twilio_from_number=get(names.twilio_from_number_env),
        sendgrid_api_key=sec(get(names.sendgrid_api_key_env, names.sendgrid_api_key_block)),
        sendgrid_from_email=get(names.sendgrid_from_email_env),
        api_token=sec(get(names.api_token_env)),
        # an operator whose variable is unset has no token, and so no way in
        operator_tokens=tuple((Secret(tok), o.name, o.authority_level) for o in names.operators
                              if (tok := get(o.token_env))),
    )


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


class _RedactingFilter:
    """Logging filter that replaces known secret values in a record's rendered message."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def filter(self, record) -> bool:  # noqa: A003 - logging API
        if self.secrets:
            text = record.getMessage()
            clean = redact(text, self.secrets)
            if clean != text:
                record.msg, record.args = clean, None
        return True


_FILTER = _RedactingFilter()
#: Loggers of the HTTP stacks the provider clients use: they log URLs (Twilio's hold the
#: account SID) and, at DEBUG, request headers (SendGrid's hold the API key).
_HTTP_LOGGERS = ("urllib3.connectionpool", "python_http_client.client", "twilio.http_client", "risklib")


def protect_logs(secrets: Iterable[str]) -> None:
    """Redact ``secrets`` from every record of the provider clients' loggers, at any level."""
    import logging

    _FILTER.secrets.update(s for s in secrets if s and len(s) >= 4)
    for name in _HTTP_LOGGERS:
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
