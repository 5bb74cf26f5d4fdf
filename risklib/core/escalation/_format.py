"""Message texts: one-segment SMS with a reply code, spoken call text, email; ack parsing.

All pure. Texts carry the incident's numbers and never any credential.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

#: GSM 03.38 basic character set: each counts as one of the 160 characters of a segment.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# one C-level pass instead of a Python loop per character (10k dashboard lines in a market-wide alert)
_NOT_GSM7 = re.compile("[^" + re.escape("".join(sorted(GSM7_BASIC))) + "]")
_CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: not confused with 1/0 on a phone
LEVEL_NAMES = {1: "INFO", 2: "WARNING", 3: "CRITICAL", 4: "EMERGENCY", 5: "CRISIS"}
_ACK_RE_CACHE: dict[str, re.Pattern[str]] = {}


class Member(NamedTuple):
    """One incident inside a message (a row of the group's listing).

    A named tuple: a market-wide alert makes 10,000 of them in one cycle, and a
    tuple is made in a third of a frozen dataclass's time (~5 against ~15 ms).
    """

    incident_key: str
    account_id: str
    rule: str
    level: int
    metric_value: float | None
    threshold: float | None
    trading_mode: str | None


def short_hash(*parts: object, n: int = 16) -> str:
    """Stable hex digest of ``parts`` (``n`` hex characters)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return h[:n]


def reply_code(group_key: str, taken: Iterable[str] = ()) -> str:
    """A short reply code for ``group_key``: four digits and a letter, e.g. ``4821A``.

    Deterministic; if the code is in ``taken`` (codes of open incidents) it is
    re-derived with a salt until free.
    """
    used = set(taken)
    salt = 0
    while True:
        h = int(hashlib.sha256(f"{group_key}#{salt}".encode()).hexdigest(), 16)
        code = f"{h % 10000:04d}{_CODE_LETTERS[(h // 10000) % len(_CODE_LETTERS)]}"
        if code not in used:
            return code
        salt += 1


def to_gsm7(text: str) -> str:
    """``text`` restricted to the GSM-7 basic set (others become ``?``; tabs/newlines a space)."""
    text = text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    return _NOT_GSM7.sub("?", text)


def fmt_value(value: float | None) -> str:
    """A metric value for humans: 4 significant digits; ``n/a`` when missing."""
    if value is None or value != value:
        return "n/a"
    return f"{value:.4g}"


def _kind_prefix(kind: str, tier: int) -> str:
    return {"first": "", "update": "UP ", "escalation": f"ESC T{tier} ", "repeat": "REPEAT ", "resolved": "RESOLVED "}.get(kind, "")


def _sms_head(kind: str, level: int, rule: str, tier: int) -> str:
    return f"{_kind_prefix(kind, tier)}L{level} {LEVEL_NAMES.get(level, '?')} {rule}"


def _member_line(head: str, m: Member, kind: str) -> str:
    """The SMS body about one incident (before the GSM-7 pass and the length cut)."""
    mode = f", {m.trading_mode}" if m.trading_mode and kind != "resolved" else ""
    return f"{head} {m.account_id}: {fmt_value(m.metric_value)} vs {fmt_value(m.threshold)}{mode}."


def format_sms(
    kind: str, level: int, rule: str, members: Sequence[Member], code: str | None, *, tier: int = 1, max_chars: int = 160
) -> str:
    """One-segment SMS (GSM-7, at most ``max_chars``) ending with ``Reply <code> to ack``.

    Accounts are listed while they fit; the rest are counted (``+998``). The reply
    instruction is never cut.
    """
    tail = f" Reply {code} to ack" if code else ""
    head = _sms_head(kind, level, rule, tier)
    if len(members) == 1:
        body = _member_line(head, members[0], kind)
    else:
        worst = max((m.metric_value for m in members if m.metric_value is not None), default=None)
        body = f"{head}: {len(members)} accts"
        if worst is not None and kind != "resolved":
            body += f", worst {fmt_value(worst)}"
        body += ":"
        room = max_chars - len(to_gsm7(tail)) - len(to_gsm7(body)) - 1
        listed: list[str] = []
        for i, m in enumerate(members):
            rest = len(members) - i - 1
            more = f" +{rest}" if rest else ""
            candidate = " " + ",".join([*listed, m.account_id]) + more
            if len(to_gsm7(candidate)) > room:
                break
            listed.append(m.account_id)
        rest = len(members) - len(listed)
        body += (" " + ",".join(listed) if listed else "") + (f" +{rest}" if rest else "") + "."
    text = to_gsm7(body)
    tail = to_gsm7(tail)
    if len(text) + len(tail) > max_chars:
        text = text[: max(0, max_chars - len(tail) - 1)].rstrip() + "~"
    return text + tail


def format_sms_each(
    kind: str, level: int, rule: str, members: Sequence[Member], *, tier: int = 1, max_chars: int = 160
) -> list[str]:
    """``format_sms(kind, level, rule, [m], None, tier=tier, max_chars=max_chars)`` for each member.

    The same texts in one pass: a market-wide alert writes a dashboard line for each of
    10,000 incidents, and the per-call work (the head, two GSM-7 passes, the length
    checks) was most of the escalate stage. One GSM-7 check covers every line that
    needs none.
    """
    head = _sms_head(kind, level, rule, tier)
    lines = [_member_line(head, m, kind) for m in members]
    joined = "".join(lines)
    if _NOT_GSM7.search(joined) is None and "\n" not in joined and "\r" not in joined:
        # what to_gsm7 would leave as it is: cut only when too long
        return [t if len(t) <= max_chars else t[: max(0, max_chars - 1)].rstrip() + "~" for t in lines]
    return [format_sms(kind, level, rule, [m], None, tier=tier, max_chars=max_chars) for m in members]


def short_hash_each(prefix: Sequence[object], last: Sequence[object], *, n: int = 16) -> list[str]:
    """``short_hash(*prefix, x, n=n)`` for each ``x`` in ``last``: one digest per member of a group."""
    head = "".join(f"{p}\x1f" for p in prefix)
    sha256 = hashlib.sha256
    return [sha256(f"{head}{x}".encode()).hexdigest()[:n] for x in last]


def format_voice(kind: str, level: int, rule: str, members: Sequence[Member], *, digit: str = "1") -> str:
    """What the call says (the adapter wraps it in TwiML ``<Say>`` inside ``<Gather>``)."""
    lead = {"resolved": "Risk incident resolved.", "escalation": "Escalated risk alert, not yet acknowledged."}.get(
        kind, "Risk alert."
    )
    if len(members) == 1:
        m = members[0]
        what = (
            f"Level {level} {LEVEL_NAMES.get(level, '').lower()}, rule {rule}, account {m.account_id}. "
            f"Value {fmt_value(m.metric_value)}, threshold {fmt_value(m.threshold)}."
        )
        if m.trading_mode:
            what += f" Trading mode {m.trading_mode.replace('_', ' ').lower()}."
    else:
        what = f"Level {level} {LEVEL_NAMES.get(level, '').lower()}, rule {rule}, on {len(members)} accounts."
    ask = "" if kind == "resolved" else f" Press {digit} to acknowledge."
    return f"{lead} {what}{ask}"


def format_email(
    kind: str,
    level: int,
    rule: str,
    members: Sequence[Member],
    code: str | None,
    *,
    dashboard_url: str,
    list_max: int = 50,
    tier: int = 1,
) -> tuple[str, str]:
    """``(subject, plain text)``; :func:`email_html` renders the HTML part from the same text.

    The text has one ``account | rule | level | value | threshold | mode`` line per
    incident (at most ``list_max``) and the dashboard link.
    """
    scope = members[0].account_id if len(members) == 1 else f"{len(members)} accounts"
    prefix = _kind_prefix(kind, tier).strip()
    subject = f"[RISK L{level} {LEVEL_NAMES.get(level, '?')}]{' ' + prefix if prefix else ''} {rule} on {scope}"
    lines = [subject, ""]
    lines.append("account | rule | level | value | threshold | mode")
    for m in members[:list_max]:
        lines.append(
            f"{m.account_id} | {m.rule} | {m.level} | {fmt_value(m.metric_value)} | {fmt_value(m.threshold)} | {m.trading_mode or ''}"
        )
    if len(members) > list_max:
        lines.append(f"... and {len(members) - list_max} more (see dashboard)")
    lines.append("")
    first_key = members[0].incident_key if members else ""
    lines.append(f"Dashboard: {dashboard_url.format(incident_key=first_key)}")
    if code:
        lines.append(f"Acknowledge: reply ACK {code} to the SMS, or POST /api/alerts/acknowledge with reply_code {code}.")
    lines.append("Acknowledging stops the paging; it does not change any trading mode.")
    return subject, "\n".join(lines)


def email_html(text: str) -> str:
    """HTML rendering of a :func:`format_email` text: heading, table of incidents, link."""
    out = ["<html><body>"]
    rows: list[list[str]] = []
    for i, line in enumerate(text.split("\n")):
        if " | " in line and i > 0:
            rows.append(line.split(" | "))
            continue
        if rows:
            out.append(_table(rows))
            rows = []
        if i == 0:
            out.append(f"<h2>{html.escape(line)}</h2>")
        elif line.startswith("Dashboard: "):
            url = html.escape(line[len("Dashboard: ") :], quote=True)
            out.append(f'<p><a href="{url}">Open the incident dashboard</a></p>')
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    if rows:
        out.append(_table(rows))
    out.append("</body></html>")
    return "\n".join(out)


def _table(rows: list[list[str]]) -> str:
    head, *body = rows
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f'<table border="1" cellpadding="4"><tr>{th}</tr>{trs}</table>'


def parse_ack(text: str, prefix: str = "ACK") -> str | None:
    """The reply code in an SMS reply such as ``ACK 4821A`` (case and spacing tolerant), else None."""
    pat = _ACK_RE_CACHE.get(prefix)
    if pat is None:
        pat = re.compile(rf"^\s*{re.escape(prefix)}\s*[:#-]?\s*([0-9]{{4}}[A-Za-z])\s*[.!]?\s*$", re.IGNORECASE)
        _ACK_RE_CACHE[prefix] = pat
    m = pat.match(text or "")
    return m.group(1).upper() if m else None
