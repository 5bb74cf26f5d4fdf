"""The audit warehouse's public face: ``Warehouse``, ``CycleRecords``, ``connect``.

Analysts::

    from risklib.warehouse import connect
    con = connect()                      # read-only, never blocks the pipeline
    con.sql("SELECT * FROM daily_risk_by_account").pl()
"""

from risklib.adapters.warehouse import (
    APPEND_TABLES,
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
    "CYCLE_TABLES",
    "CycleRecords",
    "VerifyResult",
    "Warehouse",
    "WarehouseConfig",
    "connect",
    "load_config",
]
