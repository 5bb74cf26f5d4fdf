"""Which warehouse tables changed since a reader last looked, from DuckLake's own snapshot log.

The pipeline re-reads a few small tables every cycle (threshold changes, overrides,
operator requests, the escalation state) that other processes write. A DuckLake
query costs milliseconds even on an empty table; looking up the snapshot log in
the SQLite catalog costs microseconds. So each reader asks :meth:`ChangeWatch.changed`
first and re-queries only when one of its tables was written.

The snapshot log is part of the DuckLake catalog format (``ducklake_snapshot_changes``
lists, per snapshot, ``inserted_into_table:<id>``, ``deleted_from_table:<id>``,
``compacted_table:<id>``, ``created_table:...`` and so on). A change the watch cannot
attribute to a table id (a schema change, an unknown entry) counts as a change to
every table; a catalog that is not a local SQLite file (PostgreSQL for a shared
deployment) always reports a change. Both err towards re-reading, never towards
missing a write.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

_TABLE_CHANGE = re.compile(r"^(?:inserted_into_table|deleted_from_table|compacted_table|inlined_insert|inlined_delete):(\d+)$")


class ChangeWatch:
    """Per-reader "has any of these tables changed?" over the DuckLake snapshot log.

    Parameters
    ----------
    sqlite_file
        The catalog file (``Layout.sqlite_file``), or None when the catalog is
        elsewhere: then every question is answered "changed".

    Notes
    -----
    Call :meth:`changed` *before* the query it guards: a write that lands between
    the two is then reported again next time (one extra query), never missed.
    """

    def __init__(self, sqlite_file: Path | None) -> None:
        self._file = sqlite_file
        self._seen: dict[str, int] = {}

    def _connect(self) -> sqlite3.Connection | None:
        # A new connection per question (~0.1 ms): a long-lived one was seen to keep
        # answering from its first view of the catalog after DuckDB's writes.
        if self._file is None:
            return None
        return sqlite3.connect(f"file:{self._file}?mode=ro", uri=True)

    def changed(self, reader: str, tables: Iterable[str]) -> bool:
        """True when any of ``tables`` was written since ``reader`` last asked (always True the first time)."""
        con = self._connect()
        if con is None:
            return True
        try:
            last = self._seen.get(reader)
            current = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshot").fetchall()[0][0]
            if current is None:
                return True
            self._seen[reader] = int(current)
            if last is None:
                return True
            if current == last:
                return False
            rows = con.execute(
                "SELECT changes_made FROM ducklake_snapshot_changes WHERE snapshot_id > ? AND snapshot_id <= ?",
                [last, current],
            ).fetchall()
            names = set(tables)
            ids = {
                int(i)
                for i, name in con.execute(
                    "SELECT table_id, table_name FROM ducklake_table WHERE end_snapshot IS NULL"
                ).fetchall()
                if name in names
            }
        except sqlite3.Error:
            self.forget(reader)
            return True  # a catalog we cannot read is treated as changed
        finally:
            con.close()
        for (made,) in rows:
            for entry in (made or "").split(","):
                m = _TABLE_CHANGE.match(entry.strip())
                if m is None:
                    if entry.strip():
                        return True  # schema change or an entry kind this watch does not know
                    continue
                if int(m.group(1)) in ids:
                    return True
        return False

    def forget(self, reader: str) -> None:
        """Make the next :meth:`changed` for ``reader`` answer True (e.g. after its query failed)."""
        self._seen.pop(reader, None)

    def close(self) -> None:
        """Nothing is held between questions; kept so owners can close what they open."""
