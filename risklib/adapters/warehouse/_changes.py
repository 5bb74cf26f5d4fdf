"""Which warehouse tables changed since a reader last looked, from DuckLake's own snapshot log.

The pipeline re-reads a few small tables every cycle (threshold changes, overrides,
operator requests, the escalation state) that other processes write. A DuckLake
query costs milliseconds even on an empty table, so the cycle reads the snapshot
log once (:meth:`ChangeWatch.refresh`) and each reader asks
:meth:`ChangeWatch.changed` before re-querying its tables.

The snapshot log is part of the DuckLake catalog format (``ducklake_snapshot_changes``
lists, per snapshot, ``inserted_into_table:<id>``, ``deleted_from_table:<id>``,
``compacted_table:<id>``, ``created_table:...`` and so on). It is read with
:meth:`Warehouse.read_catalog`: by the catalog pin's helper process for a local
catalog (the sqlite extension's busy waits last a whole second), else through the
warehouse's own DuckDB connection; never by opening the SQLite file in this
process: two SQLite libraries in one process would release each other's POSIX
locks on it. A change the watch cannot attribute to a table id (a schema change,
an unknown entry) counts as a change to every table; a failed read counts as a
change. Both err towards re-reading, never towards missing a write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

_TABLE_CHANGE = re.compile(r"^(?:inserted_into_table|deleted_from_table|compacted_table|inlined_insert|inlined_delete):(\d+)$")


class ChangeWatch:
    """Per-reader "has any of these tables changed?" over the DuckLake snapshot log.

    Parameters
    ----------
    fetch
        Runs a SQL statement with parameters against the catalog database and
        returns its rows; ``{catalog}`` in the statement names the schema of
        DuckLake's tables (as :meth:`Warehouse.read_catalog` does). None answers
        every question "changed".

    Notes
    -----
    A reader learns of writes up to the last :meth:`refresh` (the pipeline calls it
    once per cycle, before its readers). Call :meth:`changed` before the query it
    guards: a write that lands between the two is reported again after the next
    refresh (one extra query), never missed.
    """

    def __init__(self, fetch: Callable[[str, list], list[tuple]] | None) -> None:
        self._fetch = fetch
        self._current: int | None = None
        self._log: dict[int, str] = {}  # snapshot id -> changes_made, since the oldest reader's last look
        self._ids: dict[str, int] | None = None
        self._seen: dict[str, int] = {}

    @classmethod
    def for_warehouse(cls, warehouse: Any) -> ChangeWatch:
        """A watch reading ``warehouse``'s catalog (a ``Warehouse``); none for other objects."""
        return cls(getattr(warehouse, "read_catalog", None))

    def refresh(self) -> None:
        """Read the snapshots committed since the last refresh (one catalog query)."""
        if self._fetch is None:
            return
        try:
            rows = self._fetch(
                "SELECT snapshot_id, changes_made FROM {catalog}.ducklake_snapshot_changes WHERE snapshot_id > ? "
                "ORDER BY snapshot_id",
                [self._current if self._current is not None else -1],
            )
            if self._ids is None or any(_TABLE_CHANGE.match(e) is None for _, made in rows for e in _entries(made)):
                self._ids = {
                    str(name): int(i)
                    for i, name in self._fetch(
                        "SELECT table_id, table_name FROM {catalog}.ducklake_table WHERE end_snapshot IS NULL", []
                    )
                }
        except Exception:  # noqa: BLE001 - a catalog we cannot read is treated as changed everywhere
            self._seen.clear()
            return
        for sid, made in rows:
            self._log[int(sid)] = made or ""
        if rows:
            self._current = int(rows[-1][0])
        elif self._current is None:
            self._current = 0
        oldest = min(self._seen.values(), default=self._current)
        for sid in [s for s in self._log if s <= oldest]:
            del self._log[sid]

    def changed(self, reader: str, tables: Iterable[str]) -> bool:
        """True when any of ``tables`` was written since ``reader`` last asked (always True the first time)."""
        if self._fetch is None:
            return True
        if self._current is None:
            self.refresh()
            if self._current is None:
                return True
        last = self._seen.get(reader)
        self._seen[reader] = self._current
        if last is None:
            return True
        if last >= self._current:
            return False
        ids = {self._ids.get(t) for t in tables} if self._ids is not None else set()
        for sid, made in self._log.items():
            if not last < sid <= self._current:
                continue
            for entry in _entries(made):
                m = _TABLE_CHANGE.match(entry)
                if m is None or int(m.group(1)) in ids:
                    return True  # a write to one of the tables, or a change this watch cannot place
        return False

    def forget(self, reader: str) -> None:
        """Make the next :meth:`changed` for ``reader`` answer True (e.g. after its query failed)."""
        self._seen.pop(reader, None)


def _entries(made: str | None) -> list[str]:
    return [e.strip() for e in (made or "").split(",") if e.strip()]
