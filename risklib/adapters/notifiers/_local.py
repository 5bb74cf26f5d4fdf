"""The escalation outbox kept in the pipeline process: durable on local disk, landed in the warehouse behind.

Every DuckLake statement costs milliseconds and every transaction tens of them,
and the escalate stage issued several of each per cycle (state and pending
queries, the plan transaction, the outcome transaction): ~190 ms a cycle while an
incident was open. :class:`LocalOutbox` gives the sender and the planner the
warehouse interface they already use (``query``, ``append``, ``prepare``,
``_transaction``) over a small in-memory DuckDB holding the live part of the
escalation tables, so the same SQL decides the same things, and makes each write
durable with one fsync'd local file instead of a DuckLake transaction:

* **Durable before sent.** :meth:`_transaction` writes the rows to a journal entry
  (the tables as Arrow IPC, a JSON footer with the audit entries; written to a
  temporary name, fsync'ed, renamed: whole or absent) before it returns, so the
  plan and its ``attempt`` events are on disk before any provider is called, and
  outcomes before the next step relies on them. The mirror takes the rows while
  the entry is written, in a transaction committed only once the entry is durable.
* **Landed behind, in order, once.** A lander thread commits the entries to the
  warehouse one transaction each, in order, with an ``escalation.landed`` audit
  entry naming the entry; the file is deleted after COMMIT. Opening the outbox
  lands what an earlier process left (skipping an entry whose marker is already
  in the warehouse: a crash between COMMIT and delete), then loads the live state
  (open incidents, unfinished messages and their groups, the dedup history they
  need) from the warehouse. So a crash after a send never pages twice (the attempt
  is landed, the message is "in doubt" and reconciled) and a crash before it never
  loses the page.
* **Other writers.** Acknowledgements (API, SMS replies, key presses) and delivery
  callbacks are written by the API process into the warehouse. :meth:`refresh`
  (once per cycle, given the session's ``ChangeWatch``) re-reads acknowledgements
  only when that table changed, and events of still-unfinished messages only when
  ``notification_events`` changed and such messages exist.

The planner and sender learn of changes through :attr:`watch` (``changed`` /
``forget``, like ``ChangeWatch``), which answers from a local version counter.

Three threads use it: the cycle's (plans, refreshes), the page dispatcher's
(delivery outcomes, drains) and, in the gap after a cycle, the session's
preparation thread (compaction, the next cycle's state read). One lock makes
each read, each write (journal entry and mirror together, so entries are
numbered in the order they are applied) and each compaction whole.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from risklib.adapters.notifiers._outbox import TERMINAL_SQL
from risklib.adapters.warehouse._journal import TMP_PREFIX, LanderThread, read_frames_file, write_frames_file

log = logging.getLogger("risklib.escalation.local")

#: Tables the local outbox mirrors.
LOCAL_TABLES = ("incidents", "notifications", "notification_events", "acknowledgements")
_SUFFIX = ".esc"
_MARKER = "escalation.landed"

# The live part of the escalation tables: everything the state, pending and dedup
# queries can read. Run against the warehouse at open, against the mirror to compact it.
_OPEN_KEYS_SQL = """
SELECT incident_key FROM incidents
QUALIFY row_number() OVER (
    PARTITION BY incident_key
    ORDER BY updated_at DESC, CASE status WHEN 'resolved' THEN 2 WHEN 'acknowledged' THEN 1 ELSE 0 END DESC
) = 1 AND status <> 'resolved'
"""

_LIVE_NOTIFICATIONS_SQL = f"""
WITH cur AS (
    SELECT incident_key, status FROM incidents
    QUALIFY row_number() OVER (
        PARTITION BY incident_key
        ORDER BY updated_at DESC, CASE status WHEN 'resolved' THEN 2 WHEN 'acknowledged' THEN 1 ELSE 0 END DESC
    ) = 1
), op AS (
    SELECT incident_key FROM cur WHERE status <> 'resolved'
), ev AS (
    SELECT notification_id, bool_or(event IN {TERMINAL_SQL}) AS done FROM notification_events GROUP BY notification_id
), groups AS (
    SELECT DISTINCT group_key FROM notifications WHERE incident_key IN (SELECT incident_key FROM op)
    UNION
    SELECT DISTINCT n.group_key FROM notifications n LEFT JOIN ev ON ev.notification_id = n.notification_id
    WHERE n.recipient <> 'dashboard' AND NOT coalesce(ev.done, false)
), live AS (
    SELECT * FROM notifications WHERE group_key IN (SELECT group_key FROM groups)
)
SELECT * FROM live
UNION ALL
-- earlier messages with the same dedup key (the sender never delivers a key twice)
SELECT n.* FROM notifications n
WHERE n.dedup_key IN (SELECT dedup_key FROM live) AND n.notification_id NOT IN (SELECT notification_id FROM live)
  AND n.notification_id IN (SELECT notification_id FROM notification_events WHERE event IN ('sent', 'delivered'))
"""


class OutboxInUse(RuntimeError):
    """Another process (a running pipeline, or ``riskctl alerts drain``) owns this escalation outbox."""


def outbox_directory(warehouse: Any) -> Path:
    """Where a warehouse's local escalation outbox keeps its journal (beside the warehouse's lock file)."""
    layout = warehouse.layout
    return layout.lock_file.parent / (
        "escalation_journal" if layout.local_root is not None else layout.lock_file.stem + ".escalation"
    )


def claim_outbox(directory: Path) -> Any:
    """Hold the outbox's owner lock until the returned file is closed (or the process ends).

    Rows a running pipeline has sent but not yet landed are invisible to any other
    process: a second sender on the same warehouse could page the same message
    again. One owner at a time rules that out; the OS drops the lock with a crash.
    """
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / "owner.lock", "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise OutboxInUse(
            f"escalation outbox {str(directory)!r} is owned by another process ({holder}): a running pipeline "
            "sends and lands its own escalations; stop it first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def write_entry(directory: Path, name: str, frames: dict[str, pl.DataFrame], entries: list[dict], *, fsync: bool) -> Path:
    """Write one journal entry (whole, or absent on error); returns its path."""
    audit = [{**e, "at": e["at"].isoformat() if isinstance(e.get("at"), datetime) else None} for e in entries]
    return write_frames_file(directory, name, frames, {"audit": audit}, fsync=fsync)


def read_entry(path: Path) -> tuple[dict[str, pl.DataFrame], list[dict]]:
    """The tables and audit entries a journal entry holds."""
    frames, footer = read_frames_file(path)
    audit = [{**e, "at": datetime.fromisoformat(e["at"]) if e.get("at") else None} for e in footer["audit"]]
    return frames, audit


class _Watch:
    """``changed``/``forget`` over the outbox's per-table version counters (the ChangeWatch interface).

    A reader sees a change only in the tables it names (all four when it names none):
    recording a send (``notification_events``) must not make the open-incident state,
    which never reads that table, query the mirror again.
    """

    def __init__(self, outbox: LocalOutbox) -> None:
        self._outbox = outbox
        self._seen: dict[str, tuple[int, ...]] = {}

    def changed(self, reader: str, tables: Iterable[str] = ()) -> bool:
        versions = self._outbox.versions
        seen = tuple(versions[t] for t in (tuple(tables) or LOCAL_TABLES))
        last = self._seen.get(reader)
        self._seen[reader] = seen
        return last is None or last != seen

    def forget(self, reader: str) -> None:
        self._seen.pop(reader, None)


class LocalOutbox(LanderThread):
    """The escalation tables' live rows in memory, each write durable in a local journal, landed behind.

    Parameters
    ----------
    warehouse
        The session's writer :class:`~risklib.adapters.warehouse.Warehouse` (schema
        checks, the state loaded at open, the reads of other processes' writes).
    directory
        Journal folder; default ``escalation_journal/`` in the warehouse folder.
    fsync
        Flush each entry to the disk before a write returns (survives a power loss).
    retries
        Landing attempts per entry before it is moved to ``failed/`` (kept, and
        landed again when the outbox is next opened).
    compact_rows
        Compact the mirror (drop resolved conversations) when it holds more rows, at the
        next :meth:`compact_if_due` (the pipeline's record stage, after acting).
    min_interval_s
        Shortest time between two landings (``monitor.landing_min_interval_s``): the entries
        written in between land together, in one transaction. 0 lands each as soon as it is
        written. Paging never waits for it: messages go out from the journal and the mirror.
    gaps
        A :class:`~risklib.cycle_gaps.CycleGaps`: a landing is held back while a cycle runs (at
        most its ``max_hold_s``). None: landings never wait for a gap.
    """

    #: Entries one landing commits together at most.
    batch_max = 32

    def __init__(
        self,
        warehouse: Any,
        directory: str | Path | None = None,
        *,
        fsync: bool = True,
        retries: int = 5,
        compact_rows: int = 50_000,
        min_interval_s: float = 0.0,
        gaps: Any = None,
    ) -> None:
        self.warehouse = warehouse
        self.min_interval_s = max(0.0, float(min_interval_s))
        self.gaps = gaps
        layout = warehouse.layout
        self.directory = Path(directory) if directory is not None else outbox_directory(warehouse)
        self._owner = claim_outbox(self.directory)  # raises OutboxInUse
        try:
            self._open(warehouse, layout, fsync=fsync, retries=retries, compact_rows=compact_rows)
        except BaseException:
            self._owner.close()
            raise

    def _open(self, warehouse: Any, layout: Any, *, fsync: bool, retries: int, compact_rows: int) -> None:
        from risklib.adapters.warehouse import Warehouse

        (self.directory / "failed").mkdir(exist_ok=True)
        self._lock = threading.RLock()  # the mirror connection and the journal's numbering (see module doc)
        self.fsync = fsync
        self.retries = max(1, int(retries))
        self.compact_rows = compact_rows
        self.versions = dict.fromkeys(LOCAL_TABLES, 0)  # bumped by every write to a table (see _Watch)
        self._rows = 0
        self._compact_at = compact_rows
        self.compact_due = False  # set by a write that takes the mirror past _compact_at
        self.watch = _Watch(self)
        self.failure: str | None = None  # the last entry that could not be landed (kept in failed/)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="escalation-journal")
        self.landed = 0
        self.lag_ms: deque[float] = deque(maxlen=1000)
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute("SET threads = 1")
        self._columns = {t: [c.name for c in warehouse.columns(t)] for t in LOCAL_TABLES}
        for table in LOCAL_TABLES:
            cols = ", ".join(f'"{c.name}" {c.sql_type}' for c in warehouse.columns(table))
            self._con.execute(f'CREATE TABLE "{table}" ({cols})')
        self._lander = Warehouse.open(
            layout.local_root if layout.local_root is not None else layout.catalog_uri,
            migrate=False,
            config=warehouse.config,
            clock=warehouse.clock,
        )
        self._init_queue()  # items: (path, frames, audit entries (None: read them back), recovered, submitted at)
        for stale in self.directory.glob(f"{TMP_PREFIX}*"):
            stale.unlink(missing_ok=True)  # never renamed: its write did not return, nothing relied on it
        leftovers = sorted(
            list(self.directory.glob(f"[0-9]*{_SUFFIX}")) + list((self.directory / "failed").glob(f"[0-9]*{_SUFFIX}")),
            key=lambda p: p.name,
        )
        self._seq = int(leftovers[-1].name.split("-", 1)[0]) if leftovers else 0
        if leftovers:
            log.warning("landing %d escalation journal entr(ies) left in %s by an earlier run", len(leftovers), self.directory)
        unlanded = [p for p in leftovers  # before the state is read: the warehouse must hold every earlier write
                    if not self._land(p, None, None, recovered=True)]
        self._load(self.warehouse.query)
        for path in unlanded:  # the warehouse refused them for now: the state here still includes them
            frames, entries = read_entry(path)
            self._apply(frames)
            self._queue.append((path, frames, entries, True, time.monotonic()))
        self._start_lander("escalation-lander")

    # --- the warehouse interface the planner and sender use -------------------------

    def query(self, sql: str, params: Sequence | None = None) -> pl.DataFrame:
        from risklib.adapters.warehouse._warehouse import _to_polars

        with self._lock:
            return _to_polars(self._con.sql(sql, params=list(params) if params is not None else None), exact_decimals=False)

    def prepare(self, table: str, frame: pl.DataFrame) -> pl.DataFrame:
        return self.warehouse.prepare(table, frame)

    def prepare_all(self, tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
        return self.warehouse.prepare_all(tables)

    def append(self, table: str, frame: pl.DataFrame, *, actor: str, action: str, subject: str | None = None) -> None:
        """As :meth:`Warehouse.append`: one table and its audit entry, durable when this returns."""
        from risklib.adapters.warehouse._warehouse import append_audit_entry
        from risklib.errors import WarehouseError

        if table not in LOCAL_TABLES:
            raise WarehouseError(f"table={table!r}: not an escalation table (allowed: {list(LOCAL_TABLES)})")
        prepared = self.prepare(table, frame)
        self._transaction({table: prepared}, [append_audit_entry(table, prepared, actor=actor, action=action,
                                                                 subject=subject)])

    def _transaction(self, frames: dict[str, pl.DataFrame], entries: list[dict]) -> None:
        """Make ``frames`` (prepared) and ``entries`` durable in one journal entry, apply them here, queue the landing."""
        frames = {t: f for t, f in frames.items() if f.height}
        if not frames:
            return
        now = self.warehouse.clock.now()
        entries = [dict(e, at=e.get("at") or now) for e in entries]
        with self._lock:
            self._seq += 1
            name = f"{self._seq:012d}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
            # The entry is written and flushed on the journal's thread while the mirror takes the rows
            # in a transaction that commits only once the entry is durable (both mostly outside the
            # GIL): a market-wide alert's 10,000 rows took ~19 ms to write and ~26 to mirror, one
            # after the other. A failed write leaves the mirror as it was, as before.
            writing = self._writer.submit(write_entry, self.directory, name, frames, entries, fsync=self.fsync)
            self._con.execute("BEGIN TRANSACTION")
            try:
                self._insert_all(frames)
                path = writing.result()
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")
            self._count(frames)
            with self._cond:
                self._queue.append((path, frames, entries, False, time.monotonic()))
                self._cond.notify_all()

    # --- other processes' writes ----------------------------------------------------

    def refresh(self, watch: Any) -> None:
        """Pick up acknowledgements and delivery events other processes wrote (``watch``: a ChangeWatch).

        Queries the warehouse only when the watch says the table changed; a failed
        read is forgotten by the watch, so the next cycle reads again.
        """
        with self._lock:
            self._refresh(watch)

    def _refresh(self, watch: Any) -> None:
        if watch.changed("escalation.local.acks", ("acknowledgements",)):
            try:
                self._refresh_acks()
            except Exception:
                watch.forget("escalation.local.acks")
                raise
        events_changed = watch.changed("escalation.local.events", ("notification_events",))
        if events_changed:
            try:
                self._refresh_events()
            except Exception:
                watch.forget("escalation.local.events")
                raise

    def _refresh_acks(self) -> None:
        keys = self.query("SELECT DISTINCT incident_key FROM incidents")["incident_key"].to_list()
        if not keys:
            return
        fresh = self.warehouse.query(
            'SELECT incident_key, max("at") AS "at" FROM acknowledgements WHERE incident_key IN (SELECT unnest(?)) '
            "GROUP BY incident_key",
            [keys],
        )
        have = self.query('SELECT incident_key, max("at") AS "at" FROM acknowledgements GROUP BY incident_key')
        new = fresh.join(have, on="incident_key", how="left", suffix="_have").filter(
            pl.col("at_have").is_null() | (pl.col("at") > pl.col("at_have"))
        ).select("incident_key", "at")
        if new.height:
            self._insert("acknowledgements", new)
            self.versions["acknowledgements"] += 1

    def _refresh_events(self) -> None:
        pending = self.query(
            f"SELECT n.notification_id FROM notifications n WHERE n.recipient <> 'dashboard' AND n.notification_id NOT IN "
            f"(SELECT notification_id FROM notification_events WHERE event IN {TERMINAL_SQL})"
        )["notification_id"].to_list()
        if not pending:
            return  # events of finished messages change nothing the pipeline decides
        cols = self._columns["notification_events"]
        theirs = self.warehouse.query("SELECT * FROM notification_events WHERE notification_id IN (SELECT unnest(?))", [pending])
        if theirs.height == 0:
            return
        mine = self.query("SELECT * FROM notification_events WHERE notification_id IN (SELECT unnest(?))", [pending])
        key = ["notification_id", "event", "at"]
        new = theirs.select(cols).join(mine.select(key), on=key, how="anti", nulls_equal=True)
        if new.height:
            self._insert("notification_events", new)
            self.versions["notification_events"] += 1

    # --- the mirror -------------------------------------------------------------------

    def _insert(self, table: str, frame: pl.DataFrame) -> None:
        from risklib.adapters.warehouse._warehouse import insert_frame

        cols = self._columns[table]
        if frame.columns != cols:  # a prepared frame is already in the table's column order
            frame = frame.with_columns([pl.lit(None).alias(c) for c in cols if c not in frame.columns]).select(cols)
        with self._lock:
            insert_frame(self._con, table, ", ".join(f'"{c}"' for c in cols), frame)

    def _apply(self, frames: dict[str, pl.DataFrame]) -> None:
        self._insert_all(frames)
        self._count(frames)

    def _insert_all(self, frames: dict[str, pl.DataFrame]) -> None:
        for table, frame in frames.items():
            if table in self._columns:
                self._insert(table, frame)

    def _count(self, frames: dict[str, pl.DataFrame]) -> None:
        """Note rows the mirror took: readers see the tables changed; a compaction may be due."""
        for table, frame in frames.items():
            if table in self._columns:
                self._rows += frame.height
                self.versions[table] += 1
        if self._rows > self._compact_at:
            self.compact_due = True  # not here, inside a cycle: see compact_if_due

    def rows(self) -> int:
        """Rows the mirror holds (all four tables)."""
        with self._lock:
            self._rows = sum(int(self._con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in LOCAL_TABLES)
            return self._rows

    def _load(self, query: Any) -> None:
        """Replace the mirror with the live rows ``query`` (warehouse or mirror) returns."""
        live = query(_LIVE_NOTIFICATIONS_SQL)
        ids = live["notification_id"].unique().to_list() if live.height else []
        keys = set(live["incident_key"].drop_nulls().to_list()) if live.height else set()
        opened = query(_OPEN_KEYS_SQL)["incident_key"].to_list()
        keys = sorted(keys | set(opened))
        # `col IN (SELECT unnest(?))` is a hash semi-join; `list_contains(?, col)` compared every row
        # with every key: ~3 s for 10,000 incidents at a market-wide event, inside the escalate stage.
        incidents = query("SELECT * FROM incidents WHERE incident_key IN (SELECT unnest(?))", [keys]) if keys else None
        events = query("SELECT * FROM notification_events WHERE notification_id IN (SELECT unnest(?))", [ids]) if ids else None
        acks = (
            query('SELECT incident_key, max("at") AS "at" FROM acknowledgements WHERE incident_key IN (SELECT unnest(?)) '
                  "GROUP BY incident_key", [keys])
            if keys else None
        )
        with self._lock:
            # one transaction: a replace that fails half-way leaves the mirror as it was, not emptied
            self._con.execute("BEGIN TRANSACTION")
            try:
                for table in LOCAL_TABLES:
                    self._con.execute(f'DELETE FROM "{table}"')
                for table, frame in (("incidents", incidents), ("notifications", live),
                                     ("notification_events", events), ("acknowledgements", acks)):
                    if frame is not None and frame.height:
                        self._insert(table, frame)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            for table in LOCAL_TABLES:
                self.versions[table] += 1
            self.rows()

    def compact(self) -> None:
        """Drop resolved conversations (their dedup history stays while a live message shares its key)."""
        with self._lock:  # whole: an outcome written between the read and the replace would be lost
            before = self.rows()
            self._load(self.query)
            self._compact_at = max(self.compact_rows, 2 * self._rows)  # all live: do not compact again at once
            self.compact_due = False
            after = self._rows  # counted by _load
        log.info("escalation mirror compacted: %d -> %d rows", before, after)

    def compact_if_due(self) -> bool:
        """Compact once the mirror has outgrown ``compact_rows`` (or twice its live rows); True if it did.

        The pipeline calls this in the gap after a cycle (``Session.prepare_next_cycle``),
        never inside one: a market-wide event that opens thousands of incidents is also
        what fills the mirror, and compacting it then takes a quarter of a second or more
        at 10,000 accounts, which must delay neither the actions nor the next cycle.
        """
        if not self.compact_due:
            return False
        self.compact()
        return True

    # --- landing ------------------------------------------------------------------------

    def close(self, timeout_s: float | None = None) -> None:
        """Land what is queued (up to ``timeout_s``), then stop; what is left stays on disk for the next open."""
        if self._closed:
            return
        self._stop_lander(timeout_s)
        with self._lock:
            self._writer.shutdown(wait=True)
            self._con.close()
        self._owner.close()

    def _batchable(self, item: tuple) -> bool:
        return not item[3]  # recovered

    def _commit_batch(self, items: list[tuple]) -> None:
        """The entries' frames, table by table, and their audit entries, each with its marker, in one transaction."""
        parts: dict[str, list[pl.DataFrame]] = {}
        entries: list[dict] = []
        for path, frames, item_entries, _, _ in items:
            for table, frame in frames.items():
                parts.setdefault(table, []).append(self._lander.prepare(table, frame))
            entries += [*item_entries, self._marker(path, frames, item_entries)]
        self._lander._transaction({t: pl.concat(fs, how="vertical") for t, fs in parts.items()}, entries)

    def _landed(self, item: tuple) -> None:
        path, _, _, _, submitted = item
        path.unlink(missing_ok=True)
        self.landed += 1
        self.lag_ms.append((time.monotonic() - submitted) * 1e3)

    def _report_failure(self, message: str) -> None:
        # shown on the dashboard and logged by the escalate stage each cycle; paging goes on
        self.failure = f"escalation {message}"

    @staticmethod
    def _marker(path: Path, frames: dict[str, pl.DataFrame], entries: list[dict]) -> dict:
        """The audit entry that says an escalation journal entry is in the warehouse (checked at recovery)."""
        return {"actor": "escalation", "action": _MARKER, "subject": path.name,
                "at": entries[-1]["at"] if entries else None,
                "detail": {"rows": {t: f.height for t, f in frames.items()}}}

    def _land_queued(self, item: tuple) -> None:
        path, frames, entries, recovered, submitted = item
        if self._land(path, frames, entries, recovered=recovered):
            self.lag_ms.append((time.monotonic() - submitted) * 1e3)

    def _land(self, path: Path, frames: dict | None, entries: list[dict] | None, *, recovered: bool) -> bool:
        """Commit one entry (with its marker) unless already committed; delete it. False if kept in ``failed/``."""
        error = ""
        for attempt in range(1, self.retries + 1):
            try:
                if frames is None or entries is None:
                    frames, entries = read_entry(path)
                if (recovered or attempt > 1) and self._already_landed(path.name):
                    log.info("escalation entry %s was already in the warehouse; removed", path.name)
                else:
                    self._commit_batch([(path, frames, entries, recovered, None)])
                path.unlink(missing_ok=True)
                self.landed += 1
                return True
            except Exception as exc:  # noqa: BLE001 - retried, then kept and reported
                error = f"{type(exc).__name__}: {exc}"
                log.warning("landing %s failed (attempt %d/%d): %s", path.name, attempt, self.retries, error)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        if path.parent.name != "failed":
            kept = self.directory / "failed" / path.name
            shutil.move(str(path), kept)
        else:
            kept = path
        self._report_failure(f"journal entry {path.name!r} could not be landed (kept in {str(kept)!r}): {error}")
        log.error("%s", self.failure)
        return False

    def _already_landed(self, name: str) -> bool:
        rows = self._lander.query("SELECT count(*) AS n FROM audit_log WHERE action = ? AND subject = ?", [_MARKER, name])
        return bool(rows["n"][0])
