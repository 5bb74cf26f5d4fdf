"""Write-behind for cycle records: durable on local disk first, landed in the warehouse behind the cycle.

A DuckLake commit of one cycle (a dozen tables, a Parquet file each, a catalog
transaction) takes 50-200 ms, longer than a whole 100-account cycle may. The
record stage therefore checks the cycle's frames against the schema (a refusal is
still raised in the cycle and recorded as a failed cycle) and returns a future.
The journal's own thread writes them to a journal entry on local disk and flushes
it (60-300 ms for 200k rows, off the cycle), then completes the future; a lander
thread commits the durable entries to the warehouse in order, one cycle per
transaction, exactly as
:meth:`Warehouse.write_cycle` would have, and deletes each entry once committed.
When it has fallen behind, it commits up to ``batch_max`` waiting cycles in one
transaction (:meth:`Warehouse.write_cycles`): the commit, the larger part of
landing a small cycle, is then paid once for all of them. With ``min_interval_s``
it also lands at most that often: at the fastest cadences routine cycles wait and
land together (a landing costs ~50 ms of CPU, some of it holding the GIL, taken
from the next cycle on a small machine), while a cycle that acted, a half-full
backlog, a large cycle (``land_rows``), a flush or a close land at once.

- Nothing relied on is lost by a crash: the session carries a cycle's state
  and puts its gate state in force only once its future is done. An entry not
  yet flushed was never relied on; its temporary file is removed at the next
  start. Durable entries left on disk are landed when the journal is opened
  again, and an entry whose cycle is already in ``cycle_runs`` (a crash between
  COMMIT and delete) is not landed twice.
- Readers never see half a cycle: each entry lands whole, in one transaction.
- The backlog is bounded: :meth:`CycleJournal.submit` waits while
  ``max_backlog`` entries are waiting, so the warehouse is never far behind.
- A cycle that cannot be landed after ``retries`` attempts is moved to
  ``failed/`` (kept, never dropped) and the next :meth:`submit` raises, so the
  cycle after it is recorded as failed and the gate's dead man's switch counts.

Entry layout: one file ``<journal>/<seq>-<cycle_id>.cycle``: the tables as Arrow
IPC (LZ4-compressed when large: :data:`COMPRESS_FROM_BYTES`), then a JSON footer (the
cycle's fields, audit entries and table offsets) and its length, written to a temporary
name, fsync'ed, then renamed: an entry is whole or absent.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from risklib.adapters.warehouse._warehouse import CYCLE_TABLES, CycleRecords
from risklib.cycle_gaps import CycleGaps
from risklib.errors import WarehouseError

log = logging.getLogger(__name__)

_SUFFIX = ".cycle"
TMP_PREFIX = ".tmp-"  # a journal file being written: never renamed means never relied on
#: Frames at least this large are written LZ4-compressed. The next cycle waits for the entry
#: to be durable (written and flushed), and the flush's time follows the bytes. 10,000 accounts
#: x 20 positions (37 MB, 12 MB compressed), 40 cycles a second apart, twice each: durable p50
#: ~97 -> ~80 ms, p99 0.52-0.63 -> 0.37-0.40 s; the sizing stage, which waits for it,
#: p99 ~256 -> 62-82 ms. A 100-account entry (0.2 MB) would pay ~0.5 ms more CPU and save nothing measurable.
COMPRESS_FROM_BYTES = 1 << 20


def _compression(frame: pl.DataFrame) -> str:
    return "lz4" if frame.estimated_size() >= COMPRESS_FROM_BYTES else "uncompressed"


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a file's name) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_frames_file(directory: Path, name: str, frames: dict[str, pl.DataFrame], footer: dict, *,
                      fsync: bool = True) -> Path:
    """Write ``frames`` and a JSON ``footer`` as one journal file, whole or absent; returns its path.

    Layout: the frames' Arrow IPC bytes one after another, then the footer (with
    ``tables``: where each frame starts and ends) and its length as 8 bytes. One
    file means one fsync however many frames it holds; the frames go straight to
    the file, uncopied. Written to a temporary name, fsync'ed, then renamed.
    """
    return commit_frames_file(write_frames_tmp(directory, name, frames, footer), directory / name, fsync=fsync)


def write_frames_tmp(directory: Path, name: str, frames: dict[str, pl.DataFrame], footer: dict) -> Path:
    """The first half of :func:`write_frames_file`: the whole file under its temporary name, not yet flushed."""
    tmp = directory / f"{TMP_PREFIX}{name}"
    try:
        with open(tmp, "wb") as fh:
            spans: dict[str, tuple[int, int]] = {}
            for table, frame in frames.items():
                start = fh.tell()
                frame.write_ipc(fh, compression=_compression(frame))
                spans[table] = (start, fh.tell())
            data = json.dumps({**footer, "tables": spans}, default=_json_default).encode()
            fh.write(data)
            fh.write(len(data).to_bytes(8, "little"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit_frames_file(tmp: Path, final: Path, *, fsync: bool = True) -> Path:
    """The second half of :func:`write_frames_file`: flush ``tmp`` to the disk, rename it ``final``
    and flush the directory; on failure ``tmp`` is removed (never renamed, never relied on)."""
    try:
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)  # fsync flushes the file's data whatever the descriptor's mode
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(tmp, final)
        if fsync:
            fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def read_frames_file(path: Path) -> tuple[dict[str, pl.DataFrame], dict]:
    """The frames and the footer a journal file holds."""
    data = memoryview(path.read_bytes())
    size = int.from_bytes(data[-8:], "little")
    footer = json.loads(bytes(data[-8 - size : -8]))
    frames = {t: pl.read_ipc(io.BytesIO(data[a:b])) for t, (a, b) in footer["tables"].items()}
    return frames, footer


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _encode_audit(entries: list[dict]) -> list[dict]:
    out = []
    for e in entries:
        at = e.get("at")
        # Details go through JSON as the audit chain hashes them (non-JSON values as text).
        detail = json.loads(json.dumps(e.get("detail"), default=str))
        out.append({**e, "at": at.isoformat() if isinstance(at, datetime) else None, "detail": detail})
    return out


def _decode_audit(entries: list[dict]) -> list[dict]:
    return [{**e, "at": datetime.fromisoformat(e["at"]) if e.get("at") else None} for e in entries]


def write_entry(directory: Path, seq: int, records: CycleRecords, *, fsync: bool = True) -> Path:
    """Write one cycle's records as a journal entry (see :func:`write_frames_file`); returns its path."""
    tmp, final = write_entry_tmp(directory, seq, records)
    return commit_frames_file(tmp, final, fsync=fsync)


def write_entry_tmp(directory: Path, seq: int, records: CycleRecords) -> tuple[Path, Path]:
    """A journal entry written under its temporary name (see :func:`write_frames_tmp`): ``(tmp, final)``."""
    footer = {
        "cycle_id": records.cycle_id,
        "flow_run_id": records.flow_run_id,
        "started_at": records.started_at.isoformat(),
        "finished_at": records.finished_at.isoformat(),
        "status": records.status,
        "stage_ms": records.stage_ms,
        "audit": _encode_audit(records.audit),
        "n_accounts": records.n_accounts,
        "next_interval_s": records.next_interval_s,
        "error": records.error,
    }
    name = entry_name(seq, records.cycle_id)
    return write_frames_tmp(directory, name, records.tables, footer), directory / name


def entry_name(seq: int, cycle_id: str) -> str:
    """The file name of a cycle's journal entry: landing order, then the cycle."""
    return f"{seq:012d}-{cycle_id}{_SUFFIX}"


def read_entry(path: Path) -> CycleRecords:
    """The :class:`CycleRecords` a journal entry holds."""
    tables, meta = read_frames_file(path)
    return CycleRecords(
        cycle_id=meta["cycle_id"],
        flow_run_id=meta["flow_run_id"],
        started_at=datetime.fromisoformat(meta["started_at"]),
        finished_at=datetime.fromisoformat(meta["finished_at"]),
        status=meta["status"],
        stage_ms=meta["stage_ms"],
        tables=tables,
        audit=_decode_audit(meta["audit"]),
        n_accounts=meta["n_accounts"],
        next_interval_s=meta["next_interval_s"],
        error=meta["error"],
    )


class LanderThread:
    """The lander both journals run: queued entries committed in order behind the caller.

    A subclass calls :meth:`_init_queue`, queues what an earlier run left, calls
    :meth:`_start_lander`, and implements :meth:`_land_queued` (commit one queued
    item; the item's first field is its file) and ``_lander`` (the warehouse
    connection the thread writes with). To land consecutive entries in one
    transaction it sets :attr:`batch_max` and implements :meth:`_batchable`,
    :meth:`_commit_batch` and :meth:`_landed`.
    """

    _lander: Any

    #: Shortest time between the starts of two landings (s); 0 lands each entry as soon as it is
    #: queued. Entries for which :meth:`_land_now` says so do not wait.
    min_interval_s: float = 0.0
    #: Entries one landing commits together at most (1: each alone).
    batch_max: int = 1
    #: A landing that may wait is held back while one of its cycles runs (see :mod:`risklib.cycle_gaps`);
    #: None: never (a :class:`CycleGaps` that holds nothing back).
    gaps: CycleGaps | None = None

    def _init_queue(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple] = deque()
        self._writing = 0  # handed over, not yet written and queued (CycleJournal's writing thread)
        self._busy = False
        self._closed = False
        self._flushing = 0  # callers waiting in flush(): what is queued lands without waiting out the interval
        if self.gaps is None:
            self.gaps = CycleGaps(max_hold_s=0.0)

    def _start_lander(self, name: str) -> None:
        self.gaps.subscribe(self._cond)  # woken when a cycle ends
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        # A process that exits without close() still lands what it wrote (and the
        # lander is not killed inside a commit); what does not land in time stays on disk.
        atexit.register(self._close_at_exit)

    def _land_queued(self, item: tuple) -> None:
        raise NotImplementedError

    def _batchable(self, item: tuple) -> bool:
        """Whether ``item`` may land with others (not one an earlier run left: it is checked and landed alone)."""
        return False

    def _commit_batch(self, items: list[tuple]) -> None:
        """Commit ``items`` in one transaction, or raise having committed nothing."""
        raise NotImplementedError

    def _landed(self, item: tuple) -> None:
        """Bookkeeping once ``item`` is committed as part of a batch (its file removed)."""
        raise NotImplementedError

    def _report_failure(self, message: str) -> None:
        """Make a landing that failed for good visible to the pipeline (see each subclass)."""
        raise NotImplementedError

    def _take(self) -> list[tuple]:
        """The queued items the next landing commits (under the lock, queue not empty): the oldest
        batchable ones, up to :attr:`batch_max`, else the oldest alone."""
        items: list[tuple] = []
        for item in self._queue:
            if not self._batchable(item) or len(items) >= self.batch_max:
                break
            items.append(item)
        return items or [self._queue[0]]

    def _land_items(self, items: list[tuple]) -> None:
        """Several waiting entries in one transaction (one commit instead of one each); alone if that fails."""
        if len(items) == 1:
            self._land_queued(items[0])
            return
        try:
            self._commit_batch(items)
        except Exception as exc:  # noqa: BLE001 - each is landed (or kept and reported) on its own
            log.warning("%s: landing %d entries together failed (%s: %s); landing them one by one",
                        self._thread.name, len(items), type(exc).__name__, exc)
            for item in items:
                self._land_queued(item)
            return
        for item in items:
            self._landed(item)

    @property
    def backlog(self) -> int:
        """Entries handed over but not yet committed to the warehouse (being written or waiting to land)."""
        with self._cond:
            return self._writing + len(self._queue) + (1 if self._busy else 0)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every entry is written and committed (or moved to ``failed/``); False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._writing or self._queue or self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(0.5 if left is None else min(0.5, left))
            finally:
                self._flushing -= 1
        return True

    def _land_now(self) -> bool:
        """Whether the queued entries land without waiting out :attr:`min_interval_s` (under the lock):
        a flush or a close waits for them, or an earlier run left one."""
        return self._flushing > 0 or self._closed or not all(self._batchable(item) for item in self._queue)

    def _stop_lander(self, timeout_s: float | None) -> None:
        """Land what is queued (up to ``timeout_s``), then stop the thread; what is left stays on disk."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._queue.clear()  # what is left is on disk; the next start lands it
            self._cond.notify_all()
        self._thread.join(timeout=30 if timeout_s is None else timeout_s)
        if not self._thread.is_alive():
            self._lander.close()
        self.gaps.unsubscribe(self._cond)
        atexit.unregister(self._close_at_exit)

    def _close_at_exit(self) -> None:
        self.close(timeout_s=30)

    def close(self, timeout_s: float | None = None) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        last_start = float("-inf")
        while True:
            with self._cond:
                due_since: float | None = None  # when the waiting entries could first have landed
                while True:
                    if not self._queue:
                        if self._closed:
                            return
                        due_since = None
                        self._cond.wait()
                        continue
                    if self._land_now():
                        break
                    now = time.monotonic()
                    wait_s = last_start + self.min_interval_s - now
                    if wait_s > 0:
                        self._cond.wait(wait_s)
                        continue
                    if due_since is None:
                        due_since = now
                    hold_s = self.gaps.hold_s(due_since, now)
                    if hold_s <= 0:
                        break
                    self._cond.wait(hold_s)  # woken when the cycle ends
                items = self._take()
                self._busy = True
            last_start = time.monotonic()
            try:
                self._land_items(items)
            except Exception as exc:  # noqa: BLE001 - a dead lander would leave every later flush waiting forever
                names = ", ".join(repr(Path(item[0]).name) for item in items)
                log.exception("%s: landing %s failed; the entries stay on disk for the next start",
                              self._thread.name, names)
                # reported as a kept entry is, so the pipeline says so instead of only logging it
                self._report_failure(f"journal entr(ies) {names} could not be landed (kept in {str(self.directory)!r} "
                                     f"for the next start): {type(exc).__name__}: {exc}")
            finally:
                with self._cond:
                    for item in items:
                        if self._queue and self._queue[0][0] == item[0]:  # close() may have cleared it meanwhile
                            self._queue.popleft()
                    self._busy = False
                    self._cond.notify_all()


class CycleJournal(LanderThread):
    """Durable write-behind of :class:`CycleRecords` into a :class:`Warehouse`.

    Parameters
    ----------
    warehouse
        The session's writer. Used on the caller's thread for the schema check and
        for recording a refused cycle; the lander opens its own connection to the
        same warehouse (a DuckDB connection is not shared between threads).
    directory
        Where entries are kept; default ``journal/`` in the warehouse folder.
    max_backlog
        Entries allowed to wait for landing before :meth:`submit` waits.
    fsync
        Flush each entry to the disk before it counts as durable (survives a
        power loss, not only a crash of the process). Writing and flushing run
        on the journal's own thread: :meth:`submit` returns once the frames are
        checked, with a future that is done once the entry is durable.
    retries
        Landing attempts per entry before it is moved to ``failed/``.
    min_interval_s
        Shortest time between two landings (``monitor.landing_min_interval_s``); 0 lands every
        entry as soon as it is durable. A cycle that ordered actions (the API's gate reads the
        warehouse), a backlog half of ``max_backlog``, :attr:`land_rows` rows waiting, a flush
        or a close land at once.
    gaps
        A :class:`~risklib.cycle_gaps.CycleGaps`: a landing that may wait is held back while a
        cycle runs (at most its ``max_hold_s``). None: landings never wait for a gap.
    """

    def __init__(
        self,
        warehouse: Any,
        directory: str | Path | None = None,
        *,
        max_backlog: int = 8,
        fsync: bool = True,
        retries: int = 5,
        min_interval_s: float = 0.0,
        gaps: Any = None,
    ) -> None:
        from risklib.adapters.warehouse._warehouse import Warehouse

        self.warehouse = warehouse
        layout = warehouse.layout
        self.directory = Path(directory) if directory is not None else layout.lock_file.parent / (
            "journal" if layout.local_root is not None else layout.lock_file.stem + ".journal"
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "failed").mkdir(exist_ok=True)
        self.max_backlog = max(1, int(max_backlog))
        self.min_interval_s = max(0.0, float(min_interval_s))
        self.gaps = gaps
        # what waits for a paced landing goes in one commit, and lands before submit() would block
        self.batch_max = max(self.batch_max, self.max_backlog)
        self._land_at = max(1, self.max_backlog // 2)
        self.fsync = fsync
        self.retries = max(1, int(retries))
        self._lander = Warehouse.open(
            layout.local_root if layout.local_root is not None else layout.catalog_uri,
            migrate=False,
            config=warehouse.config,
            clock=warehouse.clock,
        )
        self._init_queue()  # items: (path, records or None to read them back, recovered)
        # Writing and flushing a 200k-row entry takes 60-300 ms (ext4 also writes out the lander's
        # Parquet files first); one thread does it in submission order, off the cycle.
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-sync")
        self._failure: str | None = None
        self.landed = 0
        self._submitted_at: dict[str, float] = {}
        self.lag_ms: deque[float] = deque(maxlen=1000)  # submit -> committed, per entry
        self.durable_ms: deque[float] = deque(maxlen=1000)  # submit -> written and flushed, per entry
        for stale in self.directory.glob(f"{TMP_PREFIX}*"):
            stale.unlink(missing_ok=True)  # never renamed: the cycle did not complete its record
        leftovers = sorted(self.directory.glob(f"[0-9]*{_SUFFIX}"))
        self._seq = int(leftovers[-1].name.split("-", 1)[0]) if leftovers else 0
        for path in leftovers:
            self._queue.append((path, None, True))
        self._start_lander("warehouse-lander")
        if leftovers:
            log.warning("landing %d cycle(s) left in %s by an earlier run", len(leftovers), self.directory)
            self.flush()

    # --- the caller's side ---------------------------------------------------------

    def submit(self, records: CycleRecords) -> Future:
        """Check ``records`` against the schema and hand them to the journal; return a future that is
        done once their entry is written, durable and queued for landing.

        The future raises (``OSError``) if the entry could not be flushed to the disk; the entry is
        then removed, never landed: whoever relies on the cycle being recorded must wait for it.

        Raises
        ------
        WarehouseError
            A frame breaks the schema (the cycle is recorded as failed, as
            :meth:`Warehouse.write_cycle` does), or an earlier cycle could not be landed.
        """
        with self._cond:
            failure, self._failure = self._failure, None
        if failure is not None:
            raise WarehouseError(failure)
        try:
            odd = [table for table in records.tables if table not in CYCLE_TABLES]
            if odd:
                raise WarehouseError(f"table={odd[0]!r}: not a cycle table")
            # the risk state's bookkeeping is encoded to JSON when it lands, off the cycle
            prepared = self.warehouse.prepare_all(records.tables, cycle_id=records.cycle_id, defer_state_json=True)
        except WarehouseError:
            self.warehouse.write_cycle(records)  # refuses again, records the failed cycle, raises
            raise  # pragma: no cover - write_cycle raised above
        # the warehouse's columns and types; the risk state keeps its bookkeeping, encoded when it lands
        records = replace(records, tables=prepared, checked=frozenset(prepared) - {"risk_state"})
        with self._cond:
            while len(self._queue) + self._writing >= self.max_backlog and not self._closed:
                self._cond.wait(0.5)
            self._seq += 1
            seq = self._seq
            self._writing += 1
            self._submitted_at[entry_name(seq, records.cycle_id)] = time.monotonic()
        return self._syncer.submit(self._make_durable, seq, records)

    def _make_durable(self, seq: int, records: CycleRecords) -> None:
        """Write and flush one entry, then queue it for landing (the journal thread, in order).

        Writing goes here too, not only the flush: on ext4 a new file's write can wait
        for a journal commit that another file's fsync started (a 37 MB write took
        ~280 ms instead of ~25 behind the lander's Parquet files).
        """
        path = self.directory / entry_name(seq, records.cycle_id)
        try:
            tmp, final = write_entry_tmp(self.directory, seq, records)
            path = commit_frames_file(tmp, final, fsync=self.fsync)
        except BaseException:
            self._synced(path)
            raise
        self._synced(path, records)

    def _synced(self, path: Path, records: CycleRecords | None = None) -> None:
        """``path`` is durable and queued for landing (``records`` given), or failed (not given)."""
        with self._cond:
            self._writing -= 1
            if records is not None:
                self._queue.append((path, records, False))
                self.durable_ms.append((time.monotonic() - self._submitted_at.get(path.name, time.monotonic())) * 1e3)
            else:
                self._submitted_at.pop(path.name, None)
            self._cond.notify_all()

    def close(self, timeout_s: float | None = None) -> None:
        """Land everything still queued (up to ``timeout_s``), then stop the lander (idempotent).

        Entries not landed by then stay in the journal for the next start.
        """
        if not self._closed:
            self._stop_lander(timeout_s)  # waits for the entries being written too
            self._syncer.shutdown(wait=True)  # one still writing after a timeout is landed at the next start

    # --- the lander thread -----------------------------------------------------------

    #: Entries one landing commits together at most (at least ``max_backlog``).
    batch_max = 4
    #: Rows waiting that land at once, paced or not. Pacing saves commits, most of the cost of
    #: landing a small cycle; a large cycle's landing is mostly its rows, and several landed
    #: together would take one long burst of CPU from the cycle they overlap (10,000 accounts:
    #: p99 +40 ms measured when two or three 200k-row cycles landed together).
    land_rows = 50_000

    def _land_now(self) -> bool:
        waiting = [records for _, records, _ in self._queue if records is not None]
        return (
            super()._land_now()
            or len(self._queue) >= self._land_at
            # a cycle that acted: the API's gate reads the warehouse
            or any("emergency_actions" in records.tables for records in waiting)
            or sum(f.height for records in waiting for f in records.tables.values()) >= self.land_rows
        )

    def _batchable(self, item: tuple) -> bool:
        _, records, recovered = item
        return records is not None and not recovered

    def _commit_batch(self, items: list[tuple]) -> None:
        self._lander.write_cycles([records for _, records, _ in items])

    def _landed(self, item: tuple) -> None:
        self._done(item[0])

    def _land_queued(self, item: tuple) -> None:
        path, records, recovered = item
        self._land(path, records, recovered)

    def _done(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.landed += 1
        started = self._submitted_at.pop(path.name, None)
        if started is not None:
            self.lag_ms.append((time.monotonic() - started) * 1e3)

    def _land(self, path: Path, records: CycleRecords | None, recovered: bool) -> None:
        error = ""
        for attempt in range(1, self.retries + 1):
            try:
                rec = records if records is not None else read_entry(path)
                if recovered and self._already_landed(rec.cycle_id):
                    log.info("cycle %s was already in the warehouse; journal entry removed", rec.cycle_id)
                else:
                    self._lander.write_cycle(rec)
                self._done(path)
                return
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then kept and reported
                error = f"{type(exc).__name__}: {exc}"
                log.warning("landing %s failed (attempt %d/%d): %s", path.name, attempt, self.retries, error)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        kept = self.directory / "failed" / path.name
        shutil.move(str(path), kept)
        self._submitted_at.pop(path.name, None)
        log.error("cycle record %s could not be landed; kept in %s: %s", path.name, kept, error)
        self._report_failure(f"journal entry {path.name!r} could not be landed (kept in {str(kept)!r}): {error}")

    def _report_failure(self, message: str) -> None:
        # the next submit raises it: that cycle is recorded as failed and publishes no heartbeat
        with self._cond:
            self._failure = message

    def _already_landed(self, cycle_id: str) -> bool:
        rows = self._lander.query(
            "SELECT count(*) AS n FROM cycle_runs WHERE cycle_id = ? AND status = 'completed'", [cycle_id]
        )
        return bool(rows["n"][0])
