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
import sqlite3
import subprocess
import sys
import tempfile
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
# connection's shared lock after the read ends, without holding a snapshot), then wait
# for the parent to close stdin (or exit).
_PIN_SCRIPT = (
    "import sqlite3, sys\n"
    "con = sqlite3.connect(sys.argv[1])\n"
    "con.execute('SELECT count(*) FROM sqlite_master').fetchall()\n"
    "print('pinned', flush=True)\n"
    "sys.stdin.read()\n"
)


class CatalogPin:
    """Keep a local SQLite catalog open for as long as a writer uses it.

    DuckDB's sqlite extension opens a new SQLite connection for every transaction and
    closes it at the end. When the closing connection is the last one, SQLite checkpoints
    the WAL into the database and deletes it: 4 extra fsyncs per cycle (measured 5 -> 2
    fsyncs and ~17 ms less per COMMIT), and the next connection (the writer's or a
    reader's) rebuilds the WAL index first. One idle connection kept open elsewhere stops
    that; WAL checkpoints still happen as usual (automatically every ~1000 pages).

    The connection lives in a small helper process, not in this one: two SQLite libraries
    in one process (Python's and the extension's) would share POSIX locks on the file and
    could corrupt it. The helper exits when :meth:`close` is called or this process ends.
    """

    def __init__(self, sqlite_file: Path) -> None:
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _PIN_SCRIPT, str(sqlite_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "pinned":  # it failed: carry on unpinned
            self.close()

    @property
    def active(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Let the helper exit (idempotent)."""
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
