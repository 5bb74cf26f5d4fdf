"""The audit warehouse's public face: ``Warehouse``, ``CycleRecords``, ``connect``.

Analysts::

    from risklib.warehouse import connect
    con = connect()                      # read-only, never blocks the pipeline
    con.sql("SELECT * FROM daily_risk_by_account").df()  # or polars.DataFrame(con.sql(...))
"""

from risklib.adapters.warehouse import (
    APPEND_TABLES,
    TIERS,
    RetentionReport,
    RetentionStep,
    catalog_bytes,
    compact_lake,
    cutoffs,
    run_retention,
    table_stats,
    CYCLE_TABLES,
    CycleRecords,
    VerifyResult,
    Warehouse,
    WarehouseConfig,
    connect,
    load_config,
)

__all__ = [
    "APPEND_TABLES",
    "TIERS",
    "RetentionReport",
    "RetentionStep",
    "catalog_bytes",
    "compact_lake",
    "cutoffs",
    "run_retention",
    "table_stats",
    "CYCLE_TABLES",
    "CycleRecords",
    "VerifyResult",
    "Warehouse",
    "WarehouseConfig",
    "connect",
    "load_config",
]
