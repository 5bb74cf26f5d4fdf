"""Escalation latency and a market-wide shock, through the real warehouse and real provider clients.

Figures:

The escalate stage as the pipeline runs it: the local outbox (state in the process,
each write an fsync'd journal entry, landed in the warehouse behind) and the page
dispatcher (provider calls on its own thread).

* ``trigger_to_request_p99_ms``: an alert fires (frame handed to the escalate stage)
  → the first provider request reaches the (local fake) Twilio server: load state,
  plan, write the outbox (with the attempts) in one journal entry, hand over to the
  dispatcher, call the provider. Target: 2 s (the spec allows 5 s for alert generation).
* ``escalate_stage_p99_ms``: the same cycles' escalate stage alone (what the cycle
  waits for before it acts: the provider calls are not part of it).
* ``direct_request_p99_ms``: baseline measured here, the bare ``messages.create``
  call to the same fake; ``trigger_overhead_ratio`` = the two p99s' ratio.
* ``shock_1000_messages``: provider messages sent when 1,000 accounts trip the same
  rule in one cycle (grouped), and ``shock_1000_duplicates``: messages that repeat an
  earlier (channel, recipient, text) across the cycle, a second drain and a second cycle;
  ``shock_1000_cycle_ms`` the escalate stage of that cycle, ``shock_1000_delivered_ms``
  until every message of it had its provider's answer.
* ``shock_10000_*``: the same when all 10,000 accounts of a large book trip it (the planner
  writes a dashboard row per incident: 10,000 rows in that cycle).
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from bench._harness import ms, p

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _alerts(accounts, level, now):
    from risklib.core import frames

    return pl.DataFrame(
        [dict(incident_key=f"{a}:drawdown:e1", account_id=a, rule="drawdown", level=level, metric_value=0.16,
              threshold=0.15, trading_mode="HALTED", message="drawdown", ts=now) for a in accounts],
        schema=frames.ALERTS,
    )


def _cycle(esc, frame, now):
    """What the escalate stage does each cycle (``run_escalation``, as the session calls it)."""
    from risklib.adapters.notifiers import run_escalation

    return run_escalation(esc.outbox, esc.sender, frame, esc.config, now, state=esc.state, dispatcher=esc.dispatcher)


class _Escalation:
    """The pipeline's escalation parts over a fresh warehouse, with fake providers."""

    def __init__(self, tmp: Path) -> None:
        from risklib.adapters.notifiers import (
            Credentials, EscalationStateCache, LocalOutbox, OutboxSender, PageDispatcher, Secret, build_notifiers,
        )
        from risklib.core.escalation import EscalationConfig
        from risklib.warehouse import Warehouse
        from tests.fakes import FakeSendGrid, FakeTwilio

        creds = Credentials(Secret("AC" + secrets.token_hex(16)), Secret(secrets.token_hex(16)), "+15555550199",
                            Secret("SG." + secrets.token_urlsafe(24)), "risk-alerts@example.com")
        self.tw = FakeTwilio(creds.twilio_account_sid.get(), creds.twilio_auth_token.get())
        self.sg = FakeSendGrid(creds.sendgrid_api_key.get())
        self.config = EscalationConfig()
        self.notifiers = build_notifiers(self.config, creds, twilio_api_base=self.tw.url, sendgrid_api_base=self.sg.url,
                                         console_path=tmp / "o.jsonl")
        self.wh = Warehouse.open(tmp / "wh")
        self.outbox = LocalOutbox(self.wh)
        self.sender = OutboxSender(self.outbox, self.notifiers, self.config, secrets=creds.secrets())
        self.sender.watch = self.outbox.watch
        self.state = EscalationStateCache(self.outbox.watch)
        self.dispatcher = PageDispatcher(self.sender)

    def close(self) -> None:
        self.dispatcher.close()
        self.sender.close()
        self.outbox.close()
        self.wh.close()
        self.tw.down()
        self.sg.down()


def _trigger_latency(repeat: int = 40) -> dict[str, float]:
    from risklib.adapters.notifiers import OutboundMessage

    with tempfile.TemporaryDirectory() as d:
        esc = _Escalation(Path(d))
        try:
            # Baseline: the bare provider call.
            direct = []
            tw_notifier = esc.notifiers["sms"]
            for i in range(repeat):
                t0 = time.perf_counter()
                tw_notifier.send(OutboundMessage(f"n-{i}", "sms", "+15555550101", "s", "baseline"))
                direct.append(time.perf_counter() - t0)
            accounts: list[str] = []
            lat, stage = [], []
            now = T0
            for i in range(repeat + 2):
                accounts.append(f"ACC{i:04d}")
                now += timedelta(seconds=5)
                frame = _alerts(accounts, 3, now)
                esc.tw.reset()
                t0 = time.perf_counter()
                _cycle(esc, frame, now)
                handed = time.perf_counter()
                if not esc.tw.first_request_event.wait(30):
                    raise RuntimeError("no provider request within 30 s of the alert")
                first = min(r.at for r in esc.tw.requests)
                esc.dispatcher.wait_idle(60)
                if i >= 2:  # two warm-up cycles
                    lat.append(first - t0)
                    stage.append(handed - t0)
            lat_a, direct_a, stage_a = np.array(lat), np.array(direct[2:]), np.array(stage)
            return {
                "trigger_to_request_p50_ms": ms(p(lat_a, 50)),
                "trigger_to_request_p99_ms": ms(p(lat_a, 99)),
                "escalate_stage_p99_ms": ms(p(stage_a, 99)),
                "direct_request_p99_ms": ms(p(direct_a, 99)),
                "trigger_overhead_ratio": round(p(lat_a, 99) / p(direct_a, 99), 2),
            }
        finally:
            esc.close()


def _shock(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        esc = _Escalation(Path(d))
        try:
            accounts = [f"ACC{i:05d}" for i in range(n)]
            t0 = time.perf_counter()
            _cycle(esc, _alerts(accounts, 3, T0), T0)
            elapsed = time.perf_counter() - t0
            esc.dispatcher.wait_idle(120)
            delivered = time.perf_counter() - t0
            first = min(r.at for r in esc.tw.requests) - t0
            esc.sender.drain(T0 + timedelta(seconds=1))  # a second drain sends nothing
            _cycle(esc, _alerts(accounts, 3, T0 + timedelta(seconds=30)), T0 + timedelta(seconds=30))
            esc.dispatcher.wait_idle(120)
            tw, sg = esc.tw, esc.sg
            sent = [("twilio", r.path.rsplit("/", 1)[-1], r.form["To"][0], r.form.get("Body", r.form.get("Twiml", [""]))[0])
                    for r in tw.requests if r.method == "POST" and r.status == 201]
            sent += [("sendgrid", "mail", r.json["personalizations"][0]["to"][0]["email"], r.json["subject"]) for r in sg.sent()]
            counts = Counter(sent)
            per_recipient = Counter(s[2] for s in sent)
            return {
                f"shock_{n}_messages": float(len(sent)),
                f"shock_{n}_duplicates": float(sum(c - 1 for c in counts.values())),
                f"shock_{n}_max_messages_per_recipient": float(max(per_recipient.values())),
                f"shock_{n}_cycle_ms": ms(elapsed),
                f"shock_{n}_delivered_ms": ms(delivered),
                f"shock_{n}_first_request_ms": ms(first),
            }
        finally:
            esc.close()


def run() -> dict[str, float]:
    """Run both measurements; returns the figures."""
    return _trigger_latency() | _shock(1_000) | _shock(10_000)
