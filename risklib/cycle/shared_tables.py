"""Small tables other processes write and every cycle reads, re-read only when they change.

The API records overrides, threshold changes and operator requests; the pipeline
reads them each cycle. A DuckLake query costs milliseconds even on an empty
table; the snapshot log (:class:`risklib.adapters.warehouse.ChangeWatch`) is read
once per cycle, and a table's rows are kept between cycles until it is written.
"""

from __future__ import annotations

from typing import Any

import polars as pl


class SharedTables:
    """Whole small tables, cached per query until the warehouse shows a write to them.

    Each caller filters the rows by its own ``now``, so a row that becomes due
    later is seen without a new query.
    """

    def __init__(self, warehouse: Any) -> None:
        from risklib.adapters.warehouse import ChangeWatch

        self.warehouse = warehouse
        self.watch = ChangeWatch.for_warehouse(warehouse)
        self._rows: dict[str, pl.DataFrame] = {}

    def read(self, table: str, sql: str) -> pl.DataFrame:
        """The result of ``sql`` (a query over ``table`` alone), re-run only when ``table`` changed."""
        changed = self.watch.changed(table, [table])
        if not changed and table in self._rows:
            return self._rows[table]
        try:
            rows = self.warehouse.query(sql)
        except Exception:
            self.watch.forget(table)
            raise
        self._rows[table] = rows
        return rows
