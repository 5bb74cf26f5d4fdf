"""The audit warehouse's public face: ``Warehouse``, ``CycleRecords``, ``connect``.

Analysts::

    from risklib.warehouse import connect
    con = connect()                      # read-only, never blocks the pipeline
    con.sql("SELECT * FROM daily_risk_by_account").df()  # or polars.DataFrame(con.sql(...))
"""

from risklib.adapters.warehouse import *  # noqa: F403 - the adapter's public names, listed once there
from risklib.adapters.warehouse import __all__  # noqa: F401
