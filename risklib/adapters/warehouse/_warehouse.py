"""The :class:`Warehouse`: schema migrations, transactional cycle writes, audit chain, reads."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from risklib.adapters.warehouse import _audit, _connect, _validate
from risklib.adapters.warehouse._audit import VerifyResult
from risklib.adapters.warehouse._config import MIGRATIONS_DIR, VIEWS_DIR, WarehouseConfig, load_config
from risklib.clock import Clock, SystemClock
from risklib.errors import WarehouseError

#: Tables :meth:`Warehouse.append` may write outside a cycle (events from the API, the
#: escalation sender, the broker and operators). Metrics, cycle runs and the audit log
#: itself are written only through :meth:`Warehouse.write_cycle` / the audit methods.
APPEND_TABLES = frozenset(
    {
        "acknowledgements", "overrides", "threshold_changes", "notifications", "notification_events",
        "webhook_rejections", "emergency_actions", "broker_orders", "broker_fills", "incidents", "alerts",
        "quarantine", "risk_state", "manual_action_requests", "correlation_snapshots",
    }
)
#: Tables a cycle may carry in :attr:`CycleRecords.tables`.
CYCLE_TABLES = APPEND_TABLES | {
    "realtime_risk_metrics", "position_risk_metrics", "rules_fired", "gate_denials", "market_quotes",
}
#: Bookkeeping table of applied migrations (created before any migration runs).
MIGRATIONS_TABLE = "schema_migrations"
_AUDIT_INLINE_ROWS = 50  # appends up to this many rows are copied into their audit entry
_PARALLEL_SCAN_ROWS = 50_000  # rows per Arrow batch handed to DuckDB for large frames
#: Frames at least this large (in a local warehouse) are written to Parquet by Polars and
#: registered with ``ducklake_add_data_files`` inside the transaction, instead of
#: INSERT ... SELECT through Arrow: for 200k position rows x 13 columns DuckDB's scan of
#: Polars' strings plus its Parquet writer took ~140-180 ms, Polars' writer ~30-45 ms and
#: the registration (footer read, stats) ~15 ms. Same rows, same types, same snapshot.
_FILE_ROWS = 20_000
#: Codec and row-group size of those files. Uncompressed: LZ4/snappy cost 30-60 ms more
#: CPU per 200k rows for files only ~12 % smaller (risk figures are near-random doubles;
#: strings are dictionary-encoded anyway), and the retention flow's compaction rewrites
#: these files with DuckLake's own codec. One row group per cycle file: Polars encodes
#: columns in parallel either way, and ducklake_add_data_files reads half the footer
#: statistics (~3 ms less CPU per 200k-row file than with two 100k groups).
_FILE_COMPRESSION = "uncompressed"
_FILE_ROW_GROUP = 262_144
_SINGLE_THREADED_WRITES = True  # see Warehouse._single_threaded
#: Whether write_cycle checks and encodes its large frames on a worker thread while it
#: checks the small ones, inserts them and chains the audit entries (see _FileEncode).
_ENCODE_IN_BACKGROUND = True


class _Stream:
    """Hand a Polars frame to DuckDB through the Arrow C stream interface (no pyarrow needed)."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self._frame = frame

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self._frame.__arrow_c_stream__(requested_schema)


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, columns: str, frame: pl.DataFrame) -> None:
    """``INSERT INTO table (columns) SELECT columns FROM frame`` on ``con``.

    DuckDB finds the frame by its Python variable name (a replacement scan); registering
    and unregistering a view per insert took twice as long (~1.6 ms instead of ~0.8 for a
    small frame here), and the escalate stage inserts three on every cycle that pages.
    ``table`` and ``columns`` come from the catalog, never from input.
    """
    incoming_rows = _Stream(frame)  # noqa: F841 - read by name by the SQL below
    con.execute(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM incoming_rows')


class _FileEncode:
    """One large cycle frame being checked, cast and written to Parquet on a worker thread.

    The worker runs :func:`_validate.prepare` and :func:`_validate.storage_frame` and writes
    the file (Polars releases the GIL for all three), so a cycle's wall time is about
    max(encode, the rest) instead of their sum. It never touches DuckDB. Its result is
    None once the file is written, or the prepared frame when the frame cannot be stored
    exactly as a file (the writer then INSERTs it). Errors (a schema violation) surface in
    :meth:`result`. Until :attr:`handed_over` the encode owns its file: :meth:`discard`
    waits for the worker and deletes it.
    """

    def __init__(self, table: str, frame: pl.DataFrame, columns: list[_validate.Column], cycle_id: str | None,
                 path: Path, *, prepared: bool = False) -> None:
        self.table = table
        self._prepared = prepared
        self.path = path
        self.handed_over = False
        self._future: concurrent.futures.Future[pl.DataFrame | None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(frame, columns, cycle_id), name=f"warehouse-encode-{table}", daemon=True
        )
        self._thread.start()

    def _run(self, frame: pl.DataFrame, columns: list[_validate.Column], cycle_id: str | None) -> None:
        try:
            prepared = frame if self._prepared else _validate.prepare(self.table, frame, columns, cycle_id=cycle_id)
            # A cycle_id the frame left out was filled in with this cycle's id in every row.
            constants = {"cycle_id": cycle_id} if cycle_id is not None and "cycle_id" not in frame.columns else None
            stored = _validate.storage_frame(prepared, columns, constants=constants)
            if stored is None:
                self._future.set_result(prepared)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_file(stored, self.path)
            self._future.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer thread by result()
            self._future.set_exception(exc)

    def result(self) -> pl.DataFrame | None:
        """Wait for the worker; None when the file is written, else the prepared frame to INSERT."""
        return self._future.result()

    def discard(self) -> None:
        """Wait for the worker and delete its file, unless the transaction took it over."""
        self._thread.join()
        if not self.handed_over:
            self.path.unlink(missing_ok=True)


def _check_cycle(records: CycleRecords) -> None:
    """What a cycle write refuses before looking at any frame: an unknown status or table."""
    if records.status not in ("completed", "failed"):
        raise WarehouseError(f"cycle_runs.status={records.status!r}: must be 'completed' or 'failed'")
    for table in records.tables:
        if table not in CYCLE_TABLES:
            raise WarehouseError(f"table={table!r}: not a cycle table (allowed: {sorted(CYCLE_TABLES)})")


def _write_file(stored: pl.DataFrame, path: Path) -> None:
    """Write a data file and flush it, and its name, to the disk.

    The catalog COMMIT that follows points at this file: were it still only in the
    page cache, a power loss after the COMMIT would leave committed history
    pointing at a truncated file (and the cycle's journal entry already deleted).
    """
    stored.write_parquet(path, compression=_FILE_COMPRESSION, statistics=True, row_group_size=_FILE_ROW_GROUP)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class CycleRecords:
    """Everything one cycle writes; :meth:`Warehouse.write_cycle` lands it in one transaction.

    Attributes
    ----------
    cycle_id
        Unique id of the cycle.
    flow_run_id
        Prefect flow-run id, or None outside Prefect.
    started_at, finished_at
        Timezone-aware UTC times of the cycle.
    status
        ``"completed"`` or ``"failed"``.
    stage_ms
        Milliseconds per stage, e.g. ``{"ingest": 3.2, "metrics": 41.0}``.
    tables
        Table name → rows to append. A frame without ``cycle_id`` gets this cycle's id.
        Producers may use ``frames.py`` column names (see ``_validate.ALIASES``).
    audit
        Audit entries: dicts with ``actor``, ``action``, optional ``subject``, ``detail``, ``at``.
    n_accounts, next_interval_s, error
        Recorded in ``cycle_runs``.
    checked
        Tables whose frames this process has already checked and cast with :meth:`Warehouse.prepare`
        (what the journal hands its lander): landing them skips a second pass. Never set for an
        entry read back from disk, whose frames are checked again.
    """

    cycle_id: str
    flow_run_id: str | None
    started_at: datetime
    finished_at: datetime
    status: str = "completed"
    stage_ms: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    audit: list[dict] = field(default_factory=list)
    n_accounts: int | None = None
    next_interval_s: float | None = None
    error: str | None = None
    checked: frozenset[str] = frozenset()


def append_audit_entry(table: str, prepared: pl.DataFrame, *, actor: str, action: str, subject: str | None) -> dict:
    """The audit entry of an append: small appends copied in, larger ones by digest."""
    detail: dict[str, object] = {"table": table, "rows": prepared.height}
    if prepared.height <= _AUDIT_INLINE_ROWS:
        detail["records"] = prepared.to_dicts()
    else:
        detail["digest"] = _frame_digest(prepared)
    return {"actor": actor, "action": action, "subject": subject or table, "detail": detail}


def _frame_digest(frame: pl.DataFrame) -> str:
    return hashlib.sha256(frame.write_json().encode()).hexdigest()


def _to_polars(rel: duckdb.DuckDBPyRelation, *, exact_decimals: bool) -> pl.DataFrame:
    frame = pl.DataFrame(rel)
    fixes = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime) and dtype.time_zone not in (None, "UTC"):
            fixes.append(pl.col(name).dt.convert_time_zone("UTC"))
        elif isinstance(dtype, pl.Decimal) and not exact_decimals:
            fixes.append(pl.col(name).cast(pl.Float64))
    return frame.with_columns(fixes) if fixes else frame


class Warehouse:
    """The audit warehouse (DuckLake: SQLite catalog + Parquet files by default).

    Open with :meth:`open`. Readers (``read_only=True``) never lock anything and see
    only whole committed cycles; writers serialise on a lock file so the audit chain
    has one head.

    Attributes
    ----------
    con
        DuckDB connection with the catalog attached and ``USE``'d (plain table names work).
    config
        Settings in force.
    read_only
        True for reader connections.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        layout: _connect.Layout,
        config: WarehouseConfig,
        *,
        read_only: bool,
        clock: Clock,
    ) -> None:
        self.con = con
        self.layout = layout
        self.config = config
        self.read_only = read_only
        self.clock = clock
        self._columns: dict[str, list[_validate.Column]] = {}
        self._new_head: tuple[int, str] | None = None
        self._table_dirs: dict[str, Path] = {}
        self._written_files: list[Path] = []  # Parquet files added by the open transaction
        self._pin: _connect.CatalogPin | None = None

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: str | Path | None = None,
        *,
        read_only: bool = False,
        migrate: bool = True,
        config: WarehouseConfig | None = None,
        clock: Clock | None = None,
    ) -> "Warehouse":
        """Attach the warehouse at ``location`` (folder or ``ducklake:`` catalog URI).

        Parameters
        ----------
        location
            Folder holding ``catalog.sqlite`` and ``files/``; default ``$RISK_WAREHOUSE``,
            then the config's ``location``, then ``warehouse/data/`` in the project.
        read_only
            Reader connection: no lock, no writes, no migrations.
        migrate
            Apply pending migrations and views first (writers only).
        config
            Settings; default the shipped ``risklib/defaults/warehouse.toml``.
        clock
            Source of ``at`` for audit entries that carry none; default wall clock.
        """
        cfg = config or load_config()
        layout = _connect.layout_for(location, cfg)
        con = _connect.attach(layout, cfg, read_only=read_only)
        wh = cls(con, layout, cfg, read_only=read_only, clock=clock or SystemClock())
        if not read_only and layout.sqlite_file is not None:
            wh._pin = _connect.CatalogPin(layout.sqlite_file)
        if migrate and not read_only:
            try:
                wh.migrate()
            except BaseException:
                wh.close()
                raise
        return wh

    def close(self) -> None:
        """Close the connection (idempotent)."""
        try:
            self.con.close()
        except duckdb.Error:  # pragma: no cover - already closed
            pass
        if self._pin is not None:
            self._pin.close()

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writer(self) -> None:
        if self.read_only:
            raise WarehouseError(f"location={self.layout.catalog_uri!r}: opened read-only; writes are refused")

    # --- migrations ------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending ``warehouse/migrations/NNNN_*.sql`` in order, then (re)create changed views.

        Each migration runs in its own transaction with its ``schema_migrations`` row,
        so a failed migration leaves nothing behind and is retried next time.

        Returns
        -------
        list[str]
            Names of the migrations and views applied by this call (empty when up to date).
        """
        self._require_writer()
        applied: list[str] = []
        with _connect.writer_lock(self.layout.lock_file, self.config.writer_lock_timeout_s):
            self.con.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
                "(name VARCHAR NOT NULL, checksum VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
            )
            done = {
                name: checksum
                for name, checksum in self.con.execute(f"SELECT name, checksum FROM {MIGRATIONS_TABLE}").fetchall()
            }
            files = sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))
            views = sorted(VIEWS_DIR.glob("*.sql"))
            for path, kind in [(p, "migration") for p in files] + [(p, "view") for p in views]:
                name = f"{kind}s/{path.name}"
                sql = path.read_text()
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if kind == "migration" and name in done:
                    if done[name] != checksum:
                        raise WarehouseError(
                            f"migration={path.name!r}: changed after it was applied (checksum {checksum[:12]} != "
                            f"{done[name][:12]}); add a new migration instead of editing an applied one"
                        )
                    continue
                if kind == "view" and done.get(name) == checksum:
                    continue
                try:
                    self.con.execute("BEGIN")
                    self.con.execute(sql)  # a file of several statements; our own SQL, not user input
                    self.con.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?)", [name, checksum, self.clock.now()]
                    )
                    if "audit_log" in self.tables():  # from 0002 on, schema changes are audited too
                        self._append_audit([{"actor": "warehouse", "action": f"schema.{kind}", "subject": name,
                                             "detail": {"checksum": checksum}}])
                    self._commit()
                except duckdb.Error as exc:
                    self._rollback()
                    raise WarehouseError(f"{kind}={path.name!r}: {exc}") from exc
                applied.append(name)
        self._columns.clear()
        self._table_dirs.clear()
        return applied

    def tables(self) -> list[str]:
        """Names of the warehouse's tables."""
        rows = self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY table_name", [_connect.CATALOG]
        ).fetchall()
        return [r[0] for r in rows]

    def columns(self, table: str) -> list[_validate.Column]:
        """The columns of ``table`` as the catalog describes them."""
        if table not in self._columns:
            rows = self.con.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_catalog = ? AND table_name = ? ORDER BY ordinal_position",
                [_connect.CATALOG, table],
            ).fetchall()
            if not rows:
                raise WarehouseError(f"table={table!r}: no such table (run `riskctl warehouse migrate`)")
            self._columns[table] = [_validate.Column(n, t, nullable == "YES") for n, t, nullable in rows]
        return self._columns[table]

    # --- writes ----------------------------------------------------------------------

    def prepare(self, table: str, frame: pl.DataFrame, *, cycle_id: str | None = None,
                defer_state_json: bool = False) -> pl.DataFrame:
        """Check and cast ``frame`` for ``table`` (see :func:`_validate.prepare`); raises WarehouseError."""
        return _validate.prepare(table, frame, self.columns(table), cycle_id=cycle_id,
                                 defer_state_json=defer_state_json)

    def prepare_all(self, tables: dict[str, pl.DataFrame], *, cycle_id: str | None = None,
                    defer_state_json: bool = False) -> dict[str, pl.DataFrame]:
        """:meth:`prepare` for each of ``tables`` at once (see :func:`_validate.prepare_all`); raises
        WarehouseError for the first bad table, as :meth:`prepare` table by table would."""
        columns = {table: self.columns(table) for table in tables}
        return _validate.prepare_all(tables, columns, cycle_id=cycle_id, defer_state_json=defer_state_json)

    def write_cycle(self, records: CycleRecords) -> None:
        """Land one cycle: its tables, its ``cycle_runs`` row and its audit entries, in ONE transaction.

        Every frame is checked before the transaction starts. On refusal (schema
        violation or a database error mid-write) nothing of the cycle remains, the
        cycle is recorded as ``failed`` with the reason in a separate small
        transaction, and :class:`WarehouseError` is raised naming table, column and value.
        """
        self._require_writer()
        encodes: dict[str, _FileEncode] = {}
        try:
            _check_cycle(records)
            self._start_encodes(records.tables, records.cycle_id, encodes, prepared=records.checked)
            prepared: dict[str, pl.DataFrame] = {}
            for table, frame in records.tables.items():
                if table in encodes:
                    continue
                try:
                    prepared[table] = frame if table in records.checked else self.prepare(
                        table, frame, cycle_id=records.cycle_id)
                except WarehouseError:
                    # A refusal names the first bad table in the cycle's order, as when every
                    # frame was checked in turn: an earlier large frame's error comes first.
                    for earlier in records.tables:
                        if earlier == table:
                            break
                        if earlier in encodes:
                            encodes[earlier].result()
                    raise
            run = self.prepare("cycle_runs", self._cycle_run_row(records, records.status, records.error))
            self._transaction(prepared | {"cycle_runs": run}, self._cycle_entries(records), encodes)
        except WarehouseError as exc:
            self._discard_encodes(encodes)
            self._record_failed_cycle(records, str(exc))
            raise
        except (duckdb.Error, ValueError) as exc:
            self._discard_encodes(encodes)
            msg = f"cycle_id={records.cycle_id!r}: {exc}"
            self._record_failed_cycle(records, msg)
            raise WarehouseError(msg) from exc
        except BaseException:
            self._discard_encodes(encodes)
            raise

    def write_cycles(self, batch: list[CycleRecords]) -> None:
        """Land several whole cycles in ONE transaction: what :meth:`write_cycle` lands for each.

        For a write-behind catching up: one commit (and one data file per large
        table) instead of one per cycle. Readers still never see part of a cycle.
        On any refusal nothing of the batch remains and nothing is recorded as
        failed: the caller lands the cycles one by one, which records each refusal.
        """
        self._require_writer()
        parts: dict[str, list[tuple[pl.DataFrame, str]]] = {}
        runs: list[tuple[pl.DataFrame, str]] = []
        entries: list[dict] = []
        for records in batch:
            _check_cycle(records)
            for table, frame in records.tables.items():
                parts.setdefault(table, []).append((frame, records.cycle_id, table in records.checked))
            runs.append((self._cycle_run_row(records, records.status, records.error), records.cycle_id, False))
            entries += self._cycle_entries(records)
        merged = {t: self._prepare_together(t, fs) for t, fs in parts.items()}
        encodes: dict[str, _FileEncode] = {}
        try:
            self._start_encodes(merged, None, encodes, prepared=frozenset(merged))
            small = {t: f for t, f in merged.items() if t not in encodes}
            self._transaction(small | {"cycle_runs": self._prepare_together("cycle_runs", runs)}, entries, encodes)
        except duckdb.Error as exc:
            self._discard_encodes(encodes)
            ids = ", ".join(r.cycle_id for r in batch)
            raise WarehouseError(f"cycles {ids}: {exc}") from exc
        except BaseException:
            self._discard_encodes(encodes)
            raise

    def _prepare_together(self, table: str, frames: list[tuple[pl.DataFrame, str, bool]]) -> pl.DataFrame:
        """``table``'s frames of several cycles (each with its cycle id and whether it is checked already),
        checked and cast as one frame.

        Frames that share a schema and already carry their cycle ids (what the journal
        hands over) are checked in one pass: the checks are row by row, so this gives what
        checking each and concatenating gives. The lander's checks then cost ~2 ms of CPU
        per 100-account cycle instead of ~6, much of it holding the GIL the cycle needs.
        Frames checked already (:attr:`CycleRecords.checked`) are only concatenated.
        Otherwise each frame is checked with its own cycle id.
        """
        first = frames[0][0]
        if all(checked for _, _, checked in frames):
            return pl.concat([f for f, _, _ in frames], how="vertical") if len(frames) > 1 else first
        has_ids = not any(c.name == "cycle_id" for c in self.columns(table)) or all(
            "cycle_id" in f.columns and f.get_column("cycle_id").null_count() == 0 for f, _, _ in frames)
        if len(frames) > 1 and has_ids and all(f.schema == first.schema for f, _, _ in frames):
            return self.prepare(table, pl.concat([f for f, _, _ in frames], how="vertical"))
        return pl.concat([f if checked else self.prepare(table, f, cycle_id=cid) for f, cid, checked in frames],
                         how="vertical")

    @staticmethod
    def _cycle_entries(records: CycleRecords) -> list[dict]:
        """A cycle's audit entries: its own, then the ``cycle.record`` entry of the write."""
        entries = [dict(e) for e in records.audit] + [
            {
                "actor": "pipeline",
                "action": "cycle.record",
                "subject": records.cycle_id,
                "at": records.finished_at,
                "detail": {"status": records.status, "flow_run_id": records.flow_run_id,
                           "rows": {t: f.height for t, f in records.tables.items()}},
            }
        ]
        for e in entries:
            e.setdefault("at", records.finished_at)
        return entries

    def _start_encodes(self, tables: dict[str, pl.DataFrame], cycle_id: str | None,
                       encodes: dict[str, _FileEncode], *, prepared: frozenset[str] = frozenset()) -> None:
        """Start a :class:`_FileEncode` into ``encodes`` for each frame large enough to become a Parquet file.

        Each is added as soon as it starts, so the caller can discard it if a later one fails to start.
        ``prepared``: the tables whose frames are :func:`_validate.prepare`'d already (ids included).
        """
        if not _ENCODE_IN_BACKGROUND or self.layout.local_root is None:
            return
        for table, frame in tables.items():
            if frame.height >= _FILE_ROWS:
                # Catalog reads (columns, folder) stay on this thread; the worker gets plain values.
                path = self._table_dir(table) / f"ducklake-{uuid.uuid4()}.parquet"
                encodes[table] = _FileEncode(table, frame, self.columns(table), cycle_id, path,
                                             prepared=table in prepared)

    @staticmethod
    def _discard_encodes(encodes: dict[str, _FileEncode]) -> None:
        for enc in encodes.values():
            enc.discard()

    def append(self, table: str, frame: pl.DataFrame, *, actor: str, action: str, subject: str | None = None) -> None:
        """Append rows outside a cycle (acks, overrides, outbox events, ...) plus their audit entry, in one transaction.

        Parameters
        ----------
        table
            One of :data:`APPEND_TABLES`.
        frame
            Rows to append.
        actor, action
            Who did it (operator id, ``"escalation"``, ``"api"``) and what (``"ack"``, ``"override.create"``).
        subject
            What it concerns (incident key, account); default the table name.
        """
        self._require_writer()
        if table not in APPEND_TABLES:
            raise WarehouseError(f"table={table!r}: not appendable (allowed: {sorted(APPEND_TABLES)})")
        prepared = self.prepare(table, frame)
        entry = append_audit_entry(table, prepared, actor=actor, action=action, subject=subject)
        try:
            self._transaction({table: prepared}, [entry])
        except duckdb.Error as exc:
            raise WarehouseError(f"{table}: append refused: {exc}") from exc

    def audit(self, actor: str, action: str, subject: str | None = None, detail: object = None, *, at: datetime | None = None) -> int:
        """Append one audit entry on its own; returns its ``seq``."""
        self._require_writer()
        entry = {"actor": actor, "action": action, "subject": subject, "detail": detail, "at": at}
        with _connect.writer_lock(self.layout.lock_file, self.config.writer_lock_timeout_s):
            self.con.execute("BEGIN")
            try:
                rows = self._append_audit([entry])
                self._commit()
            except BaseException:
                self._rollback()
                raise
        return int(rows["seq"][-1])

    def _cycle_run_row(self, records: CycleRecords, status: str, error: str | None) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "cycle_id": [records.cycle_id],
                "flow_run_id": [records.flow_run_id],
                "started_at": [records.started_at],
                "finished_at": [records.finished_at],
                "status": [status],
                "error": [error],
                "stage_ms": [json.dumps({k: float(v) for k, v in records.stage_ms.items()}, sort_keys=True)],
                "n_accounts": [records.n_accounts],
                "next_interval_s": [records.next_interval_s],
            },
            schema_overrides={"flow_run_id": pl.String, "error": pl.String, "n_accounts": pl.Int64, "next_interval_s": pl.Float64},
        )

    def _record_failed_cycle(self, records: CycleRecords, reason: str) -> None:
        """Record a refused cycle as failed (its own small transaction); never raises over the original error."""
        try:
            at = records.finished_at if isinstance(records.finished_at, datetime) and records.finished_at.tzinfo else self.clock.now()
            started = records.started_at if isinstance(records.started_at, datetime) and records.started_at.tzinfo else at
            run = self.prepare(
                "cycle_runs",
                self._cycle_run_row(
                    CycleRecords(records.cycle_id, records.flow_run_id, started, at, "failed", records.stage_ms,
                                 n_accounts=records.n_accounts, next_interval_s=records.next_interval_s),
                    "failed",
                    reason,
                ),
            )
            entry = {"actor": "warehouse", "action": "cycle.refused", "subject": records.cycle_id, "at": at,
                     "detail": {"reason": reason}}
            self._transaction({"cycle_runs": run}, [entry])
        except Exception:  # noqa: BLE001 - the caller re-raises the original refusal
            pass

    def _transaction(
        self, frames: dict[str, pl.DataFrame], entries: list[dict], encodes: dict[str, _FileEncode] | None = None
    ) -> None:
        """Insert every frame and the audit entries in one transaction under the writer lock.

        ``encodes`` (large frames being written to Parquet by workers) are waited for last,
        after the small frames and the audit entries, and their files added then.
        """
        with _connect.writer_lock(self.layout.lock_file, self.config.writer_lock_timeout_s), self._single_threaded():
            self.con.execute("BEGIN")
            try:
                for table, frame in frames.items():
                    if frame.height:
                        self._insert(table, frame)
                self._append_audit(entries)
                for table, enc in (encodes or {}).items():
                    unstored = enc.result()
                    if unstored is not None:
                        self._insert(table, unstored)
                        continue
                    enc.handed_over = True  # from here on _rollback/_commit decide the file's fate
                    self._written_files.append(enc.path)
                    self.con.execute("CALL ducklake_add_data_files(?, ?, ?)", [_connect.CATALOG, table, str(enc.path)])
                self._commit()
            except BaseException:
                self._rollback()
                raise

    @contextlib.contextmanager
    def _single_threaded(self) -> Iterator[None]:
        """Run a cycle write on one DuckDB thread (local warehouses, default thread count only).

        Its statements are small (large frames are encoded by Polars' own threads, see
        :meth:`_add_file`) and DuckLake's COMMIT runs dozens of tiny catalog queries; with
        DuckDB's worker pool awake they cost ~40 ms more CPU and ~20 ms more wall time per
        200k-row cycle on 2 cores. Reads and retention keep every thread.
        """
        if self.layout.local_root is None or self.config.threads or not _SINGLE_THREADED_WRITES:
            yield
            return
        self.con.execute("SET threads = 1")
        try:
            yield
        finally:
            self.con.execute("RESET threads")

    def _insert(self, table: str, frame: pl.DataFrame) -> None:
        if frame.height >= _FILE_ROWS and self.layout.local_root is not None and self._add_file(table, frame):
            return
        # `table` is checked against the catalog (self.columns) and the allowlists; columns
        # come from the catalog too, so nothing user-supplied is spliced into the SQL.
        cols = ", ".join(f'"{c.name}"' for c in self.columns(table))
        if frame.height >= 2 * _PARALLEL_SCAN_ROWS:
            # Several Arrow batches let DuckDB scan the frame on all cores (~25 % faster at 200k rows).
            step = _PARALLEL_SCAN_ROWS
            frame = pl.concat([frame.slice(i, step) for i in range(0, frame.height, step)], rechunk=False)
        insert_frame(self.con, table, cols, frame)

    def _add_file(self, table: str, frame: pl.DataFrame) -> bool:
        """Write ``frame`` as a Parquet file in ``table``'s folder and add it in the open transaction.

        Returns False (nothing written) when the frame cannot be stored exactly as a file;
        the caller then INSERTs it. The file is deleted again if the transaction rolls back.
        """
        stored = _validate.storage_frame(frame, self.columns(table))
        if stored is None:
            return False
        folder = self._table_dir(table)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"ducklake-{uuid.uuid4()}.parquet"
        self._written_files.append(path)
        _write_file(stored, path)
        self.con.execute("CALL ducklake_add_data_files(?, ?, ?)", [_connect.CATALOG, table, str(path)])
        return True

    def _table_dir(self, table: str) -> Path:
        """The folder DuckLake keeps ``table``'s data files in (so the catalog stores a relative path)."""
        if table not in self._table_dirs:
            meta = f"__ducklake_metadata_{_connect.CATALOG}"
            row = self.con.execute(
                f"SELECT s.path, s.path_is_relative, t.path, t.path_is_relative FROM {meta}.ducklake_table t "
                f"JOIN {meta}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL "
                "WHERE t.table_name = ? AND t.end_snapshot IS NULL",
                [table],
            ).fetchone()
            if row is None:
                raise WarehouseError(f"table={table!r}: not in the DuckLake catalog")
            schema_path, schema_rel, table_path, table_rel = row
            base = Path(self.layout.data_path)
            schema_dir = base / schema_path if schema_rel else Path(schema_path)
            self._table_dirs[table] = schema_dir / table_path if table_rel else Path(table_path)
        return self._table_dirs[table]

    def _discard_written_files(self) -> None:
        for path in self._written_files:
            path.unlink(missing_ok=True)
        self._written_files.clear()

    # The audit head (last seq and hash) is kept in a small file beside the writer lock,
    # read and written only under that lock, so a cycle need not scan audit_log for it.
    # The file says "pending" between writing entries and COMMIT; a writer that finds it
    # pending (a crash in between) or missing falls back to reading the table.

    @property
    def _head_file(self) -> Path:
        return self.layout.lock_file.with_name(self.layout.lock_file.stem + ".audit_head")

    def _audit_head(self) -> tuple[int, str]:
        try:
            state, seq, head = self._head_file.read_text().split()
            if state == "ok":
                return int(seq), head
        except (OSError, ValueError):
            pass
        row = self.con.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, _audit.GENESIS) if row is None else (int(row[0]), str(row[1]))

    def _append_audit(self, entries: list[dict]) -> pl.DataFrame:
        """Chain ``entries`` after the current head and insert them (inside the caller's transaction and lock).

        The caller finishes with :meth:`_commit` (or ROLLBACK), which records the new head.
        """
        if not entries:
            return _audit.chain([], head_seq=0, head_hash=_audit.GENESIS, default_at=self.clock.now())
        seq, head = self._audit_head()
        rows = _audit.chain(entries, head_seq=seq, head_hash=head, default_at=self.clock.now())
        self._insert("audit_log", rows)
        self._new_head = (int(rows["seq"][-1]), str(rows["hash"][-1]))
        self._head_file.write_text(f"pending {self._new_head[0]} {self._new_head[1]}\n")
        return rows

    def _rollback(self) -> None:
        """ROLLBACK the open transaction; the head file stays "pending", so the next writer reads the table."""
        self._new_head = None
        try:
            self.con.execute("ROLLBACK")
        finally:
            self._discard_written_files()

    def _commit(self) -> None:
        """COMMIT the open transaction and record the audit head it produced (caller holds the writer lock)."""
        try:
            self.con.execute("COMMIT")
        finally:
            # Whether a failed COMMIT reached the catalog is unknown here, so its files are
            # kept: an unreferenced file is never read, a deleted referenced one would be lost.
            self._written_files.clear()
        new = self._new_head
        if new is not None:
            self._head_file.write_text(f"ok {new[0]} {new[1]}\n")
            self._new_head = None

    # --- reads -----------------------------------------------------------------------

    def read_catalog(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """Rows of a read of DuckLake's own catalog tables; ``{catalog}`` in ``sql`` names their schema.

        A writer's local catalog is read by its pin's helper process (see
        :class:`~risklib.adapters.warehouse._connect.CatalogPin`: no whole-second busy
        waits); any other through this connection's attached metadata database.

        Raises
        ------
        WarehouseError
            The read failed.
        """
        if self._pin is not None and self._pin.active:
            return self._pin.query(sql.format(catalog="main"), params)
        try:
            return self.con.execute(sql.format(catalog=f"__ducklake_metadata_{_connect.CATALOG}"), list(params)).fetchall()
        except duckdb.Error as exc:
            raise WarehouseError(f"catalog read failed: {exc}") from exc

    def query(self, sql: str, params: Sequence | None = None, *, exact_decimals: bool = False) -> pl.DataFrame:
        """Run ``sql`` (with ``?`` parameters) and return a Polars frame.

        Timestamps come back as UTC; DECIMAL columns as Float64 unless ``exact_decimals``.
        """
        try:
            rel = self.con.sql(sql, params=list(params) if params is not None else None)
        except duckdb.Error as exc:
            raise WarehouseError(f"query failed: {exc}") from exc
        if rel is None:  # a statement without a result
            return pl.DataFrame()
        return _to_polars(rel, exact_decimals=exact_decimals)

    def latest_risk_state(self, *, since: datetime | None = None) -> pl.DataFrame:
        """The newest ``risk_state`` row per account (core columns, ``cycle_id``, ``state_json``).

        Parameters
        ----------
        since
            Only consider rows at or after this time (UTC). Frequent callers (the gate,
            the API) may pass e.g. two cycle intervals ago so the scan stays small; an
            account with no row since then is absent and must be treated as unknown
            (fail closed). Default None: the whole table, exact.
        """
        where, params = ("WHERE ts >= ? ", [since]) if since is not None else ("", [])
        return self.query(
            f"SELECT * FROM risk_state {where}"  # fixed text; the time is a parameter
            "QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY ts DESC, cycle_id DESC) = 1 "
            "ORDER BY account_id",
            params,
        )

    def last_heartbeat(self) -> datetime | None:
        """``finished_at`` of the newest completed cycle (UTC), or None if none completed yet."""
        row = self.con.execute("SELECT max(finished_at) FROM cycle_runs WHERE status = 'completed'").fetchone()
        value = row[0] if row else None
        return value.astimezone(timezone.utc) if value is not None else None

    def verify(self, *, batch_rows: int = 100_000) -> VerifyResult:
        """Check the audit hash chain; the result names the first broken entry."""
        checker = _audit.ChainVerifier()
        last = -1
        while True:
            batch = self.query(
                "SELECT seq, \"at\", actor, action, subject, CAST(detail AS VARCHAR) AS detail, prev_hash, hash "
                "FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
                [last, batch_rows],
            )
            if batch.height == 0 or not checker.feed(batch):
                break
            last = int(batch["seq"][-1])
        return checker.result()

