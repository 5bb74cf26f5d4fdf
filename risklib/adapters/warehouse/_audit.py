"""The audit log's hash chain: pure functions, no I/O.

Each entry's ``hash`` is ``sha256(prev_hash + canonical(entry))`` and its
``prev_hash`` is the previous entry's ``hash``, so editing, inserting or deleting
any entry breaks the chain there. Retention may remove the oldest entries only
behind a *checkpoint* entry whose detail records the last removed ``seq`` and
``hash``; verification then starts from that anchor.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import polars as pl

GENESIS = "0" * 64
CHECKPOINT_ACTION = "retention.checkpoint"


def canonical_json(detail: object) -> str:
    """The stored text of an entry's detail: sorted keys, no spaces, non-JSON values as text."""
    return json.dumps(detail if detail is not None else {}, sort_keys=True, separators=(",", ":"), default=str)


def format_at(at: datetime) -> str:
    """An entry's time as hashed: UTC ISO-8601 with microseconds."""
    if at.tzinfo is None:
        raise ValueError(f"at={at!r}: must be timezone-aware")
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, seq: int, at: datetime, actor: str, action: str, subject: str | None, detail_json: str) -> str:
    """SHA-256 (hex) of one entry chained to ``prev_hash``."""
    body = "\x1f".join((prev_hash, str(seq), format_at(at), actor, action, subject or "", detail_json))
    return hashlib.sha256(body.encode()).hexdigest()


def chain(entries: list[dict], *, head_seq: int, head_hash: str, default_at: datetime) -> pl.DataFrame:
    """Audit rows for ``entries`` appended after (``head_seq``, ``head_hash``).

    Parameters
    ----------
    entries
        Dicts with ``actor``, ``action`` and optionally ``subject``, ``detail`` (any
        JSON-able value) and ``at`` (aware datetime; default ``default_at``).
    head_seq, head_hash
        The current last entry (0 and :data:`GENESIS` for an empty log).
    """
    rows = []
    prev, seq = head_hash, head_seq
    for e in entries:
        missing = [k for k in ("actor", "action") if not e.get(k)]
        if missing:
            raise ValueError(f"audit entry {e!r}: {missing[0]} must be a non-empty string")
        seq += 1
        at = e.get("at") or default_at
        detail = canonical_json(e.get("detail"))
        subject = e.get("subject")
        subject = None if subject is None else str(subject)
        h = entry_hash(prev, seq, at, str(e["actor"]), str(e["action"]), subject, detail)
        rows.append(
            {"seq": seq, "at": at, "actor": str(e["actor"]), "action": str(e["action"]), "subject": subject,
             "detail": detail, "prev_hash": prev, "hash": h}
        )
        prev = h
    return pl.DataFrame(
        rows,
        schema={"seq": pl.Int64, "at": pl.Datetime("us", "UTC"), "actor": pl.String, "action": pl.String,
                "subject": pl.String, "detail": pl.String, "prev_hash": pl.String, "hash": pl.String},
    )


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of an audit-chain check.

    Attributes
    ----------
    ok
        True when every entry links to the one before and hashes to its stored hash.
    n_entries
        Entries checked.
    first_seq, last_seq
        Range of ``seq`` checked (None for an empty log).
    first_bad_seq
        ``seq`` of the first broken entry (None when ``ok``).
    problem
        What is wrong with that entry.
    anchored_at
        ``seq`` of the checkpoint the chain was verified from, when old entries were removed.
    """

    ok: bool
    n_entries: int
    first_seq: int | None = None
    last_seq: int | None = None
    first_bad_seq: int | None = None
    problem: str | None = None
    anchored_at: int | None = None
    checkpoints: list[int] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            span = f"seq {self.first_seq}..{self.last_seq}" if self.n_entries else "empty log"
            anchor = f", anchored at checkpoint seq {self.anchored_at}" if self.anchored_at is not None else ""
            return f"audit chain OK: {self.n_entries} entries ({span}){anchor}"
        return f"audit chain BROKEN at seq {self.first_bad_seq}: {self.problem}"


class ChainVerifier:
    """Check the chain incrementally over batches of rows ordered by ``seq``."""

    def __init__(self) -> None:
        self.n = 0
        self.first_seq: int | None = None
        self.prev_seq: int | None = None
        self.prev_hash: str | None = None
        self.anchors: dict[int, tuple[str, int]] = {}  # removed_through_seq -> (its hash, checkpoint seq)
        self.anchors_needed: tuple[int, str] | None = None
        self.checkpoints: list[int] = []
        self.anchored_at: int | None = None
        self.bad: tuple[int, str] | None = None

    def feed(self, batch: pl.DataFrame) -> bool:
        """Check one batch; False once a broken entry is found (see :attr:`bad`)."""
        if self.bad is not None:
            return False
        for seq, at, actor, action, subject, detail, prev_hash, h in batch.iter_rows():
            if self.prev_seq is None:
                self.first_seq = seq
                if seq == 1:
                    if prev_hash != GENESIS:
                        self.bad = (seq, f"first entry's prev_hash={prev_hash!r} is not the genesis hash")
                        return False
                else:
                    # Older entries were removed: a later checkpoint must vouch for exactly this gap.
                    self.anchors_needed = (seq - 1, prev_hash)
            elif seq != self.prev_seq + 1:
                self.bad = (self.prev_seq + 1, f"entry missing (next present is seq {seq})")
                return False
            elif prev_hash != self.prev_hash:
                self.bad = (seq, f"prev_hash does not match the hash of seq {self.prev_seq} (entry {self.prev_seq} edited or removed)")
                return False
            expect = entry_hash(prev_hash, seq, at, actor, action, subject, detail if detail is not None else canonical_json(None))
            if expect != h:
                self.bad = (seq, "stored hash does not match the entry's content (entry edited)")
                return False
            if action == CHECKPOINT_ACTION:
                d = json.loads(detail)
                self.anchors[int(d["removed_through_seq"])] = (str(d["removed_through_hash"]), seq)
                self.checkpoints.append(seq)
            self.n += 1
            self.prev_seq, self.prev_hash = seq, h
        return True

    def result(self) -> VerifyResult:
        if self.bad is None and self.first_seq is not None and self.first_seq != 1:
            gap_seq, gap_hash = self.anchors_needed  # type: ignore[misc]
            anchor = self.anchors.get(gap_seq)
            if anchor is None or anchor[0] != gap_hash:
                self.bad = (1, f"entries 1..{gap_seq} are missing and no checkpoint vouches for their removal")
            else:
                self.anchored_at = anchor[1]
        if self.bad is not None:
            return VerifyResult(False, self.n, self.first_seq, self.prev_seq, self.bad[0], self.bad[1], None, self.checkpoints)
        return VerifyResult(True, self.n, self.first_seq, self.prev_seq, None, None, self.anchored_at, self.checkpoints)
