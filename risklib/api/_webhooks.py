"""Twilio webhooks: SMS replies, call key presses, delivery status callbacks.

Every request is checked with Twilio's ``RequestValidator`` against
``X-Twilio-Signature`` over the public URL Twilio called (``config.public_base_url``
plus path and query) and the form parameters. Refusals are recorded in
``webhook_rejections`` with a digest of the body (never the body).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import polars as pl
from fastapi import APIRouter, Request, Response
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from risklib.adapters.notifiers import incidents_for_code, record_ack, record_rejection
from risklib.core.escalation import NOTIFICATION_EVENTS, parse_ack

router = APIRouter(prefix="/webhooks/twilio", tags=["webhooks"])

_DELIVERED = {"delivered", "read", "completed"}
_FAILED = {"failed", "undelivered", "busy", "no-answer", "canceled"}


def _xml(body: str, status: int = 200) -> Response:
    return Response(content=body, media_type="application/xml", status_code=status)


async def _verified(request: Request, endpoint: str) -> tuple[dict[str, str] | None, Response | None, bytes]:
    """The form if the signature checks out; else a refusal (recorded)."""
    ctx = request.app.state.ctx
    raw = await request.body()
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}
    signature = request.headers.get("X-Twilio-Signature")
    url = ctx.config.public_base_url.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not ctx.twilio_auth_token:
        reason = "no Twilio auth token configured: webhooks are refused"
    elif not signature:
        reason = "missing X-Twilio-Signature"
    elif not RequestValidator(ctx.twilio_auth_token).validate(url, form, signature):
        reason = "bad X-Twilio-Signature"
    else:
        return form, None, raw
    _reject(request, endpoint, reason, raw)
    return None, Response(content=reason, status_code=403, media_type="text/plain"), raw


def _reject(request: Request, endpoint: str, reason: str, raw: bytes) -> None:
    ctx = request.app.state.ctx
    with ctx.lock:
        record_rejection(ctx.warehouse, at=ctx.clock.now(), endpoint=endpoint, reason=reason,
                         remote=request.client.host if request.client else None, payload=raw)


def _rate_limited(ctx: Any, number: str) -> bool:
    """Sliding-window limit of replies per phone number (in this process)."""
    now = time.monotonic()
    window, cap = ctx.config.ack.reply_window_s, ctx.config.ack.max_replies_per_number
    with ctx.replies_lock:
        times = [t for t in ctx.replies.get(number, []) if now - t < window]
        limited = len(times) >= cap
        if not limited:
            times.append(now)
        ctx.replies[number] = times
    return limited


@router.post("/sms")
async def sms_reply(request: Request) -> Response:
    """Inbound SMS: ``ACK <code>`` from a number on the rota acknowledges the code's incidents."""
    endpoint = "/webhooks/twilio/sms"
    form, refusal, raw = await _verified(request, endpoint)
    if refusal is not None:
        return refusal
    ctx = request.app.state.ctx
    sender = form.get("From", "")
    who = ctx.config.member_for(sender)
    if who is None or sender not in ctx.config.rota_phones():
        _reject(request, endpoint, "sender not on the rota", raw)
        return Response(content="sender not on the rota", status_code=403, media_type="text/plain")
    if _rate_limited(ctx, sender):
        _reject(request, endpoint, "rate limited: too many replies from this number", raw)
        return Response(content="too many replies", status_code=429, media_type="text/plain")
    reply = MessagingResponse()
    code = parse_ack(form.get("Body", ""), ctx.config.ack.reply_prefix)
    if code is None:
        reply.message(f"Not understood. Reply {ctx.config.ack.reply_prefix} <code>, e.g. {ctx.config.ack.reply_prefix} 4821A.")
        return _xml(str(reply))
    with ctx.lock:
        keys = incidents_for_code(ctx.warehouse, code)
        if keys:
            record_ack(ctx.warehouse, keys, at=ctx.clock.now(), channel="sms", operator=who[1].name, reply_code=code,
                       recipient=sender, source_ip=request.client.host if request.client else None)
    if not keys:
        reply.message(f"Code {code}: no open incident.")
    else:
        reply.message(f"Acknowledged {len(keys)} incident(s) for {code}. Paging stopped; trading mode unchanged.")
    return _xml(str(reply))


@router.post("/voice/gather")
async def voice_gather(request: Request) -> Response:
    """Key press on an alert call: the configured digit acknowledges the call's reply code."""
    endpoint = "/webhooks/twilio/voice/gather"
    form, refusal, raw = await _verified(request, endpoint)
    if refusal is not None:
        return refusal
    ctx = request.app.state.ctx
    callee = form.get("To", "")  # outbound call: the person we called
    vr = VoiceResponse()
    if callee not in ctx.config.rota_phones():
        _reject(request, endpoint, "callee not on the rota", raw)
        return Response(content="callee not on the rota", status_code=403, media_type="text/plain")
    code = (request.query_params.get("code") or "").upper()
    if form.get("Digits") != ctx.config.ack.voice_ack_digit or not code:
        vr.say("Not acknowledged.")
        return _xml(str(vr))
    who = ctx.config.member_for(callee)
    with ctx.lock:
        keys = incidents_for_code(ctx.warehouse, code)
        if keys:
            record_ack(ctx.warehouse, keys, at=ctx.clock.now(), channel="voice", operator=who[1].name if who else callee,
                       reply_code=code, recipient=callee, source_ip=request.client.host if request.client else None)
    vr.say("Acknowledged. Paging stopped. Trading mode is unchanged. Goodbye." if keys else "No open incident for this call.")
    return _xml(str(vr))


@router.post("/status")
async def status_callback(request: Request) -> Response:
    """Delivery status of a message or call: final states are recorded as ``delivered`` / ``failed``."""
    endpoint = "/webhooks/twilio/status"
    form, refusal, raw = await _verified(request, endpoint)
    if refusal is not None:
        return refusal
    ctx = request.app.state.ctx
    nid = request.query_params.get("nid")
    status = (form.get("MessageStatus") or form.get("CallStatus") or "").lower()
    sid = form.get("MessageSid") or form.get("CallSid")
    event = "delivered" if status in _DELIVERED else "failed" if status in _FAILED else None
    if nid and event:
        row = {c: None for c in NOTIFICATION_EVENTS} | {
            "notification_id": nid, "event": event, "provider": "twilio", "provider_message_id": sid,
            "error": None if event == "delivered" else f"status={status} error_code={form.get('ErrorCode')}",
            "at": ctx.clock.now(),
        }
        with ctx.lock:
            ctx.warehouse.append("notification_events", pl.DataFrame([row], schema=NOTIFICATION_EVENTS),
                                 actor="twilio", action="notification.status")
    return Response(status_code=204)

