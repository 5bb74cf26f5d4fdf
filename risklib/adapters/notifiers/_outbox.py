"""The outbox sender: drains due notifications with retries, backoff, fallback and dedup.

Delivery is at-least-once without duplicates after a crash:

* every message is in ``notifications`` before any provider is called;
* an ``attempt`` event is written *before* each provider call and ``sent`` after;
* a message whose dedup key was already sent is ``suppressed``, never re-sent;
* an attempt with no outcome (the process died mid-call) is "in doubt": after
  ``in_doubt_after_s`` the provider is asked whether it went out (Twilio lists
  messages and calls); only if it did not, or the provider cannot tell (SendGrid
  has no lookup), is it sent again.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

from risklib.adapters.notifiers._base import Notifier, OutboundMessage, protect_logs, redact
from risklib.adapters.notifiers._state import ESCALATION_TABLES, append_many, record_events
from risklib.core import frames
from risklib.core.escalation import (
    DASHBOARD_RECIPIENT,
    KINDS_NEEDING_ACK,
    NOTIFICATION_EVENTS,
    NOTIFICATIONS,
    EscalationConfig,
    EscalationPlan,
    backoff_s,
    to_gsm7,
)
from risklib.core.escalation._format import short_hash
from risklib.errors import DeliveryError

log = logging.getLogger("risklib.escalation.outbox")

_TERMINAL = ("sent", "delivered", "failed", "suppressed", "inhibited")
TERMINAL_SQL = str(_TERMINAL)  # "('sent', 'delivered', ...)": the SQL list of the same events

_PENDING_SQL = f"""
WITH ev AS (
    SELECT notification_id,
           bool_or(event IN {TERMINAL_SQL}) AS done,
           count(*) FILTER (WHERE event = 'attempt') AS attempts,
           count(*) FILTER (WHERE event = 'retry_scheduled') AS retries,
           max(retry_at) FILTER (WHERE event = 'retry_scheduled') AS retry_at,
           max("at") FILTER (WHERE event = 'attempt') AS last_attempt_at,
           bool_or(event = 'fallback') AS fell_back,
           coalesce(arg_max(error, "at") FILTER (WHERE event = 'retry_scheduled'), '') LIKE 'in doubt:%' AS in_doubt,
           bool_or(event IN ('sent', 'delivered')) AS delivered
    FROM notification_events GROUP BY notification_id
), pend AS (
    SELECT n.notification_id, n.incident_key, n.group_key, n.level, n.channel, n.recipient, n.team, n.tier,
           n.subject, n.body, n.reply_code, n.dedup_key, n.created_at,
           coalesce(ev.attempts, 0) AS attempts, coalesce(ev.retries, 0) AS retries, ev.retry_at, ev.last_attempt_at,
           coalesce(ev.fell_back, false) AS fell_back, coalesce(ev.in_doubt, false) AS in_doubt
    FROM notifications n LEFT JOIN ev ON ev.notification_id = n.notification_id
    WHERE n.recipient <> 'dashboard' AND NOT coalesce(ev.done, false)
      AND (n.not_before IS NULL OR n.not_before <= ?)
), sent AS (
    SELECT DISTINCT n.dedup_key FROM notifications n JOIN ev ON ev.notification_id = n.notification_id
    WHERE ev.delivered AND n.dedup_key IN (SELECT dedup_key FROM pend)
), mem AS (
    SELECT p.notification_id,
           bool_and(coalesce(s.status IN ('acknowledged', 'resolved'), false)
                    OR coalesce(k.ack_at >= p.created_at, false)) AS members_done
    FROM pend p
    JOIN notifications d ON d.group_key = p.group_key AND d.recipient = 'dashboard'
    LEFT JOIN (SELECT incident_key, arg_max(status, updated_at) AS status FROM incidents GROUP BY incident_key) s
           ON s.incident_key = d.incident_key
    LEFT JOIN (SELECT incident_key, max("at") AS ack_at FROM acknowledgements GROUP BY incident_key) k
           ON k.incident_key = d.incident_key
    GROUP BY p.notification_id
)
SELECT pend.*, pend.dedup_key IN (SELECT dedup_key FROM sent) AS already_sent,
       coalesce(mem.members_done, false) AS members_done
FROM pend LEFT JOIN mem ON mem.notification_id = pend.notification_id
ORDER BY pend.level DESC, pend.created_at, pend.notification_id
"""

# How many rows _PENDING_SQL would return (its `pend`: not dashboard, not finished, not held),
# and the earliest hold that has not run out.
_DUE_SQL = f"""
SELECT (SELECT count(*) FROM notifications n
        ANTI JOIN (SELECT notification_id FROM notification_events WHERE event IN {TERMINAL_SQL}) e
          ON e.notification_id = n.notification_id
        WHERE n.recipient <> 'dashboard' AND (n.not_before IS NULL OR n.not_before <= ?)) AS due,
       (SELECT min(not_before) FROM notifications WHERE not_before > ?) AS held
"""


@dataclass
class DrainReport:
    """What one :meth:`OutboxSender.drain` did (counts of messages, not attempts)."""

    sent: list[str] = field(default_factory=list)
    retry_scheduled: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)  # handed to the page dispatcher, outcome reported later

    def summary(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items()}

    def merge(self, other: DrainReport) -> None:
        """Add ``other``'s messages to this report."""
        for name, values in other.__dict__.items():
            getattr(self, name).extend(values)


@dataclass
class PlannedSends:
    """A plan's messages, recorded with their ``attempt`` events, not yet handed to a provider.

    Made by :meth:`OutboxSender.record_sends`, sent by :meth:`OutboxSender.deliver`
    (at once, or on the page dispatcher's thread).
    """

    now: datetime
    batch: list[tuple[dict, OutboundMessage, Notifier]]
    sent_keys: set[str]
    report: DrainReport  # what recording decided: suppressions, messages without a notifier
    recorded_at: float  # the sender's monotonic clock when recording began: event times and the retry budget count from it

    @property
    def ids(self) -> list[str]:
        return [m.notification_id for _, m, _ in self.batch]


class OutboxSender:
    """Sends what is due in the warehouse outbox.

    Parameters
    ----------
    warehouse
        A writer :class:`risklib.warehouse.Warehouse` (``query`` and ``append``).
    notifiers
        Notifier per channel (``email``, ``sms``, ``voice``); a ``console`` entry is
        used for any channel without its own.
    config
        Escalation config (retry policy, rota for fallbacks).
    sleep, monotonic
        Injected for tests; inline retries sleep within ``retry.drain_budget_s``.
    secrets
        Values redacted from every error written or logged.
    """

    def __init__(
        self,
        warehouse: Any,
        notifiers: Mapping[str, Notifier],
        config: EscalationConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        secrets: list[str] | tuple[str, ...] = (),
        max_workers: int = 8,
    ) -> None:
        self.warehouse = warehouse
        self.notifiers = dict(notifiers)
        self.config = config
        self.sleep = sleep
        self.monotonic = monotonic
        self.secrets = list(secrets)
        protect_logs(self.secrets)
        self.max_workers = max_workers
        self.watch: Any = None  # optional ChangeWatch: skip the pending query while the outbox is idle
        self._idle_until: datetime | None = None
        self._idle_frame: pl.DataFrame | None = None
        self._pool: ThreadPoolExecutor | None = None
        # Recorded with their attempts but not yet answered by a provider (id -> dedup key): a drain
        # leaves them to whoever sends them (the page dispatcher may still hold them, long past
        # in_doubt_after_s), and their keys count as sent (a second message with one is a duplicate).
        self._in_flight: dict[str, str] = {}
        self._in_flight_lock = threading.Lock()

    def close(self) -> None:
        """Let the provider-call threads go (a later send starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _calls(self) -> ThreadPoolExecutor:
        """The threads provider calls run on, kept between rounds (starting them cost ~0.5 ms each)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="notify")
        return self._pool

    # --- selection ---------------------------------------------------------------

    def _notifier(self, channel: str) -> Notifier | None:
        return self.notifiers.get(channel) or self.notifiers.get("console")

    def pending(self, now: datetime) -> pl.DataFrame:
        """Outbox rows not yet in a terminal state and not held by ``not_before``.

        With a :attr:`watch` (a ``ChangeWatch``), an outbox found empty is not
        queried again until one of its tables is written or the earliest held
        message (``not_before``) falls due.
        """
        watch = self.watch
        if watch is not None:
            changed = watch.changed("outbox.pending", ESCALATION_TABLES)
            if not changed and self._idle_until is not None and now < self._idle_until:
                return self._idle_frame
        try:
            # Most writes leave nothing due (the fast path sent what it planned): one small query
            # says so, and the full pending query (several ms) runs only when something is, or
            # once to learn the columns of its empty answer.
            due, held = self.warehouse.query(_DUE_SQL, [now, now]).row(0)
            if due == 0 and self._idle_frame is not None:
                rows = self._idle_frame
            else:
                rows = self.warehouse.query(_PENDING_SQL, [now])
            if rows.height == 0:
                self._idle_frame = rows
            if watch is not None:
                self._idle_until = None if rows.height else held or datetime.max.replace(tzinfo=timezone.utc)
        except Exception:
            if watch is not None:
                watch.forget("outbox.pending")
                self._idle_until = None
            raise
        return rows

    def drain(self, now: datetime, *, limit: int | None = None) -> DrainReport:
        """Send every due message once (retrying inline within the drain budget).

        Each round writes the ``attempt`` events of all its messages in one
        transaction, calls the providers concurrently, then writes the outcomes
        (and any fallback messages) in one transaction.

        Parameters
        ----------
        now
            Current time (UTC); events are stamped ``now`` plus the time spent in this call.
        limit
            Send at most this many messages (the rest stay pending).
        """
        report = DrainReport()
        start = self.monotonic()
        clock = lambda: now + timedelta(seconds=self.monotonic() - start)  # noqa: E731
        rows = self.pending(now)
        if rows.height == 0:
            return report
        # read after the query: a message whose attempt the query saw was claimed before that attempt was written
        in_flight = self._claimed()
        if in_flight:
            claimed = pl.col("notification_id").is_in(list(in_flight))
            report.in_flight.extend(rows.filter(claimed)["notification_id"].to_list())
            rows = rows.filter(~claimed)
        if limit is not None:
            rows = rows.head(limit)
        sent_keys = set(rows.filter(pl.col("already_sent"))["dedup_key"].to_list()) | set(in_flight.values())
        members = None
        events: list[dict] = []
        batch: list[tuple[dict, OutboundMessage, Notifier]] = []
        for row in rows.iter_rows(named=True):
            item = self._admit(row, now, clock, sent_keys, members, report, events)
            if item is not None:
                batch.append(item)
        record_events(self.warehouse, events)
        if batch:
            self._finish(self._round(batch, clock, sent_keys, report), clock, sent_keys, report, start)
        return report

    def send_plan(self, plan: EscalationPlan, now: datetime) -> DrainReport:
        """Record ``plan`` and send its due messages at once: :meth:`record_sends`, then :meth:`deliver`.

        Older pending messages are left to :meth:`drain`.
        """
        planned = self.record_sends(plan, now)
        report = planned.report
        report.merge(self.deliver(planned))
        return report

    def record_sends(self, plan: EscalationPlan, now: datetime) -> PlannedSends:
        """Write ``plan`` and the ``attempt`` events of its due messages in ONE transaction; call no provider.

        A crash after that transaction leaves the messages "in doubt": the next drain
        reconciles them with the provider before resending, so nothing is lost or
        doubled. Until :meth:`deliver` has their outcomes they are in flight, and a
        drain leaves them alone.
        """
        report = DrainReport()
        start = self.monotonic()
        clock = lambda: now + timedelta(seconds=self.monotonic() - start)  # noqa: E731
        held = set(plan.notification_events["notification_id"].to_list())
        fresh = plan.notifications.filter(
            (pl.col("recipient") != DASHBOARD_RECIPIENT) & ~pl.col("notification_id").is_in(list(held))
            & (pl.col("not_before").is_null() | (pl.col("not_before") <= frames.utc_lit(now)))
        ) if plan.notifications.height else plan.notifications  # most cycles plan no message
        sent_keys: set[str] = set()
        if fresh.height:
            done = self.warehouse.query(
                "SELECT DISTINCT n.dedup_key FROM notifications n JOIN notification_events e "
                "ON e.notification_id = n.notification_id WHERE e.event IN ('sent', 'delivered') "
                "AND n.dedup_key IN (SELECT unnest(?))",  # a hash join: list_contains is quadratic in the keys
                [fresh["dedup_key"].unique().to_list()],
            )
            sent_keys = set(done["dedup_key"].to_list()) if done.height else set()
            sent_keys |= set(self._claimed().values())
        events: list[dict] = []
        batch: list[tuple[dict, OutboundMessage, Notifier]] = []
        for row in fresh.iter_rows(named=True):
            nid = row["notification_id"]
            notifier = self._notifier(row["channel"])
            if row["dedup_key"] in sent_keys or notifier is None:
                why = "duplicate: a message with this dedup key was already sent" if notifier else "no notifier for this channel"
                events.append({"notification_id": nid, "event": "suppressed" if notifier else "failed", "error": why,
                               "attempt": 0, "at": clock()})
                (report.suppressed if notifier else report.failed).append(nid)
                continue
            sent_keys.add(row["dedup_key"])
            row = dict(row) | {"attempts": 1, "retries": 0, "retry_at": None, "last_attempt_at": None, "fell_back": False,
                               "in_doubt": False}
            events.append({"notification_id": nid, "event": "attempt", "provider": notifier.provider, "attempt": 1,
                           "at": clock()})
            batch.append((row, self._message(row), notifier))
        ev = pl.DataFrame([{c: e.get(c) for c in NOTIFICATION_EVENTS} for e in events], schema=NOTIFICATION_EVENTS)
        planned = PlannedSends(now, batch, sent_keys, report, start)
        ids = planned.ids
        with self._in_flight_lock:
            # before the attempts are written (see drain)
            self._in_flight.update((m.notification_id, row["dedup_key"]) for row, m, _ in batch)
        try:
            append_many(
                self.warehouse,
                [("incidents", plan.incident_events), ("notifications", plan.notifications),
                 ("notification_events", pl.concat([plan.notification_events, ev]))],
                actor="escalation", action="escalation.plan",
            )
        except BaseException:
            self._release(ids)
            raise
        return planned

    def deliver(self, planned: PlannedSends) -> DrainReport:
        """Call the providers for messages :meth:`record_sends` recorded; write their outcomes.

        Inline retries and fallbacks stop within ``retry.drain_budget_s`` of the
        recording (time spent waiting for the dispatcher counts); what is left is
        scheduled for a later drain.
        """
        report = DrainReport()
        now, start = planned.now, planned.recorded_at
        clock = lambda: now + timedelta(seconds=self.monotonic() - start)  # noqa: E731
        try:
            if planned.batch:
                retry = self._round(planned.batch, clock, planned.sent_keys, report, attempts_written=True)
                self._finish(retry, clock, planned.sent_keys, report, start)
        finally:
            self._release(planned.ids)
        return report

    def _claimed(self) -> dict[str, str]:
        """The messages in flight (id -> dedup key), as of now."""
        with self._in_flight_lock:
            return dict(self._in_flight)

    def _release(self, ids: list[str]) -> None:
        with self._in_flight_lock:
            for nid in ids:
                self._in_flight.pop(nid, None)

    def _finish(self, batch, clock, sent_keys, report, start) -> None:
        """Further rounds for fallbacks (at once) and retries (within the drain budget)."""
        policy = self.config.retry
        while batch:
            now_ = [b for b in batch if b[0]["_delay"] <= 0.0]
            later = [b for b in batch if b[0]["_delay"] > 0.0]
            if later:
                wait = max(r["_delay"] for r, _, _ in later)
                if self.monotonic() - start + wait > policy.drain_budget_s:
                    report.retry_scheduled.extend(m.notification_id for _, m, _ in later)
                    later = []
                elif not now_:
                    self.sleep(wait)
            if not (now_ or later):
                return
            batch = self._round(now_ + later, clock, sent_keys, report)

    def _message(self, row: dict) -> OutboundMessage:
        return OutboundMessage(
            notification_id=row["notification_id"], channel=row["channel"], recipient=row["recipient"],
            subject=row["subject"] or "", body=row["body"] or "", reply_code=row["reply_code"],
            incident_key=row["incident_key"], group_key=row["group_key"], level=int(row["level"] or 0),
            dashboard_url=self.config.dashboard_url.format(incident_key=row["incident_key"] or ""),
        )

    def _admit(self, row, now, clock, sent_keys, members, report, events) -> tuple | None:
        """Decide whether ``row`` is sent in this drain; records suppressions/reconciliations into ``events``."""
        nid = row["notification_id"]
        reason = self._suppress_reason(row, sent_keys, members)
        if reason:
            events.append({"notification_id": nid, "event": "suppressed", "error": reason, "at": clock(),
                           "attempt": row["attempts"]})
            report.suppressed.append(nid)
            return None
        if row["retry_at"] is not None and row["retry_at"] > now and row["attempts"] <= row["retries"]:
            return None  # not due yet
        msg = self._message(row)
        notifier = self._notifier(row["channel"])
        if notifier is None:
            events.append({"notification_id": nid, "event": "failed", "error": "no notifier for this channel",
                           "attempt": row["attempts"], "at": clock()})
            report.failed.append(nid)
            return None
        crashed = int(row["attempts"]) > int(row["retries"])  # an attempt without outcome: the sender died mid-call
        if crashed or row["in_doubt"]:
            last = row["last_attempt_at"]
            if crashed and last is not None and (now - last).total_seconds() < self.config.retry.in_doubt_after_s:
                report.in_flight.append(nid)
                return None
            lookup = getattr(notifier, "lookup", None)
            if lookup is not None:
                try:
                    sid = lookup(msg, (last or row["created_at"]) - timedelta(minutes=1))
                except DeliveryError:
                    sid = None
                if sid:
                    events.append({"notification_id": nid, "event": "sent", "provider": notifier.provider,
                                   "provider_message_id": sid, "attempt": row["attempts"], "at": clock(),
                                   "error": "reconciled: the provider had it after a restart"})
                    sent_keys.add(row["dedup_key"])
                    report.sent.append(nid)
                    return None
        sent_keys.add(row["dedup_key"])  # claimed by this drain: a duplicate row later in the batch is suppressed
        return (dict(row), msg, notifier)

    def _round(self, batch, clock, sent_keys, report, *, attempts_written: bool = False) -> list[tuple]:
        """One round: attempts written, providers called concurrently, outcomes written. Returns rows to retry inline."""
        if attempts_written:
            return self._call_and_record(batch, clock, sent_keys, report)
        checked, reconciled = [], []
        for row, msg, notifier in batch:
            lookup = getattr(notifier, "lookup", None)
            sid = None
            if row.get("_in_doubt") and lookup is not None:
                try:
                    sid = lookup(msg, (row["created_at"] or clock()) - timedelta(minutes=1))
                except DeliveryError:
                    sid = None
            if sid:
                reconciled.append({"notification_id": msg.notification_id, "event": "sent", "provider": notifier.provider,
                                   "provider_message_id": sid, "attempt": row["attempts"], "at": clock(),
                                   "error": "reconciled: the provider had it after a timeout"})
                report.sent.append(msg.notification_id)
            else:
                checked.append((row, msg, notifier))
        record_events(self.warehouse, reconciled)
        batch = checked
        if not batch:
            return []
        attempt_events = []
        for row, msg, notifier in batch:
            row["attempts"] = int(row["attempts"]) + 1
            attempt_events.append({"notification_id": msg.notification_id, "event": "attempt", "provider": notifier.provider,
                                   "attempt": row["attempts"], "at": clock()})
        record_events(self.warehouse, attempt_events)
        return self._call_and_record(batch, clock, sent_keys, report)

    def _call_and_record(self, batch, clock, sent_keys, report) -> list[tuple]:
        """Call the providers (concurrently) for a batch whose attempts are written; record outcomes."""
        policy = self.config.retry

        def call(item):
            row, msg, notifier = item
            try:
                return notifier.send(msg), None
            except DeliveryError as exc:
                return None, exc
            except Exception as exc:  # noqa: BLE001 - an unexpected client error is treated as transient
                return None, DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True)

        if len(batch) == 1:
            results = [call(batch[0])]
        else:
            results = list(self._calls().map(call, batch))
        outcome: list[dict] = []
        fallback_rows: list[dict] = []
        retry: list[tuple] = []
        for (row, msg, notifier), (sid, exc) in zip(batch, results):
            nid, at = msg.notification_id, clock()
            if exc is None:
                outcome.append({"notification_id": nid, "event": "sent", "provider": notifier.provider,
                                "provider_message_id": sid, "attempt": row["attempts"], "at": at})
                report.sent.append(nid)
                continue
            err = redact(str(exc), self.secrets)
            report.errors.append(f"{nid}: {err}")
            if not exc.retryable or row["attempts"] >= policy.max_attempts:
                outcome.append({"notification_id": nid, "event": "failed", "provider": notifier.provider, "error": err,
                                "attempt": row["attempts"], "at": at})
                report.failed.append(nid)
                log.warning("notification %s via %s failed: %s", nid, msg.channel, err)
                if not row["fell_back"]:
                    fallback_rows += self._fallback(row, msg, err, at, outcome, report)
                continue
            delay = backoff_s(row["attempts"], policy, key=nid, retry_after_s=exc.retry_after_s)
            row["_in_doubt"] = exc.in_doubt
            outcome.append({"notification_id": nid, "event": "retry_scheduled", "provider": notifier.provider,
                            "attempt": row["attempts"], "error": ("in doubt: " if exc.in_doubt else "") + err, "at": at,
                            "retry_at": at + timedelta(seconds=delay)})
            row["retries"] = int(row["retries"]) + 1
            if row["attempts"] >= policy.fallback_after_attempts and not row["fell_back"]:
                fallback_rows += self._fallback(row, msg, err, at, outcome, report)
                row["fell_back"] = True
            row["_delay"] = delay
            retry.append((row, msg, notifier))
        tables = [("notification_events", pl.DataFrame([{c: e.get(c) for c in NOTIFICATION_EVENTS} for e in outcome],
                                                        schema=NOTIFICATION_EVENTS))]
        if fallback_rows:
            tables.insert(0, ("notifications", pl.DataFrame([{c: r[c] for c in NOTIFICATIONS} for r in fallback_rows],
                                                             schema=NOTIFICATIONS)))
        append_many(self.warehouse, tables, actor="escalation", action="notification.deliver")
        for r in fallback_rows:
            fb_notifier = self._notifier(r["channel"])
            if fb_notifier is not None and r["dedup_key"] not in sent_keys:
                sent_keys.add(r["dedup_key"])
                r["_delay"] = 0.0
                retry.append((r, self._message(r), fb_notifier))
        return retry

    def _suppress_reason(self, row: dict, sent_keys: set[str], members: object = None) -> str | None:
        if row["dedup_key"] in sent_keys:
            return "duplicate: a message with this dedup key was already sent"
        kind = row["dedup_key"].split(":", 1)[0]
        if kind in KINDS_NEEDING_ACK and row["members_done"]:
            return "acknowledged or resolved before delivery"
        return None

    def _fallback(self, row: dict, msg: OutboundMessage, err: str, at: datetime, outcome: list[dict], report) -> list[dict]:
        """The same message on the recipient's next channel (a new outbox row), plus a ``fallback`` event."""
        found = self.config.member_for(msg.recipient)
        if found is None:
            return []
        team, member = found
        order = list(self.config.retry.fallback_order)
        after = order[order.index(msg.channel) + 1 :] if msg.channel in order else order
        existing = self.warehouse.query(
            "SELECT channel, recipient FROM notifications WHERE group_key = ? AND recipient <> 'dashboard'", [msg.group_key]
        )
        have = set(zip(existing["channel"].to_list(), existing["recipient"].to_list())) if existing.height else set()
        kind = row["dedup_key"].split(":", 1)[0]
        for ch in after:
            addr = member.address(ch)
            if not addr or (ch, addr) in have:
                continue
            subject, body = _fallback_text(ch, msg, self.config.sms_max_chars)
            new_id = "n-" + short_hash(msg.notification_id, "fallback", ch, n=24)
            outcome.append({"notification_id": msg.notification_id, "event": "fallback", "error": f"{err} -> {ch} {new_id}",
                            "attempt": row["attempts"], "at": at})
            report.fallbacks.append(new_id)
            return [{
                "notification_id": new_id, "incident_key": msg.incident_key, "group_key": msg.group_key,
                "level": msg.level, "channel": ch, "recipient": addr, "team": team, "tier": row["tier"],
                "subject": subject, "body": body, "reply_code": msg.reply_code,
                "dedup_key": f"{kind}:{short_hash(row['dedup_key'], 'fallback', ch, addr, n=24)}",
                "created_at": at, "not_before": at,
                "attempts": 0, "retries": 0, "retry_at": None, "last_attempt_at": None, "fell_back": True,
                "in_doubt": False,
            }]
        return []


def _fallback_text(channel: str, msg: OutboundMessage, max_chars: int) -> tuple[str, str]:
    """The message re-worded for ``channel`` (texts are plain; SMS is cut to one segment)."""
    if channel == "sms":
        tail = f" Reply {msg.reply_code} to ack" if msg.reply_code else ""
        head = to_gsm7((msg.subject + ": " if msg.channel == "voice" else "") + msg.body.split("\n")[0])
        room = max_chars - len(tail)
        if len(head) > room:
            head = head[: room - 1] + "~"
        return msg.subject, head + to_gsm7(tail)
    if channel == "email":
        subject = msg.subject if msg.subject.startswith("[RISK") else f"[RISK L{msg.level}] {msg.subject}"
        code = f"\nAcknowledge: reply ACK {msg.reply_code} by SMS or POST /api/alerts/acknowledge." if msg.reply_code else ""
        return subject, f"{subject}\n\n{msg.body}\n\n(sent by email because {msg.channel} delivery failed){code}"
    return msg.subject, msg.body
