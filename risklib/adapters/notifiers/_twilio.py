"""Twilio SMS (``messages.create``) and phone calls (``calls.create`` with TwiML), via the real client."""

from __future__ import annotations

import logging
from datetime import datetime

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from risklib.adapters.notifiers._base import Credentials, OutboundMessage, protect_logs, redact
from risklib.adapters.notifiers._render import voice_twiml
from risklib.errors import DeliveryError

TWILIO_API = "https://api.twilio.com"
# The client logs request URLs (which hold the account SID) at INFO: keep that logger quiet.
_HTTP_LOG = logging.getLogger("risklib.notifiers.twilio_http")
_HTTP_LOG.setLevel(logging.WARNING)


class _HttpClient(TwilioHttpClient):
    """Twilio's own HTTP client, optionally re-based (a local test server or a regional edge)."""

    def __init__(self, base_url: str | None, timeout_s: float) -> None:
        super().__init__(timeout=timeout_s, logger=_HTTP_LOG)
        self.base_url = base_url.rstrip("/") if base_url else None

    def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None, allow_redirects=False):
        if self.base_url and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        return super().request(method, url, params=params, data=data, headers=headers, auth=auth, timeout=timeout,
                               allow_redirects=allow_redirects)

    def retry_after_s(self) -> float | None:
        resp = self._test_only_last_response
        if resp is None or not getattr(resp, "headers", None):
            return None
        return _parse_retry_after(resp.headers.get("Retry-After"))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
            return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())
        except (TypeError, ValueError):
            return None


class TwilioNotifier:
    """SMS and voice through Twilio.

    Parameters
    ----------
    credentials
        Must hold the account SID, auth token and sending number.
    public_base_url
        Where Twilio reaches this product's webhooks (status callbacks, key presses).
    api_base
        Override of ``https://api.twilio.com`` (tests point it at a local fake).
    timeout_s
        Per-request timeout in seconds.
    """

    provider = "twilio"

    def __init__(
        self,
        credentials: Credentials,
        *,
        public_base_url: str,
        api_base: str | None = None,
        timeout_s: float = 10.0,
        digit: str = "1",
    ) -> None:
        if not credentials.has_twilio:
            raise DeliveryError("twilio: account SID, auth token and from number are required", retryable=False)
        self._secrets = credentials.secrets()
        protect_logs(self._secrets)
        self._http = _HttpClient(api_base, timeout_s)
        self._client = Client(
            credentials.twilio_account_sid.get(), credentials.twilio_auth_token.get(), http_client=self._http
        )
        self.from_number = credentials.twilio_from_number
        self.base = public_base_url.rstrip("/")
        self.digit = digit

    def __repr__(self) -> str:
        return f"TwilioNotifier(from={self.from_number!r})"

    @property
    def gather_url(self) -> str:
        return self.base + "/webhooks/twilio/voice/gather?code={code}&nid={nid}"

    def _status_url(self, message: OutboundMessage) -> str:
        return f"{self.base}/webhooks/twilio/status?nid={message.notification_id}"

    def send(self, message: OutboundMessage) -> str:
        try:
            if message.channel == "sms":
                res = self._client.messages.create(
                    to=message.recipient, from_=self.from_number, body=message.body, status_callback=self._status_url(message)
                )
            elif message.channel == "voice":
                res = self._client.calls.create(
                    to=message.recipient,
                    from_=self.from_number,
                    twiml=voice_twiml(message, self.gather_url, self.digit),
                    status_callback=self._status_url(message),
                    status_callback_event=["completed"],
                )
            else:
                raise DeliveryError(f"channel={message.channel!r}: twilio sends sms and voice only", retryable=False)
        except TwilioRestException as exc:
            raise self._classify(exc) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            # A read timeout or a connection dropped mid-request may have been accepted.
            doubt = isinstance(exc, requests.ReadTimeout) or "aborted" in str(exc) or "RemoteDisconnected" in str(exc)
            raise DeliveryError(redact(f"twilio: {type(exc).__name__}: {exc}", self._secrets), retryable=True,
                                in_doubt=doubt) from None
        except TwilioException as exc:
            raise DeliveryError(redact(f"twilio: {exc}", self._secrets), retryable=True) from None
        return str(res.sid)

    def _classify(self, exc: TwilioRestException) -> DeliveryError:
        status = int(exc.status)
        retryable = status == 429 or status >= 500
        text = f"twilio: HTTP {status} code={exc.code}: {exc.msg}"
        return DeliveryError(redact(text, self._secrets), retryable=retryable,
                             retry_after_s=self._http.retry_after_s() if retryable else None)

    def lookup(self, message: OutboundMessage, since: datetime) -> str | None:
        """The sid of a message/call to ``message.recipient`` created since ``since`` matching it, if any."""
        try:
            if message.channel == "sms":
                for m in self._client.messages.list(to=message.recipient, date_sent_after=since, limit=50):
                    if m.body == message.body:
                        return str(m.sid)
            elif message.channel == "voice":
                for c in self._client.calls.list(to=message.recipient, start_time_after=since, limit=50):
                    return str(c.sid)
        except (TwilioException, requests.RequestException) as exc:
            raise DeliveryError(redact(f"twilio lookup: {exc}", self._secrets), retryable=True) from None
        return None
