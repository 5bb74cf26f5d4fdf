"""Open DuckDB connections with the DuckLake catalog attached.

The warehouse is a DuckLake: a catalog database (SQLite by default, one file) plus
Parquet data files. Any number of processes may attach it at once; readers never
take a lock and each query sees the newest committed snapshot, so a reader never
sees half a cycle and never blocks the writer. Writers (the pipeline, the API
recording an acknowledgement) serialise on a small lock file so the audit chain
has one head.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from risklib.adapters.warehouse._config import WarehouseConfig, resolve_location
from risklib.errors import WarehouseError

#: Name the catalog is attached under; ``USE``'d so plain table names work.
CATALOG = "wh"
_EXT_DIR = Path(duckdb.__file__).resolve().parent.parent / "duckdb_ext" / "extensions" / f"v{duckdb.__version__}"


def extension_path(name: str) -> Path:
    """Path of a DuckDB extension file shipped by the ``duckdb-ext-*`` packages (never downloaded).

    Parameters
    ----------
    name
        ``"ducklake"`` or ``"sqlite_scanner"``.
    """
    hits = sorted(_EXT_DIR.glob(f"*/{name}.duckdb_extension"))
    if not hits:
        raise WarehouseError(f"extension={name!r}: no {name}.duckdb_extension under {_EXT_DIR}; install duckdb-ext-{name.split('_')[0]}")
    return hits[0]


@dataclass(frozen=True)
class Layout:
    """Where a warehouse's pieces live.

    Attributes
    ----------
    catalog_uri
        DuckLake catalog, e.g. ``ducklake:sqlite:/x/catalog.sqlite`` or ``ducklake:postgres:dbname=risk``.
    data_path
        Folder or object-store prefix of the Parquet files.
    lock_file
        File writers serialise on.
    local_root
        The folder holding everything, or None for a remote catalog.
    """

    catalog_uri: str
    data_path: str
    lock_file: Path
    local_root: Path | None

    @property
    def sqlite_file(self) -> Path | None:
        return self.local_root / "catalog.sqlite" if self.local_root is not None else None


def layout_for(location: str | Path | None, config: WarehouseConfig) -> Layout:
    """Resolve ``location`` (folder or ``ducklake:`` URI) into a :class:`Layout`."""
    where = resolve_location(location, config)
    if where.startswith("ducklake:"):
        if not config.data_path:
            raise WarehouseError(f"location={where!r}: a catalog URI needs warehouse.data_path (e.g. 's3://bucket/risk/')")
        digest = hashlib.sha256(where.encode()).hexdigest()[:16]
        lock = Path(tempfile.gettempdir()) / f"risk-warehouse-{digest}.lock"
        return Layout(where, config.data_path, lock, None)
    root = Path(where).expanduser().resolve()
    return Layout(f"ducklake:sqlite:{root / 'catalog.sqlite'}", str(root / "files") + "/", root / "writer.lock", root)


def _init_sqlite_catalog(path: Path) -> None:
    """Create an empty SQLite catalog in WAL mode, so readers and the writer never block each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")  # persistent: every later connection uses WAL
    finally:
        con.close()


# Run by the helper process of CatalogPin: open the catalog, read once (WAL mode keeps the
# connection's shared lock after each read ends, without holding a snapshot), then answer
# read queries, one JSON line ``[id, sql, params]`` in, one ``[id, rows, error]`` out, until
# the parent closes stdin (or exits). Python's sqlite3 leaves every read in autocommit.
_PIN_SCRIPT = (
    "import json, sqlite3, sys\n"
    "con = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]))\n"
    "con.execute('PRAGMA query_only=ON')\n"
    "con.execute('SELECT count(*) FROM sqlite_master').fetchall()\n"
    "print('pinned', flush=True)\n"
    "for line in sys.stdin:\n"
    "    rid, sql, params = json.loads(line)\n"
    "    try:\n"
    "        out = json.dumps([rid, con.execute(sql, params).fetchall(), None])\n"
    "    except Exception as exc:\n"
    "        out = json.dumps([rid, None, f'{type(exc).__name__}: {exc}'])\n"
    "    print(out, flush=True)\n"
)


class CatalogPin:
    """Keep a local SQLite catalog open for as long as a writer uses it, and read it from there.

    DuckDB's sqlite extension opens a new SQLite connection for every transaction and
    closes it at the end. When the closing connection is the last one, SQLite checkpoints
    the WAL into the database and deletes it: 4 extra fsyncs per cycle (measured 5 -> 2
    fsyncs and ~17 ms less per COMMIT), and the next connection (the writer's or a
    reader's) rebuilds the WAL index first. One idle connection kept open elsewhere stops
    that; WAL checkpoints still happen as usual (automatically every ~1000 pages).

    The same connection answers :meth:`query`, for reads the cycle makes every time (the
    snapshot log). The extension's SQLite is built without ``usleep``: whenever it meets
    a lock another connection of this process is taking or releasing (each transaction's
    connection tries for an exclusive lock as it closes), its busy handler sleeps a whole
    second, where this helper's SQLite waits a millisecond or two. Measured beside a
    writer committing ~50 times a second, polling the snapshot log every 5 ms for 30 s:
    through the extension 4 reads took ~1 s; through the helper none took over 25 ms.

    The connection lives in a small helper process, not in this one: two SQLite libraries
    in one process (Python's and the extension's) would share POSIX locks on the file and
    could corrupt it. The helper exits when :meth:`close` is called or this process ends.
    """

    #: How long the helper's SQLite waits on a busy lock, and :meth:`query` for an answer.
    busy_timeout_s = 0.5
    answer_timeout_s = 1.0

    def __init__(self, sqlite_file: Path) -> None:
        self._lock = threading.Lock()
        self._next_id = 0
        self._buffer = b""  # what the helper wrote beyond the last line read
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _PIN_SCRIPT, str(sqlite_file), str(self.busy_timeout_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )
        try:
            pinned = self._read_line(self._proc, 60.0) == b"pinned"
        except WarehouseError:
            pinned = False
        if not pinned:  # it failed: carry on unpinned
            self.close()

    @property
    def active(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def query(self, sql: str, params: list | tuple = ()) -> list[tuple]:
        """Rows of a read-only ``sql`` (``?`` parameters) run against the catalog by the helper.

        Raises
        ------
        WarehouseError
            The helper is gone, answered with an error, or did not answer within
            :attr:`answer_timeout_s` (its answer is discarded when it comes).
        """
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None or proc.stdin is None or proc.stdout is None:
                raise WarehouseError("catalog pin: its helper process is not running")
            self._next_id += 1
            rid = self._next_id
            try:
                proc.stdin.write(json.dumps([rid, sql, list(params)]).encode() + b"\n")
                while True:  # answers to earlier queries that gave up come first
                    got, rows, error = json.loads(self._read_line(proc, self.answer_timeout_s))
                    if got == rid:
                        break
            except (OSError, ValueError) as exc:
                raise WarehouseError(f"catalog pin: {type(exc).__name__}: {exc}") from exc
        if error is not None:
            raise WarehouseError(f"catalog pin: {error}")
        return [tuple(r) for r in rows]

    def _read_line(self, proc: subprocess.Popen, timeout_s: float) -> bytes:
        """The helper's next line; raises WarehouseError if none comes within ``timeout_s``."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise WarehouseError(f"catalog pin: no answer within {timeout_s} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WarehouseError("catalog pin: its helper process exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.strip()

    def close(self) -> None:
        """Let the helper exit (idempotent)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - stuck helper
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def attach(layout: Layout, config: WarehouseConfig, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection with the catalog attached as ``wh`` and ``USE``'d."""
    if layout.sqlite_file is not None and not layout.sqlite_file.exists():
        if read_only:
            raise WarehouseError(
                f"location={str(layout.local_root)!r}: no warehouse there (catalog.sqlite missing); run `riskctl warehouse migrate`"
            )
        _init_sqlite_catalog(layout.sqlite_file)
    con = duckdb.connect(config={"allow_unsigned_extensions": False, "autoinstall_known_extensions": False})
    try:
        for ext in ("sqlite_scanner", "ducklake"):
            con.execute(f"LOAD '{extension_path(ext)}'")  # path from our own package folder, not user input
        con.execute("SET TimeZone = 'UTC'")
        if config.threads:
            con.execute("SET threads = ?", [config.threads])
        # A DuckLake commit that meets a busy catalog retries; the default 100 ms first
        # wait would be charged to the pipeline, so retry sooner and more often.
        con.execute("SET ducklake_retry_wait_ms = 5")
        con.execute("SET ducklake_max_retry_count = 30")
        options = [f"DATA_PATH '{_quote(layout.data_path)}'"]
        if layout.local_root is not None:
            # A local warehouse folder is self-contained (file paths in the catalog are
            # relative to files/), so it may be moved or copied: trust where it is now.
            options.append("OVERRIDE_DATA_PATH TRUE")
        if read_only:
            options.append("READ_ONLY")
        else:
            options.append(f"DATA_INLINING_ROW_LIMIT {int(config.data_inlining_row_limit)}")
        # ATTACH takes no parameters; both values come from config/paths and are quoted.
        con.execute(f"ATTACH '{_quote(layout.catalog_uri)}' AS {CATALOG} ({', '.join(options)})")
        con.execute(f"USE {CATALOG}")
    except duckdb.Error as exc:
        con.close()
        raise WarehouseError(f"location={layout.catalog_uri!r}: cannot attach: {exc}") from exc
    return con


def _quote(text: str) -> str:
    return text.replace("'", "''")


@contextlib.contextmanager
def writer_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold the warehouse's writer lock (an ``flock``) for the duration of the block.

    Raises
    ------
    WarehouseError
        Another writer held it for longer than ``timeout_s`` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseError(f"lock={str(path)!r}: another writer held it for more than {timeout_s} s") from None
                time.sleep(0.001)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
