"""Email through SendGrid's v3 mail/send with the real ``sendgrid`` client."""

from __future__ import annotations

import socket
import urllib.error

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Content, CustomArg, Mail

from risklib.adapters.notifiers._base import Credentials, OutboundMessage, protect_logs, redact
from risklib.adapters.notifiers._render import email_parts
from risklib.adapters.notifiers._twilio import _parse_retry_after
from risklib.errors import DeliveryError

SENDGRID_API = "https://api.sendgrid.com"


class SendGridNotifier:
    """HTML + plain-text email through SendGrid.

    Parameters
    ----------
    credentials
        Must hold the API key and the sender address.
    api_base
        Override of ``https://api.sendgrid.com`` (tests point it at a local fake).
    timeout_s
        Per-request timeout in seconds.
    """

    provider = "sendgrid"

    def __init__(self, credentials: Credentials, *, api_base: str | None = None, timeout_s: float = 10.0) -> None:
        if not credentials.has_sendgrid:
            raise DeliveryError("sendgrid: API key and from address are required", retryable=False)
        self._secrets = credentials.secrets()
        protect_logs(self._secrets)
        self._sg = SendGridAPIClient(credentials.sendgrid_api_key.get(), host=api_base or SENDGRID_API)
        self._sg.client.timeout = timeout_s
        self.from_email = credentials.sendgrid_from_email

    def __repr__(self) -> str:
        return f"SendGridNotifier(from={self.from_email!r})"

    def send(self, message: OutboundMessage) -> str:
        if message.channel != "email":
            raise DeliveryError(f"channel={message.channel!r}: sendgrid sends email only", retryable=False)
        text, html = email_parts(message)
        mail = Mail(from_email=self.from_email, to_emails=message.recipient, subject=message.subject)
        mail.add_content(Content("text/plain", text))
        mail.add_content(Content("text/html", html))
        mail.add_custom_arg(CustomArg("notification_id", message.notification_id))
        try:
            resp = self._sg.send(mail)
        except HTTPError as exc:
            status = int(exc.status_code)
            retryable = status == 429 or status >= 500
            headers = exc.headers or {}
            retry_after = _parse_retry_after(headers.get("Retry-After")) if retryable else None
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
            raise DeliveryError(redact(f"sendgrid: HTTP {status}: {body[:300]}", self._secrets), retryable=retryable,
                                retry_after_s=retry_after) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            # SendGrid has no idempotency key and no lookup: a timed-out request is resent (a duplicate
            # email is possible in that case only).
            doubt = isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in str(exc)
            raise DeliveryError(redact(f"sendgrid: {type(exc).__name__}: {exc}", self._secrets), retryable=True,
                                in_doubt=doubt) from None
        headers = resp.headers
        mid = headers.get("X-Message-Id") if headers else None
        return str(mid or f"sendgrid-{message.notification_id}")
