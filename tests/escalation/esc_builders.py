"""Builders for escalation tests: alert frames, state frames, a fixed config."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl

from risklib.core import frames
from risklib.core.escalation import ACKS, OPEN_INCIDENTS

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def alerts(rows, *, now: datetime = T0, rule: str = "drawdown", episode: str = "e1") -> pl.DataFrame:
    """Alerts frame from ``(account_id, level)`` pairs (or ``(account_id, level, rule)``)."""
    out = []
    for r in rows:
        acct, level = r[0], r[1]
        rl = r[2] if len(r) > 2 else rule
        out.append(
            dict(incident_key=f"{acct}:{rl}:{episode}", account_id=acct, rule=rl, level=level, metric_value=0.12,
                 threshold=0.10, trading_mode="REDUCE_ONLY", message=f"{rl} breach", ts=now)
        )
    return pl.DataFrame(out, schema=frames.ALERTS)


def no_alerts() -> pl.DataFrame:
    return frames.empty(frames.ALERTS)


def no_open() -> pl.DataFrame:
    return frames.empty(OPEN_INCIDENTS)


def no_acks() -> pl.DataFrame:
    return frames.empty(ACKS)


def acks(keys, at: datetime) -> pl.DataFrame:
    return pl.DataFrame({"incident_key": list(keys), "at": [at] * len(keys)}, schema=ACKS)


def provider_rows(plan) -> pl.DataFrame:
    return plan.notifications.filter(pl.col("recipient") != "dashboard")


class MemoryWarehouse:
    """In-memory stand-in with the warehouse's query/append API, for unit tests of pure planning loops.

    It runs the project's own migration DDL in an in-memory DuckDB, so the SQL the
    adapters issue is exercised against the real table definitions.
    """

    def __init__(self) -> None:
        import duckdb

        from risklib.adapters.warehouse._config import MIGRATIONS_DIR

        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        sql = (MIGRATIONS_DIR / "0002_product_tables.sql").read_text()
        self.con.execute(sql)

    def query(self, sql, params=None):
        from risklib.adapters.warehouse._warehouse import _to_polars

        return _to_polars(self.con.sql(sql, params=list(params) if params is not None else None), exact_decimals=False)

    def append(self, table, frame, *, actor, action, subject=None):
        cols = [r[0] for r in self.con.execute(f'DESCRIBE "{table}"').fetchall()]
        frame = frame.with_columns([pl.lit(None).alias(c) for c in cols if c not in frame.columns]).select(cols)
        from risklib.adapters.warehouse._warehouse import _Stream

        self.con.register("_in", _Stream(frame))
        try:
            self.con.execute(f'INSERT INTO "{table}" SELECT * FROM _in')
        finally:
            self.con.unregister("_in")
