"""DuckDB/DuckLake audit warehouse: schema migrations, cycle writes, hash-chained audit, retention.

Public names are re-exported from :mod:`risklib.warehouse`.
"""

from risklib.adapters.warehouse._audit import VerifyResult
from risklib.adapters.warehouse._changes import ChangeWatch
from risklib.adapters.warehouse._journal import CycleJournal
from risklib.adapters.warehouse._config import WarehouseConfig, load_config
from risklib.adapters.warehouse._warehouse import APPEND_TABLES, CYCLE_TABLES, CycleRecords, Warehouse


def connect(location=None, *, read_only: bool = True, config: WarehouseConfig | None = None):
    """An analyst's ready DuckDB connection: catalog attached as ``wh`` and ``USE``'d, read-only by default.

    Examples
    --------
    >>> from risklib.warehouse import connect
    >>> con = connect()
    >>> con.sql("SELECT * FROM incident_timeline LIMIT 5").show()  # doctest: +SKIP
    """
    from risklib.adapters.warehouse import _connect

    cfg = config or load_config()
    return _connect.attach(_connect.layout_for(location, cfg), cfg, read_only=read_only)


__all__ = [
    "APPEND_TABLES",
    "CYCLE_TABLES",
    "ChangeWatch",
    "CycleJournal",
    "CycleRecords",
    "VerifyResult",
    "Warehouse",
    "WarehouseConfig",
    "connect",
    "load_config",
]

from risklib.adapters.warehouse._retention import (  # noqa: E402
    TIERS,
    RetentionReport,
    RetentionStep,
    catalog_bytes,
    compact_lake,
    cutoffs,
    run_retention,
    table_stats,
)

__all__ += ["TIERS", "RetentionReport", "RetentionStep", "catalog_bytes", "compact_lake", "cutoffs", "run_retention", "table_stats"]
