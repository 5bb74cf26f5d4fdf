"""Plan one cycle's escalation: incident conversations, chains, inhibition, grouping.

Pure: ``now`` is passed in, the warehouse state comes in as frames, and the
result is frames to append. The work over incidents is vectorised (Polars);
the only Python loop is over message *groups* (rule x level x kind x tier),
whose number does not grow with the number of accounts.

Stage order (fixed): conversation (first / update on level rise / resolved)
→ acknowledgement → chain (escalate after the wait, repeat while open)
→ inhibition → grouping → dedup keys → outbox rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from risklib.core import frames
from risklib.core.escalation._config import EscalationConfig
from risklib.core.escalation._format import (
    Member,
    format_email,
    format_sms,
    format_sms_each,
    format_voice,
    reply_code,
    short_hash,
    short_hash_each,
)
from risklib.errors import DataError

TS = frames.UTC_TS

#: Open incidents with their conversation state, as :func:`load_escalation_state` builds them.
OPEN_INCIDENTS = {
    "incident_key": pl.String,
    "account_id": pl.String,
    "rule": pl.String,
    "level": pl.Int64,  # current level (newest incident row)
    "opened_at": TS,
    "status": pl.String,  # open | acknowledged
    "episode_id": pl.String,
    "notified_level": pl.Int64,  # highest level a first/update message went out at (null: none yet)
    "tier": pl.Int64,  # highest escalation tier notified
    "tier_at": TS,  # when that tier was reached (escalation timer start)
    "last_notified_at": TS,  # newest message of the conversation (repeat timer start)
    "level_changed_at": TS,  # newest first/update message; acks before it do not count
    "reply_code": pl.String,  # newest reply code of the conversation
}

#: Acknowledgements (newest per incident is enough).
ACKS = {"incident_key": pl.String, "at": TS}

#: Rows for the warehouse ``incidents`` table.
INCIDENT_EVENTS = {
    "incident_key": pl.String,
    "account_id": pl.String,
    "rule": pl.String,
    "level": pl.Int64,
    "opened_at": TS,
    "updated_at": TS,
    "resolved_at": TS,
    "status": pl.String,
    "episode_id": pl.String,
}

#: Rows for the warehouse ``notifications`` table (the outbox).
NOTIFICATIONS = {
    "notification_id": pl.String,
    "incident_key": pl.String,  # null for a message about several incidents (see group_key)
    "group_key": pl.String,
    "level": pl.Int64,
    "channel": pl.String,  # email | sms | voice | console (console+"dashboard" rows are membership, never sent)
    "recipient": pl.String,
    "team": pl.String,
    "tier": pl.Int64,
    "subject": pl.String,  # dashboard rows: the message kind (first|update|escalation|repeat|resolved)
    "body": pl.String,
    "reply_code": pl.String,
    "dedup_key": pl.String,  # "<kind>:<hash>"; the sender delivers each key at most once
    "created_at": TS,
    "not_before": TS,
}

#: Rows for the warehouse ``notification_events`` table.
NOTIFICATION_EVENTS = {
    "notification_id": pl.String,
    "event": pl.String,
    "provider": pl.String,
    "provider_message_id": pl.String,
    "attempt": pl.Int64,
    "error": pl.String,
    "retry_at": TS,
    "at": TS,
}

#: The columns :func:`_outbox` builds in Python: the outbox's, but for the two timestamps it fills
#: in Polars (a column of 10,000 Python datetimes took ~19 ms to build), plus its flag for the
#: rows sent to a provider.
_SENT = "_sent"
_OUTBOX_BUILT = {**{c: t for c, t in NOTIFICATIONS.items() if c not in ("created_at", "not_before")},
                 _SENT: pl.Boolean}

KINDS_NEEDING_ACK = ("first", "update", "escalation", "repeat")
#: Dashboard membership rows: one per incident and message, never sent to a provider. The
#: warehouse's channel vocabulary is email|sms|voice|console, so they use ``console`` with
#: this recipient.
DASHBOARD_CHANNEL = "console"
DASHBOARD_RECIPIENT = "dashboard"


@dataclass(frozen=True)
class EscalationPlan:
    """What one cycle's escalation decided.

    Attributes
    ----------
    incident_events
        New rows for ``incidents`` (:data:`INCIDENT_EVENTS`).
    notifications
        New outbox rows for ``notifications`` (:data:`NOTIFICATIONS`), provider
        messages plus one ``dashboard`` membership row per incident and message.
    notification_events
        ``inhibited`` events for messages held back (:data:`NOTIFICATION_EVENTS`).
    """

    incident_events: pl.DataFrame
    notifications: pl.DataFrame
    notification_events: pl.DataFrame
    #: For an empty plan: no timer of these incidents falls due before this time (None: no
    #: timer runs), so the same alerts over the same state plan nothing until then.
    quiet_until: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.incident_events.height or self.notifications.height or self.notification_events.height)

    @property
    def n_messages(self) -> int:
        """Provider messages planned (not counting dashboard rows or inhibited ones)."""
        return self._counts()[0]

    def summary(self) -> dict[str, int]:
        messages, dashboard = self._counts()
        return {
            "incident_events": self.incident_events.height,
            "messages": messages,
            "inhibited": self.notification_events.height,
            "dashboard_rows": dashboard,
        }

    def _counts(self) -> tuple[int, int]:
        """(provider messages not held back, dashboard rows), counted in one pass: the escalate
        stage reports both every cycle that plans messages."""
        if self.notifications.height == 0:  # most cycles
            return 0, 0
        held = self.notification_events["notification_id"].implode()
        dashboard = pl.col("recipient") == DASHBOARD_RECIPIENT
        sent = ~dashboard & ~pl.col("notification_id").is_in(held)
        messages, rows = self.notifications.select(sent.sum().alias("m"), dashboard.sum().alias("d")).row(0)
        return int(messages), int(rows)


def _check_now(now: datetime) -> None:
    if now.tzinfo is None:
        raise DataError(f"now={now!r}: must be timezone-aware (UTC)")


def plan_escalation(
    now: datetime,
    alerts: pl.DataFrame,
    open_incidents: pl.DataFrame,
    acks: pl.DataFrame,
    config: EscalationConfig,
) -> EscalationPlan:
    """Decide this cycle's incident events and outbox messages.

    Parameters
    ----------
    now
        Evaluation time (UTC, aware). Every timer compares against it.
    alerts
        This cycle's alerts (``frames.ALERTS``); one row per incident while its condition holds.
        An open incident absent from ``alerts`` is resolved.
    open_incidents
        Unresolved incidents with conversation state (:data:`OPEN_INCIDENTS`).
    acks
        Acknowledgements (:data:`ACKS`); an ack counts if it is not older than the
        incident's last level change.
    config
        The escalation policy.

    Returns
    -------
    EscalationPlan
        Frames to append to ``incidents``, ``notifications`` and ``notification_events``.
    """
    _check_now(now)
    alerts = frames.conform(alerts, frames.ALERTS, "alerts")
    opened = frames.conform(open_incidents, OPEN_INCIDENTS, "open_incidents").filter(pl.col("status") != "resolved")
    if alerts.height == 0 and opened.height == 0:
        # Nothing firing and nothing open: the common calm cycle decides nothing.
        return EscalationPlan(frames.empty(INCIDENT_EVENTS), frames.empty(NOTIFICATIONS), frames.empty(NOTIFICATION_EVENTS))
    acks = frames.conform(acks, ACKS, "acks")
    now_lit = frames.utc_lit(now)

    # One row per incident this cycle: its highest level. The incident table is one lazy query
    # (frames.collect), not a dozen Polars calls.
    cur = (
        alerts.lazy()
        .sort(["incident_key", "level"], descending=[False, True])
        .unique("incident_key", keep="first", maintain_order=True)
        .with_columns(pl.lit(True).alias("present"))
    )
    last_ack = acks.lazy().group_by("incident_key").agg(pl.col("at").max().alias("ack_at"))
    lv = _level_table(config)

    j = (
        cur.join(opened.lazy().with_columns(pl.lit(True).alias("was_open")), on="incident_key", how="full", coalesce=True,
                 suffix="_o")
        .join(last_ack, on="incident_key", how="left")
        .with_columns(pl.col("present").fill_null(False), pl.col("was_open").fill_null(False))
        .with_columns(
            pl.coalesce("account_id", "account_id_o").alias("account_id"),
            pl.coalesce("rule", "rule_o").alias("rule"),
            pl.when(pl.col("present")).then(pl.col("level")).otherwise(pl.col("level_o")).alias("new_level"),
            pl.coalesce(
                "episode_id",
                pl.col("incident_key").str.strip_prefix(
                    pl.concat_str([pl.col("account_id"), pl.lit(":"), pl.col("rule"), pl.lit(":")])
                ),
            ).alias("episode_id"),
        )
        .join(lv.lazy().rename({"level": "new_level"}), on="new_level", how="left")
        .with_columns(
            (
                pl.col("ack_at").is_not_null()
                & (pl.col("level_changed_at").is_null() | (pl.col("ack_at") >= pl.col("level_changed_at")))
            ).alias("acked"),
            pl.col("tier").fill_null(0).alias("tier0"),
        )
    )

    present, was_open = pl.col("present"), pl.col("was_open")
    notified = pl.col("notified_level")
    is_first = present & notified.is_null()
    is_update = present & notified.is_not_null() & (pl.col("new_level") > notified)
    is_resolved = ~present & was_open
    chain_live = present & ~pl.col("acked") & notified.is_not_null() & ~is_update
    is_escalation = (
        chain_live
        & pl.col("ack_wait_s").is_not_null()
        & (pl.col("tier0") < pl.col("n_tiers"))
        & (now_lit >= pl.col("tier_at") + pl.duration(seconds=pl.col("ack_wait_s")))
    )
    is_repeat = (
        chain_live
        & ~is_escalation
        & pl.col("repeat_interval_s").is_not_null()
        & (now_lit >= pl.col("last_notified_at") + pl.duration(seconds=pl.col("repeat_interval_s")))
    )
    j = frames.collect(j.with_columns(
        pl.when(is_resolved)
        .then(pl.lit("resolved"))
        .when(is_first)
        .then(pl.lit("first"))
        .when(is_update)
        .then(pl.lit("update"))
        .when(is_escalation)
        .then(pl.lit("escalation"))
        .when(is_repeat)
        .then(pl.lit("repeat"))
        .otherwise(pl.lit(None, pl.String))
        .alias("kind")
    ))

    events = _incident_events(j, now_lit)
    if events.height == 0 and j["kind"].null_count() == j.height:
        # Nothing to say now: when is the earliest escalation or repeat timer due?
        due = j.filter(chain_live).select(
            pl.min_horizontal(
                pl.when(pl.col("ack_wait_s").is_not_null() & (pl.col("tier0") < pl.col("n_tiers")))
                .then(pl.col("tier_at") + pl.duration(seconds=pl.col("ack_wait_s"))),
                pl.when(pl.col("repeat_interval_s").is_not_null())
                .then(pl.col("last_notified_at") + pl.duration(seconds=pl.col("repeat_interval_s"))),
            ).min().alias("due")
        )["due"][0]
        return EscalationPlan(frames.empty(INCIDENT_EVENTS), frames.empty(NOTIFICATIONS), frames.empty(NOTIFICATION_EVENTS),
                              quiet_until=due)

    # Inhibition: accounts with an unresolved incident at or above inhibit_from_level.
    hot = j.filter(~is_resolved & (pl.col("new_level") >= config.inhibit_from_level)).select("account_id").unique()
    msgs = (
        j.filter(pl.col("kind").is_not_null())
        .with_columns(
            pl.col("account_id").is_in(hot["account_id"].implode()).alias("_hot"),
            # The level the message speaks of: resolution at the level people were told about.
            pl.when(pl.col("kind") == "resolved")
            .then(pl.coalesce("notified_level", "new_level"))
            .otherwise(pl.col("new_level"))
            .alias("msg_level"),
        )
        .with_columns(((pl.col("msg_level") < config.inhibit_from_level) & pl.col("_hot")).alias("inhibited"))
        .with_columns(_tier_range(config))
    )
    if msgs.height:
        msgs = msgs.filter(~((pl.col("kind") == "resolved") & pl.col("notified_level").is_null()))
    taken = set(opened["reply_code"].drop_nulls().to_list())
    notifications, held = _outbox(now, msgs, config, taken)
    return EscalationPlan(
        incident_events=events,
        notifications=notifications,
        notification_events=held,
    )


def _level_table(config: EscalationConfig) -> pl.DataFrame:
    lv = sorted(config.levels.items())
    return pl.DataFrame(
        {
            "level": [k for k, _ in lv],
            "n_tiers": [len(p.tiers) for _, p in lv],
            "ack_wait_s": [p.ack_wait_s for _, p in lv],
            "repeat_interval_s": [p.repeat_interval_s for _, p in lv],
        },
        schema={"level": pl.Int64, "n_tiers": pl.Int64, "ack_wait_s": pl.Float64, "repeat_interval_s": pl.Float64},
    )


def _tier_range(config: EscalationConfig) -> list[pl.Expr]:
    kind = pl.col("kind")
    tier = pl.col("tier0").clip(lower_bound=1)
    cap = pl.col("n_tiers")
    lo = pl.when(kind == "escalation").then(pl.col("tier0") + 1).otherwise(pl.lit(1))
    hi = (
        pl.when(kind == "first")
        .then(pl.lit(1))
        .when(kind == "escalation")
        .then(pl.col("tier0") + 1)
        .otherwise(pl.min_horizontal(tier, cap))
    )
    return [lo.cast(pl.Int64).alias("tier_lo"), hi.cast(pl.Int64).alias("tier_hi")]


def _incident_events(j: pl.DataFrame, now_lit: pl.Expr) -> pl.DataFrame:
    """One row per incident whose state changed (opened, level changed, acknowledged, resolved)."""
    kind = pl.col("kind")
    level_changed = pl.col("was_open") & pl.col("present") & (pl.col("new_level") != pl.col("level_o"))
    newly_acked = (
        pl.col("was_open") & pl.col("present") & pl.col("acked") & (pl.col("status") == "open") & (kind != "update").fill_null(True)
    )
    changed = kind.is_in(["first", "update", "resolved"]).fill_null(False) | level_changed | newly_acked
    status = (
        pl.when(kind == "resolved")
        .then(pl.lit("resolved"))
        .when(kind.is_in(["first", "update"]).fill_null(False))
        .then(pl.lit("open"))
        .when(newly_acked)
        .then(pl.lit("acknowledged"))
        .otherwise(pl.col("status"))
    )
    out = j.filter(changed).select(
        "incident_key",
        "account_id",
        "rule",
        pl.col("new_level").alias("level"),
        pl.when(pl.col("was_open")).then(pl.col("opened_at")).otherwise(now_lit).alias("opened_at"),
        now_lit.alias("updated_at"),
        pl.when(kind == "resolved").then(now_lit).otherwise(pl.lit(None, TS)).alias("resolved_at"),
        status.alias("status"),
        "episode_id",
    )
    return frames.conform(out, INCIDENT_EVENTS, "incident events")


def _audience(config: EscalationConfig, level: int, rule: str, tier_lo: int, tier_hi: int, channels: tuple[str, ...]):
    """(channel, address, team, tier) for the tiers ``tier_lo..tier_hi`` of ``level``, deduplicated by address."""
    pol = config.levels[level]
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str, str, int]] = []
    for t in range(tier_lo, tier_hi + 1):
        if t > len(pol.tiers):
            break
        teams = list(pol.tiers[t - 1])
        if t == 1:
            teams += [x for x in config.rule_teams.get(rule, ()) if x not in teams]
        for team in teams:
            for m in config.teams[team]:
                for ch in channels:
                    addr = m.address(ch)
                    if addr and (ch, addr) not in seen:
                        seen.add((ch, addr))
                        out.append((ch, addr, team, t))
    return out


def _outbox(now: datetime, msgs: pl.DataFrame, config: EscalationConfig, taken: set[str]):
    """Group ``msgs`` (one row per incident and message) into outbox rows."""
    if msgs.height == 0:
        return frames.empty(NOTIFICATIONS), frames.empty(NOTIFICATION_EVENTS)
    stamp = now.isoformat()
    now_lit = frames.utc_lit(now)
    keys = ["kind", "rule", "msg_level", "tier_lo", "tier_hi", "inhibited"]
    msgs = msgs.sort(["kind", "rule", "msg_level", "tier_lo", "tier_hi", "inhibited", "account_id", "incident_key"])
    groups = msgs.group_by(keys, maintain_order=True).agg(
        pl.col("incident_key"),
        pl.col("account_id"),
        pl.col("new_level"),
        pl.col("metric_value"),
        pl.col("threshold"),
        pl.col("trading_mode"),
        pl.col("last_notified_at").max().alias("anchor"),
        # The conversation a message belongs to: a re-opened incident is a new conversation.
        pl.col("opened_at").fill_null(now_lit).max().alias("opened_anchor"),
    )
    # built column by column: a market-wide alert adds 10,000 dashboard rows to a handful of messages
    columns: dict[str, list] = {name: [] for name in _OUTBOX_BUILT}
    held: list[str] = []
    for g in groups.iter_rows(named=True):
        members = [
            Member(k, a, g["rule"], int(lvl), mv, th, tm)
            for k, a, lvl, mv, th, tm in zip(
                g["incident_key"], g["account_id"], g["new_level"], g["metric_value"], g["threshold"], g["trading_mode"]
            )
        ]
        chunks = [members] if len(members) >= config.group_min_accounts else [[m] for m in members]
        for chunk in chunks:
            _group_rows(columns, now, stamp, g, chunk, config, taken, held)
    stamped = {"created_at": now_lit, "not_before": pl.when(pl.col(_SENT)).then(now_lit)}  # dashboard rows: never sent
    notifications = pl.DataFrame(columns, schema=_OUTBOX_BUILT).select(
        [stamped.get(c, pl.col(c)).alias(c) for c in NOTIFICATIONS]
    )
    notifications = frames.conform(notifications, NOTIFICATIONS, "notifications")
    held_ev = pl.DataFrame(
        {
            "notification_id": held,
            "event": ["inhibited"] * len(held),
            "provider": [None] * len(held),
            "provider_message_id": [None] * len(held),
            "attempt": [0] * len(held),
            "error": [f"held back: account has an open incident at level >= {config.inhibit_from_level}"] * len(held),
            "retry_at": [None] * len(held),
            "at": [now] * len(held),
        },
        schema=NOTIFICATION_EVENTS,
    )
    return notifications, held_ev


def _group_rows(columns: dict[str, list], now, stamp, g, members, config, taken, held) -> None:
    """Add one message's outbox rows to ``columns``: one per recipient, then a dashboard row per member."""
    kind, rule, level, lo, hi, inhibited = g["kind"], g["rule"], int(g["msg_level"]), int(g["tier_lo"]), int(g["tier_hi"]), g["inhibited"]
    member_keys = sorted(m.incident_key for m in members)
    group_key = "g-" + short_hash(stamp, kind, rule, level, lo, hi, inhibited, *member_keys)
    code = reply_code(group_key, taken) if kind in KINDS_NEEDING_ACK else None
    if code:
        taken.add(code)
    # What makes a message "the same" for dedup: the conversation step, not the cycle time.
    opened = str(g["opened_anchor"])
    anchor = {"first": opened, "update": opened, "resolved": opened, "escalation": f"{opened}/{hi}",
              "repeat": f"{opened}/{g['anchor']}"}[kind]
    content_key = short_hash(kind, rule, level, lo, hi, anchor, *member_keys, n=24)
    pol = config.levels[level]
    channels = tuple(c for c in pol.provider_channels if not (kind == "resolved" and c == "voice"))
    if kind == "resolved" and not channels:
        channels = ("sms",)
    single = members[0].incident_key if len(members) == 1 else None
    rows: list[tuple] = []  # the provider messages: a few
    texts: dict[str, tuple[str, str]] = {}
    for ch, addr, team, tier in _audience(config, level, rule, lo, hi, channels):
        if ch not in texts:
            if ch == "sms":
                texts[ch] = (f"L{level} {rule}", format_sms(kind, level, rule, members, code, tier=hi, max_chars=config.sms_max_chars))
            elif ch == "voice":
                texts[ch] = (f"L{level} {rule}", format_voice(kind, level, rule, members, digit=config.ack.voice_ack_digit))
            else:
                texts[ch] = format_email(
                    kind, level, rule, members, code, dashboard_url=config.dashboard_url, list_max=config.group_list_max, tier=hi
                )
        subject, body = texts[ch]
        nid = "n-" + short_hash(group_key, ch, addr, n=24)
        rows.append(
            (nid, single, group_key, level, ch, addr, team, tier, subject, body, code,
             f"{kind}:{short_hash(content_key, ch, addr, n=24)}", True)
        )
        if inhibited:
            held.append(nid)
    for name, values in zip(columns, zip(*rows)):
        columns[name].extend(values)
    # one dashboard row per member: 10,000 in a market-wide alert, so texts and keys are made in batches
    keys = [m.incident_key for m in members]
    n = len(keys)
    dashboard = {
        "notification_id": ["n-" + h for h in short_hash_each((group_key, DASHBOARD_RECIPIENT), keys, n=24)],
        "incident_key": keys,
        "group_key": [group_key] * n,
        "level": [level] * n,
        "channel": [DASHBOARD_CHANNEL] * n,
        "recipient": [DASHBOARD_RECIPIENT] * n,
        "team": [None] * n,
        "tier": [hi] * n,
        "subject": [kind] * n,
        "body": format_sms_each(kind, level, rule, members, tier=hi, max_chars=160),
        "reply_code": [code] * n,
        "dedup_key": [f"{kind}:{h}" for h in short_hash_each((content_key,), keys, n=24)],
        _SENT: [False] * n,
    }
    for name, values in dashboard.items():
        columns[name].extend(values)
