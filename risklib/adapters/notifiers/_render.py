"""Provider payloads built from an outbox message: email parts and call TwiML."""

from __future__ import annotations

from twilio.twiml.voice_response import VoiceResponse

from risklib.adapters.notifiers._base import OutboundMessage
from risklib.core.escalation import email_html


def email_parts(message: OutboundMessage) -> tuple[str, str]:
    """``(plain text, html)`` of an email message."""
    return message.body, email_html(message.body)


def voice_twiml(message: OutboundMessage, gather_url: str, digit: str = "1") -> str:
    """TwiML that speaks the alert and gathers one key press to acknowledge.

    ``gather_url`` may contain ``{code}`` and ``{nid}``; the key press is posted there.
    Without a reply code (resolution notices) the call only speaks.
    """
    vr = VoiceResponse()
    if message.reply_code and gather_url:
        action = gather_url.format(code=message.reply_code, nid=message.notification_id)
        g = vr.gather(num_digits=1, action=action, method="POST", timeout=10)
        g.say(message.body)
        g.say(message.body)  # said twice: people pick up mid-sentence
        vr.say(f"No key pressed. The alert is not acknowledged. Reply ACK {message.reply_code} by SMS.")
    else:
        vr.say(message.body)
    return str(vr)
